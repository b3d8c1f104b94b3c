/**
 * Kernel and filesystem probes for overlay: whether the kernel has overlay
 * at all, whether the root's filesystem fills in `d_type` (overlay needs it
 * to find whiteouts, containers/storage's `fsutils.SupportsDType`), and a
 * test mount that checks the kernel takes the driver's mount options and
 * writes whiteouts the way the overlay whiteout format expects (a character
 * device 0/0 for a deleted name, `trusted.overlay.opaque=y` on a directory
 * made over a deleted one).
 *
 * @module
 */

import { join } from "node:path";
import {
  AT,
  DT,
  Errno,
  errnoOf,
  type Libc,
  MNT,
  O,
  readTextFileViaLibc,
  S,
} from "../../ffi/libc.ts";
import { NotSupportedError } from "../errors.ts";
import { ensureRemoveAll } from "../remove.ts";
import { modprobe, runningInUserNs } from "../aufs/probe.ts";
import { escapeOverlayPath } from "./lowers.ts";
import { OVERLAY_OPAQUE_XATTR } from "../archive/whiteouts.ts";

/**
 * The kernel cannot mount overlay for this driver.
 *
 * @example
 * ```ts
 * import { OverlayNotSupportedError } from "./probe.ts";
 * import { NotSupportedError } from "../errors.ts";
 * const e = new OverlayNotSupportedError("overlay was not found in /proc/filesystems");
 * console.log(e instanceof NotSupportedError, e.message);
 * // true kernel does not support overlay (overlay was not found in /proc/filesystems): driver not supported
 * ```
 */
export class OverlayNotSupportedError extends NotSupportedError {
  /** `detail` says what was missing. */
  constructor(detail: string, options?: ErrorOptions) {
    super(`kernel does not support overlay (${detail})`, options);
    this.name = "OverlayNotSupportedError";
  }
}

/** Options of {@linkcode supportsOverlay}. */
export interface OverlayProbeOptions {
  /** Where `/proc` is read from (default `/proc`). */
  procRoot?: string;
  /** Try to load a kernel module; failures must be swallowed (default: `modprobe`). */
  loadModule?: (name: string) => Promise<void>;
}

/**
 * Resolve when the kernel can mount overlay for this driver; otherwise throw
 * {@linkcode OverlayNotSupportedError}. Order: `modprobe overlay` (every
 * outcome ignored); refuse a user namespace other than the initial one (there
 * overlay keeps its opaque marks in `user.overlay.*` xattrs, `userxattr`,
 * which the overlay whiteout format does not read or write); then a line of
 * `<procRoot>/filesystems` must name `overlay` (its last field, exactly).
 *
 * @example
 * ```ts
 * import { supportsOverlay } from "./probe.ts";
 * await supportsOverlay({ loadModule: async () => {} });
 * ```
 */
