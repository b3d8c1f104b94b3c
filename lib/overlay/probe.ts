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
 * Delete probe scratch dirs a crashed Init left in `dir` (unmounting a probe
 * union still mounted there first). Entries younger than `minAgeMs` (default
 * one minute) are left alone: another process's Init may be probing right
 * now. Returns the names deleted; failures go to `warn`.
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
  opts: { procRoot?: string; minAgeMs?: number; warn?: (message: string) => void } = {},
): Promise<string[]> {
  const minAge = opts.minAgeMs ?? 60_000;
  const gone: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    if (!entry.isDirectory || !PROBE_PREFIXES.some((p) => entry.name.startsWith(p))) continue;
    const path = join(dir, entry.name);
    try {
      const st = libc.fstatat(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW);
      if (Date.now() - (st.mtimeSec * 1000 + st.mtimeNsec / 1e6) < minAge) continue;
      await ensureRemoveAll(libc, path, opts.procRoot);
      gone.push(entry.name);
    } catch (e) {
      opts.warn?.(`could not remove the stale probe dir ${path}: ${(e as Error).message}`);
    }
  }
  return gone;
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
  libc.mkdirat(AT.FDCWD, entry, 0o700);
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
    libc.unlinkat(AT.FDCWD, entry, AT.REMOVEDIR);
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
  Deno.mkdirSync(base, { mode: 0o700 });
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
    Deno.removeSync(base, { recursive: true });
  }
}
