/**
 * Kernel probes for aufs: whether the kernel has it at all and
 * whether it accepts the `dirperm1` option.
 *
 * @module
 */

import { join } from "node:path";
import { Errno, errnoOf, type Libc, MS, readTextFileViaLibc } from "../../ffi/libc.ts";
import { AufsNestedError, AufsNotSupportedError } from "../errors.ts";
import { AUFS_XINO } from "./branches.ts";
import { granted } from "../permissions.ts";

/** Options of {@linkcode supportsAufs}. */
export interface AufsProbeOptions {
  /** Where `/proc` is read from (default `/proc`). */
  procRoot?: string;
  /**
   * Try to load a kernel module; failures must be swallowed (default: run
   * `modprobe <name>`, ignoring a missing binary, its status and its output).
   */
  loadModule?: (name: string) => Promise<void>;
}

/**
 * Run `modprobe <name>` and ignore every outcome: a missing binary, a
 * refused permission, a non-zero status. Without
 * permission to run it, it is not tried (no prompt).
 *
 * @example
 * ```ts
 * import { modprobe } from "./probe.ts";
 * await modprobe("aufs"); // never throws
 * ```
 */
export async function modprobe(name: string): Promise<void> {
  if (!runGranted("modprobe")) return; // never a permission prompt
  try {
    await new Deno.Command("modprobe", { args: [name], stdout: "null", stderr: "null" }).output();
  } catch {
    // The attempt is best effort by design: the /proc/filesystems scan decides.
  }
}

/**
 * Whether this process may already run `program` (`--allow-run` or
 * `--allow-all`). Running it otherwise would prompt or fail; callers of
 * optional helpers (`modprobe`, `auplink`) skip them instead.
 *
 * @example
 * ```ts
 * import { runGranted } from "./probe.ts";
 * console.log(runGranted("auplink"));
 * ```
 */
export function runGranted(program: string): boolean {
  try {
    return Deno.permissions.querySync({ name: "run", command: program }).state === "granted";
  } catch {
    return false;
  }
}

/** The uid_map line of the initial user namespace. */
const INIT_USERNS = [0, 0, 4294967295];

/**
 * Whether this process runs in a user namespace other than the initial one,
 * read from the first line of `<procRoot>/self/uid_map`. An unreadable file
 * means "initial namespace"; anything but `0 0 4294967295` means nested.
 *
 * @example
 * ```ts
 * import { runningInUserNs } from "./probe.ts";
 * console.log(runningInUserNs("/proc"));
 * ```
 */
export function runningInUserNs(procRoot = "/proc"): boolean {
  let content: string;
  try {
    content = readTextFileViaLibc(join(procRoot, "self", "uid_map"));
  } catch {
    return false;
  }
  const first = content.split("\n", 1)[0];
  const fields = first.trim().split(/\s+/).map(Number);
  return !INIT_USERNS.every((v, i) => fields[i] === v);
}

/**
 * Resolve when the kernel can mount aufs; otherwise throw
 * {@linkcode AufsNestedError} (inside a user namespace) or
 * {@linkcode AufsNotSupportedError} (not in `<procRoot>/filesystems`, or that
 * file unreadable). Order as in containers/storage: module load attempt, user-namespace
 * check, filesystems scan.
 *
 * @example
 * ```ts
 * import { supportsAufs } from "./probe.ts";
 * try {
 *   await supportsAufs();
 * } catch (e) {
 *   console.log((e as Error).message);
 * }
 * ```
 */