export async function supportsOverlay(opts: OverlayProbeOptions = {}): Promise<void> {
  const procRoot = opts.procRoot ?? "/proc";
  await (opts.loadModule ?? modprobe)("overlay");
  if (runningInUserNs(procRoot)) {
    throw new OverlayNotSupportedError(
      "this process runs in a user namespace, where overlay needs userxattr; " +
        "its user.overlay.opaque marks are not the trusted.overlay.opaque this driver's layers use",
    );
  }
  const path = join(procRoot, "filesystems");
  let list: string;
  try {
    list = readTextFileViaLibc(path);
  } catch (e) {
    throw new OverlayNotSupportedError(`cannot read ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const found = list.split("\n").some((line) => line.trim().split(/\s+/).at(-1) === "overlay");
  if (!found) throw new OverlayNotSupportedError(`overlay was not found in ${path}`);
}

const enc = new TextEncoder();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Name prefixes of the probes' scratch entries in the driver root. */
const PROBE_PREFIXES = [".dtype-probe-", ".overlay-probe-"];

/**
 * Make the probe scratch dir `path` and take an exclusive `flock` on it,
 * held until the returned file is closed: a sweep in another process leaves
 * a locked probe dir alone, and takes any other as a crashed Init's.
 */
function lockedScratchDir(libc: Libc, path: string, mode: number): Deno.FsFile {
  libc.mkdirat(AT.FDCWD, path, mode);
  const f = Deno.openSync(path, { read: true });
  try {
    f.lockSync(true);
    const now = libc.fstatat(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW);
    const held = f.statSync();
    if (held.ino !== now.ino) throw new Error(`${path} was replaced while being locked`);
  } catch (e) {
    f.close();
    throw e;
  }
  return f;
}

/** Whether `path` (a probe dir) is free to take: its Init is gone. */
function unheld(path: string): boolean {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path, { read: true });
  } catch {
    return false; // gone meanwhile
  }
  try {
    return f.tryLockSync(true);
  } finally {
    f.close();
  }
}

/**
 * Probe scratch dirs in `dir` (`.dtype-probe-*`, `.overlay-probe-*`) that
 * no live Init holds (left by a killed one, maybe with the test union still
 * mounted inside), sorted. With `remove`, each is unmounted below and
 * deleted; failures go to `warn`. Dirs of an Init running now are locked and
 * left alone, silently; one that vanishes meanwhile is not an error.
 *
 * @example
 * ```ts
 * import { staleProbeDirs } from "./probe.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * console.log(await staleProbeDirs(systemLibc(), await Deno.makeTempDir())); // []
 * ```
 */
export async function staleProbeDirs(
  libc: Libc,
  dir: string,
  opts: { procRoot?: string; remove?: boolean; warn?: (message: string) => void } = {},
): Promise<string[]> {
  const stale: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!entry.isDirectory || !PROBE_PREFIXES.some((p) => entry.name.startsWith(p))) continue;
    const path = join(dir, entry.name);
    if (!unheld(path)) continue;
    stale.push(path);
    if (!opts.remove) continue;
    try {
      await ensureRemoveAll(libc, path, opts.procRoot);
    } catch (e) {
      opts.warn?.(`could not remove the stale probe dir ${path}: ${(e as Error).message}`);
    }
  }
  return stale;
}

/**
 * Delete probe scratch dirs a killed Init left in `dir` (see
 * {@linkcode staleProbeDirs}); returns the names deleted.
 *
 * @example
 * ```ts
 * import { sweepStaleProbes } from "./probe.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * console.log(await sweepStaleProbes(systemLibc(), await Deno.makeTempDir())); // []
 * ```
 */
export async function sweepStaleProbes(
  libc: Libc,
  dir: string,
  opts: { procRoot?: string; warn?: (message: string) => void } = {},
): Promise<string[]> {
  const gone = await staleProbeDirs(libc, dir, { ...opts, remove: true });
  return gone.filter((p) => !exists(p)).map((p) => p.slice(p.lastIndexOf("/") + 1));
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function randomSuffix(): string {
  return crypto.getRandomValues(new Uint32Array(2)).reduce((s, n) => s + n.toString(36), "");
}

/**
 * Whether the filesystem of `dir` fills in `d_type` in getdents64: a
 * directory entry is made in `dir`, listed, and removed again. `false` when
 * the listing reports `DT_UNKNOWN` for it (e.g. xfs made with `ftype=0`):
 * overlay then cannot tell whiteouts from files without extra stat calls and
 * refuses to work correctly. Failing calls are thrown.
 *
 * @example
 * ```ts
 * import { supportsDType } from "./probe.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * console.log(supportsDType(systemLibc(), await Deno.makeTempDir())); // true on ext4, xfs, tmpfs
 * ```
 */
export function supportsDType(libc: Libc, dir: string): boolean {
  const name = `${PROBE_PREFIXES[0]}${randomSuffix()}`;
  const entry = join(dir, name);
  const lock = lockedScratchDir(libc, entry, 0o700);
  try {
    const fd = libc.openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY);
    try {
      const want = enc.encode(name);
      const found = libc.readdir(fd).find((e) => sameBytes(e.name, want));
      if (!found) throw new Error(`d_type probe: ${entry} was made but is not listed in ${dir}`);
      return found.type !== DT.UNKNOWN;
    } finally {
      libc.close(fd);
    }
  } finally {
    try {
      libc.unlinkat(AT.FDCWD, entry, AT.REMOVEDIR);
    } finally {
      lock.close();
    }
  }
}

/** Unmount the probe's union, lazily if it is busy. */
function unmountProbe(libc: Libc, target: string): void {
  try {
    libc.umount2(target, 0);
  } catch (e) {
    if (errnoOf(e) !== Errno.EBUSY) throw e;
    libc.umount2(target, MNT.DETACH);
  }
}

function typeOf(libc: Libc, path: string): number {
  return libc.fstatat(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW).mode & S.IFMT;
}

/**
 * Mount a two-lower overlay in a scratch dir under `dir` with `options`,
 * delete a lower file and replace a lower directory through it, and check
 * what the kernel wrote into the upper dir: a character device 0/0 for the
 * deleted file, a directory with `trusted.overlay.opaque=y` for the replaced
 * one. Throws an error saying which step failed (the mount, or the whiteout
 * format). The mount is always undone (detached lazily if busy) and the
 * scratch dir deleted.
 *
 * @example
 * ```ts
 * import { checkOverlayMount } from "./probe.ts";
 * import { OVERLAY_MOUNT_OPTIONS } from "./lowers.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * checkOverlayMount(systemLibc(), await Deno.makeTempDir(), OVERLAY_MOUNT_OPTIONS);
 * ```
 */
export function checkOverlayMount(libc: Libc, dir: string, options: readonly string[]): void {
  const base = join(dir, `${PROBE_PREFIXES[1]}${randomSuffix()}`);
  const p = (name: string) => join(base, name);
  const lock = lockedScratchDir(libc, base, 0o700);
  try {
    for (const d of ["lower1", "lower2", "lower2/sub", "upper", "work", "merged"]) {
      Deno.mkdirSync(p(d), { mode: 0o700 });
    }
    Deno.writeTextFileSync(p("lower2/sub/file"), "probe\n");
    Deno.writeTextFileSync(p("lower1/gone"), "probe\n");
    const data = [
      `lowerdir=${escapeOverlayPath(p("lower1"))}:${escapeOverlayPath(p("lower2"))}`,
      `upperdir=${escapeOverlayPath(p("upper"))}`,
      `workdir=${escapeOverlayPath(p("work"))}`,
      ...options,
    ].join(",");
    try {
      libc.mount("overlay", p("merged"), "overlay", 0n, data);
    } catch (e) {
      throw new Error(`test mount of overlay with ${data}: ${(e as Error).message}`, { cause: e });
    }
    let failed: unknown;
    try {
      Deno.removeSync(p("merged/gone"));
      Deno.removeSync(p("merged/sub"), { recursive: true });
      Deno.mkdirSync(p("merged/sub"));
    } catch (e) {
      failed = e;
    }
    unmountProbe(libc, p("merged"));
    if (failed !== undefined) {
      throw new Error(
        `test mount: changing lower entries through the union: ${(failed as Error).message}`,
        {
          cause: failed,
        },
      );
    }
    const wh = libc.fstatat(AT.FDCWD, p("upper/gone"), AT.SYMLINK_NOFOLLOW);
    if ((wh.mode & S.IFMT) !== S.IFCHR || wh.rdevMajor !== 0 || wh.rdevMinor !== 0) {
      throw new Error(
        `test mount: deleting a lower file left mode ${wh.mode.toString(8)} ` +
          `rdev ${wh.rdevMajor}:${wh.rdevMinor} in the upper dir, not a character device 0/0`,
      );
    }
    if (typeOf(libc, p("upper/sub")) !== S.IFDIR) {
      throw new Error(
        "test mount: a directory made over a deleted one is not a directory upstairs",
      );
    }
    const opaque = libc.lgetxattr(p("upper/sub"), OVERLAY_OPAQUE_XATTR);
    if (opaque === null || new TextDecoder().decode(opaque) !== "y") {
      throw new Error(
        `test mount: a directory made over a deleted one has no ${OVERLAY_OPAQUE_XATTR}=y`,
      );
    }
  } finally {
    try {
      Deno.removeSync(base, { recursive: true });
    } finally {
      lock.close();
    }
  }
}
