/**
 * The aufs {@linkcode UnionBackend}: how a chain becomes an aufs mount
 * (branch packing plus `MS_REMOUNT` appends), how an aufs mount is
 * recognised (statfs magic), and its kernel checks.
 *
 * @module
 */

import { Errno, errnoOf, type Libc, MS } from "../../ffi/libc.ts";
import { FS_MAGIC } from "../fsmagic.ts";
import type { UnionBackend, UnionMount } from "../union.ts";
import { packAufsBranches } from "./branches.ts";
import { AufsBranchLimitError } from "../errors.ts";
import { branchMaxSupported, dirperm1Supported, runGranted, supportsAufs } from "./probe.ts";

/** Options of {@linkcode AufsBackend}. */
export interface AufsBackendOptions {
  /** Where `/proc` is read from (default `/proc`). */
  procRoot?: string;
  /** Kernel module loader tried before the checks (default: `modprobe`, failures ignored). */
  loadModule?: (name: string) => Promise<void>;
  /**
   * The `auplink` program flushed before each unmount (containers/storage; default
   * `"auplink"`); `null` never runs it. A missing program is skipped quietly.
   */
  auplink?: string | null;
  /** Parent of the dirperm1 probe's temporary dirs (default `$TMPDIR` or `/tmp`). */
  tmpDir?: string;
  /** Told about failures that do not stop the operation. */
  warn?: (message: string) => void;
}

const AUFS_MAGIC = FS_MAGIC.aufs;

/**
 * aufs unions for the generic driver. Stateless apart from the memoised
 * dirperm1 answer and whether `auplink` exists.
 *
 * @example
 * ```ts
 * import { AufsBackend } from "./backend.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * const backend = new AufsBackend(systemLibc());
 * console.log(backend.isMounted("/tmp")); // false
 * ```
 */
export class AufsBackend implements UnionBackend {
  /** `"aufs"`. */
  readonly name = "aufs";
  /** aufs diff dirs hold `.wh.` whiteout files, the layer-tar format itself. */
  readonly whiteoutFormat = "aufs" as const;
  /** No per-layer dirs beyond `diff` and `mnt`. */
  readonly layerDirs: readonly string[] = [];
  /** aufs cannot sit on aufs, btrfs or eCryptfs. */
  readonly refusedBackingFs: readonly string[] = ["aufs", "btrfs", "ecryptfs"];
  readonly #libc: Libc;
  readonly #procRoot?: string;
  readonly #loadModule?: (name: string) => Promise<void>;
  readonly #tmpDir?: string;
  readonly #warn: (message: string) => void;
  #auplink: string | null;

  /** A backend making its system calls through `libc`. */
  constructor(libc: Libc, opts: AufsBackendOptions = {}) {
    this.#libc = libc;
    this.#procRoot = opts.procRoot;
    this.#loadModule = opts.loadModule;
    this.#tmpDir = opts.tmpDir;
    this.#warn = opts.warn ?? (() => {});
    this.#auplink = opts.auplink === undefined ? "auplink" : opts.auplink;
  }

  /** Throws `AufsNestedError` or `AufsNotSupportedError` when aufs cannot be used here. */
  checkSupport(): Promise<void> {
    return supportsAufs({ procRoot: this.#procRoot, loadModule: this.#loadModule });
  }

  /**
   * Whether `path` is in an aufs mount (statfs magic). A missing path is not
   * (containers/storage reported ENOENT as an error); other statfs failures
   * are thrown.
   */
  isMounted(path: string): boolean {
    try {
      return this.#libc.statfs(path).type === AUFS_MAGIC;
    } catch (e) {
      const n = errnoOf(e);
      if (n === Errno.ENOENT || n === Errno.ENOTDIR) return false;
      throw e;
    }
  }

  /** Whether this kernel's aufs takes `dirperm1` (probed once per libc, lazily). */
  dirperm1(): Promise<boolean> {
    return dirperm1Supported(this.#libc, {
      tmpDir: this.#tmpDir,
      unmount: (p) => this.unmount(p),
      warn: this.#warn,
    });
  }

  /**
   * The most branches this kernel's aufs stacks (`undefined`: it would not
   * say). Probed once per libc, lazily, see `probeBranchMax`.
   */
  branchMax(): Promise<number | undefined> {
    return branchMaxSupported(this.#libc, {
      tmpDir: this.#tmpDir,
      unmount: (p) => this.unmount(p),
      warn: this.#warn,
    });
  }

