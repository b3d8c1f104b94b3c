/**
 * The overlay {@linkcode UnionBackend}: how a chain becomes an overlay mount
 * (absolute `lowerdir` paths when they fit one page, short `l/` links
 * mounted from the root when they do not), how an overlay mount is
 * recognised (statfs magic), and its kernel checks.
 *
 * @module
 */

import { basename } from "node:path";
import { Errno, errnoOf, type Libc } from "../../ffi/libc.ts";
import { FS_MAGIC } from "../fsmagic.ts";
import type { UnionBackend, UnionMount } from "../union.ts";
import { ShortLinks } from "./links.ts";
import {
  OVERLAY_MAX_LOWERS,
  OVERLAY_MOUNT_OPTIONS,
  type OverlayMountData,
  packOverlayMount,
} from "./lowers.ts";
import { supportsOverlay } from "./probe.ts";

/** Options of {@linkcode OverlayBackend}. */
export interface OverlayBackendOptions {
  /** Where `/proc` is read from (default `/proc`). */
  procRoot?: string;
  /** Kernel module loader tried before the checks (default: `modprobe`, failures ignored). */
  loadModule?: (name: string) => Promise<void>;
}

const OVERLAY_MAGIC = FS_MAGIC.overlayfs;

/**
 * overlay unions for the generic driver rooted at `root`. It owns the root's
 * `l/` short links ({@linkcode OverlayBackend.links}) and remembers what
 * Init's probes found, for `status`.
 *
 * @example
 * ```ts
 * import { OverlayBackend } from "./backend.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * const backend = new OverlayBackend(systemLibc(), "/var/lib/strata/overlay");
 * console.log(backend.isMounted("/tmp")); // false
 * ```
 */
export class OverlayBackend implements UnionBackend {
  /** `"overlay"`. */
  readonly name = "overlay";
  /** Deletions are character devices 0/0, opaque dirs carry `trusted.overlay.opaque=y`. */
  readonly whiteoutFormat = "overlay" as const;
  /** `work/<id>`: overlay's scratch dir, on the same filesystem as `diff/<id>`. */
  readonly layerDirs: readonly string[] = ["work"];
  /**
   * overlay cannot use overlay, aufs or eCryptfs as its upper filesystem
   * (containers/storage's list without a mount program); other unusable ones
   * are caught by Init's d_type probe and test mount.
   */
  readonly refusedBackingFs: readonly string[] = ["overlayfs", "aufs", "ecryptfs"];
  /** Options every mount gets after the three dirs. */
  readonly mountOptions: readonly string[] = OVERLAY_MOUNT_OPTIONS;
  /** The root's `l/` links. */
  readonly links: ShortLinks;
  /** The driver root (absolute). */
  readonly root: string;
  /** Whether the root's filesystem fills in `d_type` (set by Init's probe). */
  supportsDType: boolean | undefined;
  readonly #libc: Libc;
  readonly #procRoot?: string;
  readonly #loadModule?: (name: string) => Promise<void>;

  /** A backend for the driver at `root` (absolute), making its system calls through `libc`. */
  constructor(libc: Libc, root: string, opts: OverlayBackendOptions = {}) {
    this.#libc = libc;
    this.root = root;
    this.#procRoot = opts.procRoot;
    this.#loadModule = opts.loadModule;
    this.links = new ShortLinks(libc, root);
  }

