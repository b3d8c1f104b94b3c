/**
 * References taken for one operation (the naive diff path's get/put) are
 * recorded under `refs/` with a lock their process holds: a process killed
 * while it holds one leaves a record `check` reports as `dead-reference` and
 * `check --repair` releases, unmounting the union, instead of a mount with a
 * count nobody can tell from a held one.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { MNT, systemLibc } from "../ffi/libc.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { TransientRefs } from "../lib/transient_refs.ts";
import { runCli, runCliChild } from "./support/fault_run.ts";
import { mountsIn } from "./support/store_probe.ts";
import { mountpointsUnder } from "../lib/mounts.ts";

Deno.test("a transient reference is live while its process holds it, dead once dropped by a killed process", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-refs-" });
  try {
    const refs = new TransientRefs(dir);
    await refs.add("L");
    await refs.add("L");
    assert.deepEqual(refs.dead(), [], "records this process holds are live");
    assert.equal(await refs.drop("L"), true);
    assert.equal(await refs.drop("L"), true);
    assert.equal(await refs.drop("L"), false, "no record left to drop");
    assert.deepEqual([...Deno.readDirSync(join(dir, "refs"))], [], "refs/L removed when empty");

    // A record left by a process that is gone: its lock is free.
    await Deno.mkdir(join(dir, "refs", "M"), { recursive: true });
    await Deno.writeTextFile(join(dir, "refs", "M", "999999.1"), "");
    assert.deepEqual(refs.dead(), [{ id: "M", path: join(dir, "refs", "M", "999999.1") }]);
    await refs.removeRecord("M", join(dir, "refs", "M", "999999.1"));
    assert.deepEqual(refs.dead(), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a naive diff killed while it holds the union: check names the dead reference, repair unmounts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-refs-" });
  const root = join(dir, "root");
  try {
    const d = await OverlayDriver.init(root, {
      loadModule: () => Promise.resolve(),
      onWarning: () => {},
    });
    await d.create("A", "");
    await Deno.writeTextFile(join(d.diffDir("A"), "a"), "a\n");
    await d.create("B", "A");
    await Deno.writeTextFile(join(d.diffDir("B"), "b"), "b\n");
    await d.create("Z", "");
    const args = ["--root", root, "diff", "B", "--parent", "Z", "-o", join(dir, "out.tar")];

    // Just after the diff recorded its reference on B (the union is mounted
    // then, and stays so while the tar is read): kill the command there.
    const counted = await runCli(args, root, { kind: "count" });
    assert.equal(counted.code, 0, counted.err);
    assert.deepEqual(mountsIn(root), [], "a finished naive diff leaves nothing mounted");
    const mnt = join(Deno.realPathSync(root), "mnt", "B");
    const recorded = counted.calls.find((c) =>
      c.op === "Deno.open" && c.path.startsWith(join(Deno.realPathSync(root), "refs", "B") + "/")
    );
    assert.ok(recorded, "the naive diff records its reference on B");
    const killed = await runCliChild(args, root, recorded.n + 1);
    assert.equal(killed.code, null, `the child should have been killed: ${killed.err}`);
    assert.deepEqual(mountsIn(root), [mnt], "the killed diff left the union mounted");

    const check = JSON.parse((await runCli(["--root", root, "check", "--json"])).out);
    const dead = check.findings.filter((f: { kind: string }) => f.kind === "dead-reference");
    assert.equal(dead.length, 1, JSON.stringify(check.findings));
    assert.equal(dead[0].id, "B");

    const repair = await runCli(["--root", root, "check", "--repair"]);
    assert.equal(repair.code, 0, repair.out + repair.err);
    assert.deepEqual(mountsIn(root), [], "repair released the dead reference and unmounted B");
    const again = JSON.parse((await runCli(["--root", root, "check", "--json"])).out);
    assert.deepEqual(again.findings, []);
  } finally {
    for (const mp of mountpointsUnder(dir)) {
      try {
        systemLibc().umount2(mp, MNT.DETACH);
      } catch {
        // gone with its parent
      }
    }
    await Deno.remove(dir, { recursive: true });
  }
});
