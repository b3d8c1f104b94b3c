/**
 * A full disk and a full inode table (issue 9 item 2): the root lives on a
 * small tmpfs (`size=20m`, or `nr_inodes=500`) mounted on a temp dir; a
 * layer another process holds is mounted; an apply runs out of space. Then
 * every command must still work — `layers`, `check` (which names the failed
 * layer), `rm` and `check --repair` (how space is freed) — and the held
 * mount must stay mounted throughout, its data readable through it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { MNT, systemLibc } from "../ffi/libc.ts";
import { tarDirectory } from "../lib/archive/tar_dir.ts";
import { mountpointsUnder } from "../lib/mounts.ts";
import { type Ran, runCommand } from "./support/run.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

function strata(root: string, ...args: string[]): Promise<Ran> {
  return runCommand(Deno.execPath(), ["run", "-A", "--no-prompt", CLI, "--root", root, ...args]);
}

/** A tar of a tree made by `fill` in a temp dir; the tar lives outside the small tmpfs. */
async function tarOf(tmp: string, name: string, fill: (dir: string) => Promise<void>) {
  const src = join(tmp, name);
  await Deno.mkdir(src);
  await fill(src);
  const file = join(tmp, `${name}.tar`);
  await tarDirectory(src).pipeTo((await Deno.create(file)).writable);
  return file;
}

/** `strata layers` table rows as [id, state]. */
function table(out: string): string[][] {
  return out.trim().split("\n").slice(1).map((l) => {
    const f = l.trim().split(/\s+/);
    return [f[0], f[f.length - 1]];
  });
}

/** Use up what is left of `limit` on the filesystem of `path` (so later commands find it full). */
function fillUp(path: string, limit: "bytes" | "inodes"): void {
  const enospc = (e: unknown) => (e as { code?: string }).code === "ENOSPC";
  if (limit === "inodes") {
    for (let i = 0;; i++) {
      try {
        Deno.writeFileSync(`${path}.${i}`, new Uint8Array());
      } catch (e) {
        if (enospc(e)) return;
        throw e;
      }
    }
  }
  const chunk = new Uint8Array(64 * 1024).fill(0x5a);
  const f = Deno.openSync(path, { write: true, create: true, append: true });
  try {
    for (;;) f.writeSync(chunk);
  } catch (e) {
    if (!enospc(e)) throw e;
  } finally {
    f.close();
  }
}

async function fullDiskScenario(
  t: Deno.TestContext,
  tmpfsData: string,
  limit: "bytes" | "inodes",
  bigTree: (dir: string) => Promise<void>,
): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "strata-diskfull-src-" });
  const dir = await Deno.makeTempDir({ prefix: "strata-diskfull-" });
  const libc = systemLibc();
  libc.mount("tmpfs", dir, "tmpfs", 0n, tmpfsData);
  const root = join(dir, "root");
  const held = join(root, "mnt", "B");
  const stillHeld = async (when: string) => {
    assert.ok(
      mountpointsUnder(dir).includes(Deno.realPathSync(held)),
      `${when}: the union of B (held by another process) was unmounted`,
    );
    assert.equal(await Deno.readTextFile(join(held, "f")), "b\n", `${when}: B's data not visible`);
  };
  try {
    const small = await tarOf(tmp, "small", (d) => Deno.writeTextFile(join(d, "f"), "b\n"));
    const big = await tarOf(tmp, "big", bigTree);
    for (const args of [["create", "A"], ["create", "B", "--parent", "A"]]) {
      const r = await strata(root, ...args);
      assert.equal(r.code, 0, r.err);
    }
    assert.equal((await strata(root, "apply", "B", small)).code, 0);
    assert.equal((await strata(root, "mount", "B")).code, 0);
    assert.equal((await strata(root, "create", "C", "--parent", "B")).code, 0);

    await t.step("apply runs out of space and says so, naming the layer", async () => {
      const r = await strata(root, "apply", "C", big);
      assert.equal(r.code, 1, `apply should fail on a full disk: ${r.out}`);
      assert.match(r.err, /No space left on device|ENOSPC/, r.err);
      assert.match(r.err, /\bC\b/, r.err);
      await stillHeld("after the failed apply");
    });
    fillUp(join(dir, "filler"), limit);

    await t.step("on the full disk, layers and check work and name the failed layer", async () => {
      const layers = await strata(root, "layers");
      assert.equal(layers.code, 0, layers.err);
      assert.deepEqual(table(layers.out), [["A", "ok"], ["B", "ok"], ["C", "incomplete"]]);
      await stillHeld("after layers");
      const check = await strata(root, "check");
      assert.equal(check.code, 1, `check should report the failed layer: ${check.out}`);
      assert.match(check.out, /incomplete C\b/, check.out);
      await stillHeld("after check");
    });

    await t.step("rm and check --repair work on the full disk", async () => {
      const rm = await strata(root, "rm", "C");
      assert.equal(rm.code, 0, rm.err);
      const repair = await strata(root, "check", "--repair");
      assert.equal(repair.code, 0, repair.out + repair.err);
      const check = await strata(root, "check");
      assert.equal(check.code, 0, check.out + check.err);
      await stillHeld("after rm and repair");
      const layers = await strata(root, "layers");
      assert.deepEqual(table(layers.out), [["A", "ok"], ["B", "ok"]]);
    });

    const umount = await strata(root, "umount", "B");
    assert.equal(umount.code, 0, umount.err);
    assert.deepEqual(mountpointsUnder(root).filter((m) => m.includes("/mnt/")), []);
  } finally {
    for (const mp of mountpointsUnder(dir)) {
      try {
        libc.umount2(mp, MNT.DETACH);
      } catch {
        // already gone with its parent
      }
    }
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(tmp, { recursive: true });
  }
}

Deno.test({
  name: "disk full (tmpfs size=20m): apply fails with ENOSPC, every command still works, held " +
    "mounts stay",
  fn: async (t) => {
    await fullDiskScenario(t, "size=20m,mode=0700", "bytes", async (d) => {
      await Deno.writeFile(join(d, "big"), new Uint8Array(24 * 1024 * 1024).fill(0x61));
    });
  },
});

Deno.test({
  name: "inodes exhausted (tmpfs nr_inodes=500): apply fails with ENOSPC, every command still " +
    "works",
  fn: async (t) => {
    await fullDiskScenario(t, "size=64m,nr_inodes=500,mode=0700", "inodes", async (d) => {
      for (let i = 0; i < 600; i++) await Deno.writeTextFile(join(d, `f${i}`), "");
    });
  },
});