  /**
   * Mount the union: one mount(2) with the branches that fit a page, then
   * `MS_REMOUNT` appends for the rest. When a remount fails the union is
   * unmounted again (plain umount) and the error says which
   * call failed. A chain longer than the kernel's branch maximum is refused
   * with `AufsBranchLimitError` before any mount(2); a label the kernel
   * refuses (no SELinux) is named in the error.
   */
  async mount(req: UnionMount): Promise<void> {
    const max = await this.branchMax();
    const branches = req.lowers.length + 1;
    if (max !== undefined && branches > max) {
      throw new AufsBranchLimitError(req.id, branches, max);
    }
    const { data, appends } = packAufsBranches(req.upper, req.lowers, {
      pageSize: this.#libc.getpagesize(),
      mountLabel: req.mountLabel,
      dirperm1: await this.dirperm1(),
    });
    try {
      this.#libc.mount("none", req.target, "aufs", 0n, data);
    } catch (e) {
      const rest = appends.length ? `, ${appends.length} remount(s) were to follow` : "";
      const label = req.mountLabel && errnoOf(e) === Errno.EINVAL
        ? ` (with the mount label context=${JSON.stringify(req.mountLabel)}: a kernel ` +
          `without SELinux refuses that option)`
        : "";
      throw new Error(
        `aufs mount of ${branches} branches${rest}${label}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    for (let i = 0; i < appends.length; i++) {
      try {
        this.#libc.mount("none", req.target, "aufs", MS.REMOUNT, appends[i]);
      } catch (e) {
        try {
          this.#libc.umount2(req.target, 0);
        } catch (undo) {
          this.#warn(
            `could not unmount ${req.target} after a failed remount: ${(undo as Error).message}`,
          );
        }
        throw new Error(
          `aufs remount ${i + 1} of ${appends.length} (appending branches): ${
            (e as Error).message
          }`,
          { cause: e },
        );
      }
    }
  }

  /** `auplink <target> flush` (when available), then `umount2(target, 0)`; its error is thrown as is. */
  async unmount(target: string): Promise<void> {
    await this.#flush(target);
    this.#libc.umount2(target, 0);
  }

  /**
   * `[["Dirperm1 Supported", "true" | "false"], ["Max Branches", "<n>" | "unknown"]]`
   * (runs the probes on first use).
   */
  async status(): Promise<[string, string][]> {
    return [
      ["Dirperm1 Supported", String(await this.dirperm1())],
      ["Max Branches", String(await this.branchMax() ?? "unknown")],
    ];
  }

  /** Flush aufs pseudo-links before unmounting; failures are warnings. */
  async #flush(target: string): Promise<void> {
    const program = this.#auplink;
    if (program === null) return;
    if (!runGranted(program)) {
      this.#auplink = null; // never a permission prompt: without --allow-run, no auplink
      return;
    }
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(program, {
        args: [target, "flush"],
        stdout: "null",
        stderr: "piped",
      }).output();
    } catch (e) {
      this.#auplink = null; // not installed (or not allowed): stop trying
      if (!(e instanceof Deno.errors.NotFound)) {
        this.#warn(`cannot run ${program}, unmounting without it: ${(e as Error).message}`);
      }
      return;
    }
    if (!out.success) {
      const why = new TextDecoder().decode(out.stderr).trim();
      this.#warn(`${program} ${target} flush exited with ${out.code}${why ? `: ${why}` : ""}`);
    }
  }
}
