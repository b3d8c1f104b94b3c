/**
 * A full disk locks nobody out and tears down nothing (issue 9 item 2): on a
 * small tmpfs filled to ENOSPC (bytes, then inodes), `layers`, `rm` and
 * `check --repair` still work, Init needs no space (its probe results are
 * cached in strata.json, and an uncached probe that finds no space is
 * skipped with a warning saying ENOSPC), and an Init that fails never
 * unmounts the unions other drivers hold.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Libc, systemLibc } from "../ffi/libc.ts";
import { IncompatibleFsError } from "../lib/errors.ts";
import { OverlayDriver, type OverlayOptions } from "../lib/overlay/driver.ts";
import { MARKER_NAME, readMarker, writeMarker } from "../lib/root_marker.ts";
import { runCommand } from "./support/run.ts";
import { mountsBelow, unmountAllBelow } from "./support/overlay_harness.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

function strata(root: string, ...args: string[]) {
  return runCommand(Deno.execPath(), ["run", "--no-prompt", "-A", CLI, "--root", root, ...args]);
}

/** A tmpfs with `options` on a fresh temp dir; unmounted and deleted after `fn`. */
async function onTmpfs(options: string, fn: (base: string) => Promise<void>): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "strata-full-" });
  try {
    systemLibc().mount("tmpfs", base, "tmpfs", 0n, `mode=0700,${options}`);
    await fn(base);
  } finally {
    unmountAllBelow(base);
    await Deno.remove(base, { recursive: true });
  }
}

/** Write into `dir` until the filesystem says ENOSPC: 1 MiB files, 4 KiB ones, then empty ones. */
function fill(dir: string, inodes: boolean): void {
  let i = 0;
  const sizes = inodes ? [0] : [1 << 20, 4096];
  for (const size of sizes) {
    const data = new Uint8Array(size);
    try {
      for (;; i++) Deno.writeFileSync(join(dir, `fill-${i}`), data);
    } catch (e) {
      assert.equal((e as { code?: string }).code, "ENOSPC", String(e));
    }
  }
}

const quiet: OverlayOptions = { loadModule: () => Promise.resolve(), onWarning: () => {} };

for (const size of ["size=20m", "size=40m,nr_inodes=500"]) {
  Deno.test(`on a full tmpfs (${size}) layers, rm and check --repair work; mounts stay`, async () => {
    await onTmpfs(size, async (base) => {
      const root = join(base, "root");
      const warnings: string[] = [];
      const a = await OverlayDriver.init(root, { ...quiet, onWarning: (m) => warnings.push(m) });
      await a.create("base", "");
      await a.create("child", "base");
      await a.create("spare", "");
      const merged = await a.get("child");
      // An uncached probe finds no space at the next Init: it must not lock us out.
      const marker = readMarker(root)!;
      delete marker.probes;
      await writeMarker(root, marker);
      fill(merged, size.includes("nr_inodes"));

      const layers = await strata(root, "layers");
      assert.equal(layers.code, 0, layers.err);
      assert.match(layers.out, /spare/);
      const rm = await strata(root, "rm", "spare");
      assert.equal(rm.code, 0, rm.err);
      assert.match(rm.err, /ENOSPC/, "the skipped probe says why");
      const check = await strata(root, "check", "--repair");
      assert.equal(check.code, 0, check.err + check.out);
      assert.ok(a.isMounted(merged), "the union another driver holds is still mounted");
      assert.equal(await a.exists("spare"), false);
      await a.put("child");
      await a.cleanup();
    });
  });
}

Deno.test("an Init that fails unmounts nothing it did not mount", async () => {
  await onTmpfs("size=20m", async (base) => {
    const root = join(base, "root");
    const a = await OverlayDriver.init(root, quiet);
    await a.create("base", "");
    await a.create("child", "base");
    const merged = await a.get("child");
    try {
      // Force the test mount to run (no cache) and to fail.
      const marker = readMarker(root)!;
      delete marker.probes;
      await writeMarker(root, marker);
      const real = systemLibc();
      const failing = new Proxy(real, {
        get(target, prop) {
          if (prop === "mount") {
            return (src: string, dst: string, ...rest: [string, bigint, string]) => {
              if (dst.includes(".overlay-probe-")) throw new Error("test mount refused (test)");
              return target.mount(src, dst, ...rest);
            };
          }
          const v = Reflect.get(target, prop);
          return typeof v === "function" ? v.bind(target) : v;
        },
      }) as Libc;
      await assert.rejects(
        OverlayDriver.init(root, { ...quiet, libc: failing }),
        IncompatibleFsError,
      );
      assert.ok(a.isMounted(merged), "the failed Init left the other driver's union mounted");
      assert.ok(mountsBelow(root).includes(Deno.realPathSync(root)), "and the root's bind mount");
      assert.ok(Deno.statSync(join(root, MARKER_NAME)).isFile, "the existing root is kept");
    } finally {
      await a.put("child");
      await a.cleanup();
    }
  });
});
