/**
 * Real overlay drivers for tests: a temp dir (optionally a tmpfs mounted on
 * it, for speed), an `OverlayDriver` rooted below it, and a teardown that
 * runs `cleanup()`, checks in `/proc/self/mountinfo` that nothing is left
 * mounted below the temp dir, and then unmounts whatever is (so a failing
 * test never leaks a mount) and deletes the dir.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { MNT, systemLibc } from "../../ffi/libc.ts";
import { OverlayDriver, type OverlayOptions } from "../../lib/overlay/driver.ts";
import { mountpointsUnder, recursiveUnmount } from "../../lib/mounts.ts";

/** What a test gets besides the driver. */
export interface OverlayHarness {
  /** The temp dir holding everything. */
  base: string;
  /** The driver root, `<base>/overlay`. */
  root: string;
  /** The options the driver was opened with (to open another on the same root). */
  options: OverlayOptions;
  /** Warnings the driver reported. */
  warnings: string[];
}

/** Options of {@linkcode withOverlay}. */
export interface OverlayHarnessOptions {
  /** Mount a tmpfs on the temp dir first (fsync-free: fast layer creation). */
  tmpfs?: boolean;
  /** Driver options on top of the harness's. */
  driver?: OverlayOptions;
}

/** Mounts at or below `dir` (deepest first), read from `/proc/self/mountinfo`. */
export function mountsBelow(dir: string): string[] {
  return mountpointsUnder(dir);
}

/** Unmount everything at or below `dir` (lazily if busy); never throws. */
export function unmountAllBelow(dir: string): void {
  try {
    recursiveUnmount(systemLibc(), dir);
  } catch {
    for (const mp of mountpointsUnder(dir)) {
      try {
        systemLibc().umount2(mp, MNT.DETACH);
      } catch {
        // best effort: the assertion in withOverlay reports what stayed
      }
    }
  }
}

/**
 * Run `fn` with a fresh overlay driver. Afterwards, always: `cleanup()` (its
 * failure fails the test unless the test failed first), the check that no
 * mount is left below the temp dir except the harness's own tmpfs, the
 * unmounting of anything left, the deletion of the temp dir.
 *
 * @example
 * ```ts
 * import { withOverlay } from "./overlay_harness.ts";
 * await withOverlay(async (driver) => {
 *   await driver.create("base", "");
 * });
 * ```
 */
export async function withOverlay(
  fn: (driver: OverlayDriver, h: OverlayHarness) => Promise<void>,
  opts: OverlayHarnessOptions = {},
): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "strata-overlay-" });
  const warnings: string[] = [];
  const options: OverlayOptions = {
    loadModule: () => Promise.resolve(),
    unmountRetryDelayMs: 1,
    onWarning: (m) => warnings.push(m),
    ...opts.driver,
  };
  const h: OverlayHarness = { base, root: join(base, "overlay"), options, warnings };
  try {
    if (opts.tmpfs) systemLibc().mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
    const driver = await OverlayDriver.init(h.root, options);
    let failed = false;
    try {
      await fn(driver, h);
    } catch (e) {
      failed = true;
      throw e;
    } finally {
      await driver.cleanup().catch((e) => {
        if (!failed) throw e;
      });
      if (!failed) {
        const left = mountsBelow(base).filter((m) => !(opts.tmpfs && m === base));
        assert.deepEqual(left, [], "mounts left below the temp dir after cleanup()");
      }
    }
  } finally {
    unmountAllBelow(base);
    await Deno.remove(base, { recursive: true });
  }
}
