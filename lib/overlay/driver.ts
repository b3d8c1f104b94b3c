/**
 * The overlay graph driver: the generic union driver with the overlay
 * backend, for kernels without aufs; registered as `"overlay"` when this
 * module is imported.
 *
 * Root layout: the aufs layout (`layers/`, `diff/`, `mnt/`) plus `work/<id>`
 * (overlay's work dir of each layer) and `l/` (one short symlink per layer,
 * `l/<name>` → `../diff/<id>`, for chains whose absolute paths do not fit
 * one page of mount data).
 *
 * @module
 */

import { resolve } from "node:path";
import { Errno, errnoOf, systemLibc } from "../../ffi/libc.ts";
import { registerDriver } from "../driver.ts";
import type { CreateOpts } from "../driver.ts";
import { IncompatibleFsError, LayerError } from "../errors.ts";
import { UnionDriver, type UnionDriverOptions } from "../union.ts";
import { OverlayBackend } from "./backend.ts";
import { checkOverlayMount, supportsDType, sweepStaleProbes } from "./probe.ts";

/**
 * Options of {@linkcode OverlayDriver.init}.
 *
 * @example
 * ```ts
 * import { OverlayDriver, type OverlayOptions } from "../../mod.ts";
 * const opts: OverlayOptions = { loadModule: async () => {} }; // the module is built in
 * await using driver = await OverlayDriver.init("/var/lib/strata", opts);
 * console.log(driver.name); // overlay
 * ```
 */
export interface OverlayOptions extends UnionDriverOptions {
  /** Kernel module loader tried before the checks (default: `modprobe overlay`, failures ignored). */
  loadModule?: (name: string) => Promise<void>;
}

/**
 * Layers as overlay unions: the aufs driver's behaviour with
 * overlay mounts and overlay's on-disk whiteouts.
 *
 * @example
 * ```ts
 * import { OverlayDriver } from "./driver.ts";
 * const driver = await OverlayDriver.init("/var/lib/strata/overlay");
 * await driver.create("base", "");
 * await driver.create("child", "base");
 * const root = await driver.get("child"); // /var/lib/strata/overlay/mnt/child
 * await driver.put("child");
 * await driver.cleanup();
 * ```
 */
export class OverlayDriver extends UnionDriver {
  /** The overlay backend (its short links and probe results). */
  declare readonly backend: OverlayBackend;

  /**
   * Init: the kernel must have overlay and this process must be in the
   * initial user namespace (else `OverlayNotSupportedError`); the root's
   * parent must not be on overlay, aufs or eCryptfs (`IncompatibleFsError`);
   * the root is laid out (with `work/` and `l/`) and made a private mount,
   * leftovers are swept (`*-removing` dirs, half-made layers, dangling short
   * links, probe dirs of a crashed Init). Then, in the root: the filesystem
   * must fill in `d_type`, and a test mount must take the driver's options
   * and write overlay whiteouts (else `IncompatibleFsError`, with the reason
   * as its `cause`); the outcome is cached in `strata.json` per kernel
   * release, so later opens skip both (and need no free space). When a step
   * after the layout fails, only what this Init did is undone (its bind
   * mount, a root it made); other processes' mounts are never touched.
   * Read-only (`readOnly`): no layout, sweep or probe; the cached probe
   * results are used for `status`.
   */
  static async init(root: string, opts: OverlayOptions = {}): Promise<OverlayDriver> {
    const libc = opts.libc ?? systemLibc();
    const abs = resolve(root);
    const backend = new OverlayBackend(libc, abs, {
      procRoot: opts.procRoot,
      loadModule: opts.loadModule,
    });
    const driver = new OverlayDriver(abs, backend, { ...opts, libc });
    await driver.prepare();
    const cached = driver.probeRecord()?.results;
    const options = backend.mountOptions.join(",");
    if (driver.readOnly) {
      backend.supportsDType = typeof cached?.dtype === "boolean" ? cached.dtype : undefined;
      return driver;
    }
    try {
      backend.links.makeDir();
      const swept = backend.links.sweep();
      await sweepStaleProbes(libc, abs, { procRoot: opts.procRoot, warn: (m) => driver.#warn(m) });
      if (swept.length > 0) {
        driver.#warn(`removed ${swept.length} dangling short link(s) in ${backend.links.dir}`);
      }
      if (cached?.dtype === true && cached?.mount === true && cached?.options === options) {
        backend.supportsDType = true;
      } else if (driver.#probe(abs, options)) {
        await driver.recordProbe({ dtype: true, mount: true, options });
      }
    } catch (e) {
      driver.abandon();
      throw e;
    }
    return driver;
  }

  /**
   * Init's probes in the root: `d_type`, then a test mount. A probe that
   * fails for want of space or quota (ENOSPC, EDQUOT) is skipped with a
   * warning, so that a full disk never locks the user out of the commands
   * that free space; false then (nothing to cache). Other failures throw
   * `IncompatibleFsError`.
   */
  #probe(abs: string, options: string): boolean {
    const full = (e: unknown): boolean => {
      for (let c = e, i = 0; c !== undefined && i < 8; i++) {
        const n = errnoOf(c);
        if (n === Errno.ENOSPC || n === Errno.EDQUOT) {
          this.#warn(
            `skipped the overlay test mount in ${abs}: ${
              n === Errno.ENOSPC ? "ENOSPC, no space left" : "EDQUOT, quota exceeded"
            } on ${abs} (free space with strata rm; the test runs at the next open)`,
          );
          return true;
        }
        c = (c as { cause?: unknown })?.cause;
      }
      return false;
    };
    let dtype: boolean;
    try {
      dtype = supportsDType(this.libc, abs);
    } catch (e) {
      if (full(e)) return false;
      throw new IncompatibleFsError("overlay", this.backingFs, { cause: e });
    }
    this.backend.supportsDType = dtype;
    if (!dtype) {
      throw new IncompatibleFsError("overlay", this.backingFs, {
        cause: new Error(`the filesystem of ${abs} does not report d_type in directory listings`),
      });
    }
    try {
      checkOverlayMount(this.libc, abs, options.split(","));
    } catch (e) {
      if (full(e)) return false;
      throw new IncompatibleFsError("overlay", this.backingFs, { cause: e });
    }
    return true;
  }

  readonly #onWarning: (message: string) => void;

  /** Use {@linkcode OverlayDriver.init}; this only wires the parts together (no I/O). */
  constructor(root: string, backend: OverlayBackend, opts: UnionDriverOptions = {}) {
    super(root, backend, opts);
    this.#onWarning = opts.onWarning ?? (() => {});
  }

  #warn(message: string): void {
    this.#onWarning(message);
  }

  /**
   * Create layer `id` on `parent` (see `UnionDriver.create`), then its short
   * link. If the link cannot be made the layer is removed again and the error
   * names the link.
   */
  override async create(
    id: string,
    parent?: string | CreateOpts,
    opts?: CreateOpts,
  ): Promise<void> {
    await super.create(id, parent, opts);
    try {
      await this.withLayerLock(id, async () => {
        if (await this.exists(id)) this.backend.links.claim(id);
      });
    } catch (e) {
      try {
        await super.remove(id);
      } catch (undo) {
        this.#warn(
          `create ${id}: could not remove the layer after its short link failed: ${
            (undo as Error).message
          }`,
        );
      }
      throw new LayerError(id, "create: short link", this.backend.links.dir, e);
    }
  }
}

registerDriver("overlay", (root, opts) => OverlayDriver.init(root, opts));