export async function supportsAufs(opts: AufsProbeOptions = {}): Promise<void> {
  const procRoot = opts.procRoot ?? "/proc";
  await (opts.loadModule ?? modprobe)("aufs");
  if (runningInUserNs(procRoot)) throw new AufsNestedError();
  const path = join(procRoot, "filesystems");
  let list: string;
  try {
    list = readTextFileViaLibc(path);
  } catch (e) {
    throw new AufsNotSupportedError(`cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (!list.split("\n").some((line) => line.includes("aufs"))) {
    throw new AufsNotSupportedError(`AUFS was not found in ${path}`);
  }
}

/** Options of {@linkcode probeDirperm1}. */
export interface Dirperm1ProbeOptions {
  /** Parent of the probe's temporary dirs (default: `$TMPDIR` or `/tmp`). */
  tmpDir?: string;
  /** Unmount the probe mount (default: plain `umount2(path, 0)`). */
  unmount?: (path: string) => Promise<void> | void;
  /** Told about failures that do not change the answer. */
  warn?: (message: string) => void;
}

/**
 * Mount a one-branch aufs with `dirperm1` on a temporary dir and report
 * whether the kernel took it. Never throws: failing to make the
 * temporary dirs, or the mount failing, means `false`. The temporary dirs are
 * removed in every case. Use {@linkcode dirperm1Supported} for the memoised
 * answer.
 *
 * @example
 * ```ts
 * import { probeDirperm1 } from "./probe.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * console.log(await probeDirperm1(systemLibc())); // false without aufs
 * ```
 */
export async function probeDirperm1(libc: Libc, opts: Dirperm1ProbeOptions = {}): Promise<boolean> {
  const warn = opts.warn ?? (() => {});
  const made: string[] = [];
  const tmp = opts.tmpDir ?? tmpDirectory();
  if (!granted({ name: "write", path: tmp }) || !granted({ name: "read", path: tmp })) {
    warn(`dirperm1 probe skipped: no --allow-read/--allow-write for ${tmp} (taken as unsupported)`);
    return false;
  }
  try {
    const base = await Deno.makeTempDir({ dir: tmp, prefix: "storage-aufs-base" });
    made.push(base);
    const union = await Deno.makeTempDir({ dir: tmp, prefix: "storage-aufs-union" });
    made.push(union);
    try {
      libc.mount("none", union, "aufs", 0n, `br:${base},dirperm1,xino=${AUFS_XINO}`);
    } catch {
      return false;
    }
    try {
      await (opts.unmount ?? ((p: string) => libc.umount2(p, 0)))(union);
    } catch (e) {
      warn(`dirperm1 probe: unmounting ${union} failed: ${(e as Error).message}`);
    }
    return true;
  } catch (e) {
    warn(`dirperm1 probe: cannot make its temporary dirs: ${(e as Error).message}`);
    return false;
  } finally {
    for (const dir of made.reverse()) {
      try {
        await Deno.remove(dir, { recursive: true });
      } catch (e) {
        warn(`dirperm1 probe: removing ${dir} failed: ${(e as Error).message}`);
      }
    }
  }
}

/** `$TMPDIR` when it may be read without a prompt and is set, else `/tmp`. */
function tmpDirectory(): string {
  if (!granted({ name: "env", variable: "TMPDIR" })) return "/tmp";
  return Deno.env.get("TMPDIR") || "/tmp";
}

const dirperm1Answers = new WeakMap<Libc, Promise<boolean>>();

/**
 * Whether aufs accepts `dirperm1`, probed once per process and libc (the
 * real libc is one object, so the real kernel is probed once; each test
 * double is probed once too). Concurrent callers share the one probe.
 *
 * @example
 * ```ts
 * import { dirperm1Supported } from "./probe.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * console.log(await dirperm1Supported(systemLibc()));
 * ```
 */
export function dirperm1Supported(libc: Libc, opts: Dirperm1ProbeOptions = {}): Promise<boolean> {
  let answer = dirperm1Answers.get(libc);
  if (!answer) {
    answer = probeDirperm1(libc, opts);
    dirperm1Answers.set(libc, answer);
  }
  return answer;
}

/** The branch maximums aufs can be built with (`CONFIG_AUFS_BRANCH_MAX_*`), smallest first. */
export const AUFS_BRANCH_MAXIMUMS: readonly number[] = [127, 511, 1023, 32767];

/** Options of {@linkcode probeBranchMax}. */
export interface BranchMaxProbeOptions extends Dirperm1ProbeOptions {
  /** Where `/sys` is read from (default `/sys`). */
  sysRoot?: string;
}

/**
 * The most branches this kernel's aufs stacks, as the kernel tells it, or
 * `undefined` when it cannot be told. A modular aufs lists its build options
 * in `/sys/module/aufs/config` (`CONFIG_AUFS_BRANCH_MAX_127=y`). A built-in
 * one is asked: on a one-branch probe mount, a remount `add:<K>:<dir>` fails
 * with ENOSPC ("number of branches exceeded") when K reaches the maximum and
 * with EDOM ("bad index") below it, so the first K of
 * {@linkcode AUFS_BRANCH_MAXIMUMS} answered with ENOSPC is the maximum. The
 * probe's dirs are removed in every case; it never throws.
 *
 * @example
 * ```ts
 * import { probeBranchMax } from "./probe.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * console.log(await probeBranchMax(systemLibc())); // 127 on a default aufs; undefined without aufs
 * ```
 */
export async function probeBranchMax(
  libc: Libc,
  opts: BranchMaxProbeOptions = {},
): Promise<number | undefined> {
  const warn = opts.warn ?? (() => {});
  try {
    const config = readTextFileViaLibc(join(opts.sysRoot ?? "/sys", "module/aufs/config"));
    const m = /CONFIG_AUFS_BRANCH_MAX_(\d+)=y/.exec(config);
    if (m) return Number(m[1]);
  } catch {
    // built in (no config file): ask the kernel
  }
  const made: string[] = [];
  try {
    for (const prefix of ["storage-aufs-base", "storage-aufs-extra", "storage-aufs-union"]) {
      made.push(await Deno.makeTempDir({ dir: opts.tmpDir, prefix }));
    }
    const [base, extra, union] = made;
    try {
      libc.mount("none", union, "aufs", 0n, `br:${base}=rw,xino=${AUFS_XINO}`);
    } catch {
      return undefined;
    }
    try {
      for (const k of AUFS_BRANCH_MAXIMUMS) {
        try {
          libc.mount("none", union, "aufs", MS.REMOUNT, `add:${k}:${extra}=ro`);
          return undefined; // taken: not the answer we know how to read
        } catch (e) {
          const n = errnoOf(e);
          if (n === Errno.ENOSPC) return k;
          if (n !== Errno.EDOM) return undefined;
        }
      }
      return undefined;
    } finally {
      try {
        await (opts.unmount ?? ((p: string) => libc.umount2(p, 0)))(union);
      } catch (e) {
        warn(`branch maximum probe: unmounting ${union} failed: ${(e as Error).message}`);
      }
    }
  } catch (e) {
    warn(`branch maximum probe: cannot make its temporary dirs: ${(e as Error).message}`);
    return undefined;
  } finally {
    for (const dir of made.reverse()) {
      try {
        await Deno.remove(dir, { recursive: true });
      } catch (e) {
        warn(`branch maximum probe: removing ${dir} failed: ${(e as Error).message}`);
      }
    }
  }
}

const branchMaxAnswers = new WeakMap<Libc, Promise<number | undefined>>();

/**
 * {@linkcode probeBranchMax}, probed once per process and libc; concurrent
 * callers share the one probe.
 *
 * @example
 * ```ts
 * import { branchMaxSupported } from "./probe.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * console.log(await branchMaxSupported(systemLibc()));
 * ```
 */
export function branchMaxSupported(
  libc: Libc,
  opts: BranchMaxProbeOptions = {},
): Promise<number | undefined> {
  let answer = branchMaxAnswers.get(libc);
  if (!answer) {
    answer = probeBranchMax(libc, opts);
    branchMaxAnswers.set(libc, answer);
  }
  return answer;
}
