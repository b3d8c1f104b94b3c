/**
 * An aufs driver on this aufs-less kernel: the recording libc double (fake
 * aufs mounts, real everything else) plus a fake `/proc` that lists aufs.
 * The root's bind mount is real; {@linkcode AufsHarness.close} undoes it.
 *
 * @module
 */

import { join } from "node:path";
import { MNT, systemLibc } from "../../ffi/libc.ts";
import { AufsDriver, type AufsOptions } from "../../lib/aufs/driver.ts";
import { isMountpoint } from "../../lib/mounts.ts";
import { type FakeProcOptions, makeFakeProc } from "./fake_proc.ts";
import { RecordingLibc, type RecordingLibcOptions } from "./recording_libc.ts";

/** One test's driver and everything around it. */
export interface AufsHarness {
  /** The temp dir holding everything (the driver root is `<base>/aufs` unless chosen). */
  base: string;
  /** The driver root. */
  root: string;
  /** The fake `/proc`. */
  proc: string;
  /** The recording double the driver uses. */
  libc: RecordingLibc;
  /** Warnings the driver reported. */
  warnings: string[];
  /** The driver options used (to open a second driver on the same root). */
  options: AufsOptions;
  /** Open another driver on the same root, with the same double. */
  reopen(extra?: AufsOptions): Promise<AufsDriver>;
  /** Undo the root's bind mount (whatever cleanup did) and delete `base`. */
  close(): Promise<void>;
}

/** Options of {@linkcode openHarness}. */
export interface HarnessOptions {
  /** Driver options on top of the harness's. */
  driver?: AufsOptions;
  /** Double options. */
  libc?: RecordingLibcOptions;
  /** Fake `/proc` contents. */
  proc?: FakeProcOptions;
  /** Root path below `base` (default `aufs`). */
  rootBelowBase?: string;
  /** Runs before Init (to prepare the root or script the double). */
  beforeInit?: (h: Omit<AufsHarness, "reopen" | "close">) => Promise<void> | void;
}

/** Make the harness without opening a driver. */
export async function openHarness(
  opts: HarnessOptions = {},
): Promise<AufsHarness> {
  const base = await Deno.makeTempDir({ prefix: "strata-aufs-" });
  const root = join(base, opts.rootBelowBase ?? "aufs");
  const proc = await makeFakeProc({ ...opts.proc, dir: join(base, "proc") });
  const libc = new RecordingLibc(opts.libc);
  const warnings: string[] = [];
  const options: AufsOptions = {
    libc,
    procRoot: proc,
    loadModule: async () => {},
    auplink: null,
    tmpDir: base,
    unmountRetryDelayMs: 1,
    onWarning: (m) => warnings.push(m),
    ...opts.driver,
  };
  const h = { base, root, proc, libc, warnings, options };
  await opts.beforeInit?.(h);
  return {
    ...h,
    reopen: (extra = {}) => AufsDriver.init(root, { ...options, ...extra }),
    close: async () => {
      for (let i = 0; i < 8 && isMountpoint(root); i++) systemLibc().umount2(root, MNT.DETACH);
      await Deno.remove(base, { recursive: true });
    },
  };
}

/**
 * Run `fn` with an initialised driver; cleanup (with the double's scripted
 * rules dropped), the bind mount's removal and the temp dir's deletion always
 * follow. A cleanup failure fails the test.
 *
 * @example
 * ```ts
 * import { withAufs } from "./aufs_harness.ts";
 * await withAufs(async (driver) => {
 *   await driver.create("1", "");
 * });
 * ```
 */
export async function withAufs(
  fn: (driver: AufsDriver, h: AufsHarness) => Promise<void>,
  opts: HarnessOptions = {},
): Promise<void> {
  const h = await openHarness(opts);
  try {
    const driver = await h.reopen();
    let failed = false;
    try {
      await fn(driver, h);
    } catch (e) {
      failed = true;
      throw e;
    } finally {
      h.libc.clearRules();
      // A failing cleanup fails the test, unless the test failed first; close() unmounts anyway.
      await driver.cleanup().catch((e) => {
        if (!failed) throw e;
      });
    }
  } finally {
    await h.close();
  }
}