  /** Throws `OverlayNotSupportedError` when the kernel cannot mount overlay for this driver. */
  checkSupport(): Promise<void> {
    return supportsOverlay({ procRoot: this.#procRoot, loadModule: this.#loadModule });
  }

  /**
   * Whether `path` is in an overlay mount (statfs magic). A missing path is
   * not; other statfs failures are thrown.
   */
  isMounted(path: string): boolean {
    try {
      return this.#libc.statfs(path).type === OVERLAY_MAGIC;
    } catch (e) {
      const n = errnoOf(e);
      if (n === Errno.ENOENT || n === Errno.ENOTDIR) return false;
      throw e;
    }
  }

  /**
   * The mount data for `req` (see `packOverlayMount`): short links are
   * looked up, or made, only when the absolute form does not fit.
   */
  plan(req: UnionMount): OverlayMountData {
    const work = req.layerDirs.work;
    if (work === undefined) throw new Error(`overlay mount of ${req.target}: no work dir given`);
    return packOverlayMount({
      root: this.root,
      upper: req.upper,
      work,
      lowers: req.lowers,
      shortLowers: () => this.links.resolve(req.lowers.map((dir) => basename(dir))),
      pageSize: this.#libc.getpagesize(),
      mountLabel: req.mountLabel,
      options: this.mountOptions,
    });
  }

  /**
   * One mount(2) of the union (source `overlay`). A chain deeper than
   * overlay's limit fails before any mount is tried. In the short form the
   * process's working directory is the root for the duration of the call:
   * chdir, mount and chdir back run in one synchronous block, so no other
   * code of this process runs in between.
   */
  mount(req: UnionMount): Promise<void> {
    const plan = this.plan(req);
    const what = `overlay mount of ${req.lowers.length} lower layer(s) ` +
      `(${plan.form} paths, ${plan.bytes} bytes of mount data)`;
    try {
      if (plan.cwd === undefined) {
        this.#libc.mount("overlay", req.target, "overlay", 0n, plan.data);
      } else {
        this.#mountFrom(plan.cwd, req.target, plan.data);
      }
    } catch (e) {
      return Promise.reject(new Error(`${what}: ${(e as Error).message}`, { cause: e }));
    }
    return Promise.resolve();
  }

  /** Delete layer `id`'s short link (remove calls it under the layer's lock, after its dirs). */
  forget(id: string): void {
    this.links.remove(id);
  }

  /** Short links whose layer is gone (no `diff/<id>` or no `layers/<id>`); nothing is changed. */
  strayEntries(): string[] {
    const out: string[] = [];
    for (const [name, id] of this.links.list()) {
      if (id === undefined) continue;
      const has = (dir: string) => {
        try {
          Deno.lstatSync(`${this.root}/${dir}/${id}`);
          return true;
        } catch {
          return false;
        }
      };
      if (!has("diff") || !has("layers")) out.push(`${this.links.dir}/${name}`);
    }
    return out.sort();
  }

  /** Delete the short links whose layer is gone; their paths. */
  sweepStrayEntries(): string[] {
    return this.links.sweep().map((name) => `${this.links.dir}/${name}`);
  }

  /** `umount2(target, 0)`; its error is thrown as is. */
  unmount(target: string): Promise<void> {
    this.#libc.umount2(target, 0);
    return Promise.resolve();
  }

  /** `Supports d_type`, `Max Lower Layers` (500), `Using metacopy` (false) and `Mount Options`. */
  status(): Promise<[string, string][]> {
    return Promise.resolve([
      [
        "Supports d_type",
        this.supportsDType === undefined ? "unknown" : String(this.supportsDType),
      ],
      ["Max Lower Layers", String(OVERLAY_MAX_LOWERS)],
      ["Using metacopy", "false"],
      ["Mount Options", this.mountOptions.join(",")],
    ]);
  }

  /** chdir(cwd), mount, chdir back: synchronous, nothing else of this process runs in between. */
  #mountFrom(cwd: string, target: string, data: string): void {
    let saved: string;
    try {
      saved = Deno.cwd();
    } catch (e) {
      throw new Error(
        `the mount must run from ${cwd}, but the current working directory cannot be ` +
          `read to come back to it: ${(e as Error).message}`,
        { cause: e },
      );
    }
    Deno.chdir(cwd);
    try {
      this.#libc.mount("overlay", target, "overlay", 0n, data);
    } finally {
      Deno.chdir(saved);
    }
  }
}
