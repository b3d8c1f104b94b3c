/**
 * The aufs graph driver: the generic union driver with the aufs backend,
 * registered as `"aufs"` when this module is imported.
 *
 * @module
 */

import { systemLibc } from "../../ffi/libc.ts";
import { registerDriver } from "../driver.ts";
import { UnionDriver, type UnionDriverOptions } from "../union.ts";
import { AufsBackend } from "./backend.ts";

/**
 * Options of {@linkcode AufsDriver.init}.
 *
 * @example
 * ```ts
 * import { AufsDriver, type AufsOptions } from "../../mod.ts";
 * const opts: AufsOptions = { auplink: null, onWarning: (m) => console.warn(m) };
 * const driver = await AufsDriver.init("/var/lib/strata", opts);
 * console.log(driver.name); // aufs
 * ```
 */
export interface AufsOptions extends UnionDriverOptions {
  /** Kernel module loader tried before the checks (default: `modprobe aufs`, failures ignored). */
  loadModule?: (name: string) => Promise<void>;
  /** `auplink` program run before each unmount (default `"auplink"`; `null`: never). */
  auplink?: string | null;
  /** Parent of the dirperm1 probe's temporary dirs (default `$TMPDIR` or `/tmp`). */
  tmpDir?: string;
}

/**
 * Layers as aufs unions (containers/storage's aufs driver).
 *
 * @example
 * ```ts
 * import { AufsDriver } from "./driver.ts";
 * const driver = await AufsDriver.init("/var/lib/strata/aufs");
 * await driver.create("base", "");
 * await driver.create("child", "base");
 * const root = await driver.get("child"); // /var/lib/strata/aufs/mnt/child
 * await driver.put("child");
 * await driver.cleanup();
 * ```
 */
export class AufsDriver extends UnionDriver {
  /**
   * Init: the kernel must have aufs (else `AufsNotSupportedError`,
   * or `AufsNestedError` inside a user namespace); the root's parent must not
   * be on aufs, btrfs or eCryptfs (`IncompatibleFsError`); then the root is
   * laid out and made a private mount, and leftovers are swept.
   */
  static async init(root: string, opts: AufsOptions = {}): Promise<AufsDriver> {
    const libc = opts.libc ?? systemLibc();
    const backend = new AufsBackend(libc, {
      procRoot: opts.procRoot,
      loadModule: opts.loadModule,
      auplink: opts.auplink,
      tmpDir: opts.tmpDir,
      warn: opts.onWarning,
    });
    const driver = new AufsDriver(root, backend, { ...opts, libc });
    await driver.prepare();
    return driver;
  }
}

registerDriver("aufs", (root, opts) => AufsDriver.init(root, opts));
