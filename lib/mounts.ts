/**
 * Mount table helpers: parse `/proc/self/mountinfo` (with octal escapes
 * decoded, unlike containers/storage), ask whether a path is a mountpoint,
 * make a directory a private mount, unmount with EBUSY retries that
 * report their final failure, and unmount everything below a
 * directory, deepest first.
 *
 * @module
 */

import { Errno, isErrno, type Libc, MNT, MS, readTextFileViaLibc } from "../ffi/libc.ts";
import { compareBytewise } from "./ids.ts";

/** One line of `/proc/<pid>/mountinfo` (see proc(5)). */
export interface MountInfo {
  /** Mount id. */
  id: number;
  /** Id of the parent mount. */
  parent: number;
  /** Device major number of the filesystem. */
  major: number;
  /** Device minor number of the filesystem. */
  minor: number;
  /** Directory of the filesystem that forms this mount's root. */
  root: string;
  /** Where it is mounted, relative to the process's root. */
  mountPoint: string;
  /** Per-mount options, e.g. `rw,relatime`. */
  options: string;
  /** Optional fields, e.g. `["shared:1"]`; empty for a private mount. */
  optional: string[];
  /** Filesystem type, e.g. `ext4`. */
  fsType: string;
  /** Mount source, e.g. `/dev/vda` (`none` and the like for virtual ones). */
  source: string;
  /** Superblock options. */
  superOptions: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const isOctal = (b: number) => b >= 0x30 && b <= 0x37;

/** Decode the kernel's `\ooo` escapes (space, tab, newline, backslash). */
function unescape(field: string): string {
  if (!field.includes("\\")) return field;
  const src = encoder.encode(field);
  const out = new Uint8Array(src.length);
  let n = 0;
  for (let i = 0; i < src.length; i++) {
    if (
      src[i] === 0x5c && i + 3 < src.length && isOctal(src[i + 1]) && isOctal(src[i + 2]) &&
      isOctal(src[i + 3])
    ) {
      out[n++] = ((src[i + 1] - 0x30) << 6) | ((src[i + 2] - 0x30) << 3) | (src[i + 3] - 0x30);
      i += 3;
    } else {
      out[n++] = src[i];
    }
  }
  return decoder.decode(out.subarray(0, n));
}

function parseLine(line: string): MountInfo {
  const bad = (why: string) => new Error(`parse mountinfo line ${JSON.stringify(line)}: ${why}`);
  const f = line.split(" ");
  const sep = f.indexOf("-", 6);
  if (f.length < 7 || sep < 0) throw bad("fewer than 7 fields or no ' - ' separator");
  if (f.length - sep - 1 < 3) throw bad("fewer than 3 fields after ' - '");
  const num = (s: string, what: string) => {
    if (!/^\d+$/.test(s)) throw bad(`${what} ${JSON.stringify(s)} is not a number`);
    return Number(s);
  };
  const dev = f[2].split(":");
  if (dev.length !== 2) throw bad(`device ${JSON.stringify(f[2])} is not major:minor`);
  return {
    id: num(f[0], "mount id"),
    parent: num(f[1], "parent id"),
    major: num(dev[0], "major"),
    minor: num(dev[1], "minor"),
    root: unescape(f[3]),
    mountPoint: unescape(f[4]),
    options: f[5],
    optional: f.slice(6, sep),
    fsType: unescape(f[sep + 1]),
    source: unescape(f[sep + 2]),
    superOptions: f.slice(sep + 3).join(" "),
  };
}

/**
 * Parse mountinfo text: one {@linkcode MountInfo} per non-empty line, all
 * optional fields kept, `\040`-style escapes decoded in root, mountpoint,
 * fstype and source. A malformed line throws, quoting the line.
 *
 * @example
 * ```ts
 * import { parseMountinfo } from "./mounts.ts";
 * const [m] = parseMountinfo("36 35 98:0 / /my\\040dir rw shared:1 - ext3 /dev/root rw");
 * console.log(m.mountPoint, m.optional); // "/my dir" ["shared:1"]
 * ```
 */
export function parseMountinfo(text: string): MountInfo[] {
  return text.split("\n").filter((l) => l !== "").map(parseLine);
}

/**
 * The calling process's mount table, from `<procRoot>/self/mountinfo`.
 *
 * @example
 * ```ts
 * import { readMountinfo } from "./mounts.ts";
 * console.log(readMountinfo().some((m) => m.mountPoint === "/")); // true
 * ```
 */
export function readMountinfo(procRoot = "/proc"): MountInfo[] {
  const path = `${procRoot}/self/mountinfo`;
  let text: string;
  try {
    text = readTextFileViaLibc(path);
  } catch (e) {
    throw new Error(`read ${path}: ${(e as Error).message}`, { cause: e });
  }
  return parseMountinfo(text);
}

/** `path` with symlinks resolved, or `undefined` when it does not exist. */
function canonical(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw new Error(`canonicalise ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Whether `path` (symlinks resolved) is exactly some mount's mountpoint. A
 * path that does not exist is not a mountpoint.
 *
 * @example
 * ```ts
 * import { isMountpoint } from "./mounts.ts";
 * console.log(isMountpoint("/proc")); // true
 * ```
 */
export function isMountpoint(path: string, procRoot = "/proc"): boolean {
  const real = canonical(path);
  if (real === undefined) return false;
  return readMountinfo(procRoot).some((m) => m.mountPoint === real);
}

/**
 * Mountpoints at or below `dir` (whole path components: `/a/b` is below `/a`,
 * `/a/bc` is not), deepest first; a mountpoint stacked twice appears twice.
 *
 * @example
 * ```ts
 * import { mountpointsUnder } from "./mounts.ts";
 * console.log(mountpointsUnder("/sys").at(-1)); // /sys
 * ```
 */
export function mountpointsUnder(dir: string, procRoot = "/proc"): string[] {
  const root = canonical(dir);
  if (root === undefined) return [];
  const prefix = root.endsWith("/") ? root : root + "/";
  return readMountinfo(procRoot)
    .map((m) => m.mountPoint)
    .filter((p) => p === root || p.startsWith(prefix))
    .sort((a, b) => compareBytewise(b, a));
}

/**
 * Give `path` private mount propagation, first bind-mounting it onto itself
 * when it is not a mountpoint yet (containers/storage's `MakePrivate`); true when this
 * call made that bind mount. Mount errors are thrown
 * ({@linkcode ErrnoError}s naming the call and path).
 *
 * @example
 * ```ts
 * import { systemLibc } from "../ffi/libc.ts";
 * import { makePrivate } from "./mounts.ts";
 * const dir = await Deno.makeTempDir();
 * makePrivate(systemLibc(), dir);
 * systemLibc().umount2(dir, 0);
 * ```
 */
export function makePrivate(libc: Libc, path: string, procRoot = "/proc"): boolean {
  const real = canonical(path) ?? path;
  let bound = false;
  if (!isMountpoint(real, procRoot)) {
    libc.mount(real, real, "none", MS.BIND, "");
    bound = true;
  }
  try {
    libc.mount("", real, "", MS.PRIVATE, "");
  } catch (e) {
    if (bound) {
      try {
        libc.umount2(real, 0);
      } catch {
        // the caller's error is the one that matters
      }
    }
    throw e;
  }
  return bound;
}

/** Options of {@linkcode unmountRetry}. */
export interface UnmountRetryOptions {
  /** EBUSY retries after the first attempt (default 5). */
  retries?: number;
  /** Pause between attempts in milliseconds (default 100). */
  delayMs?: number;
  /** Checked before every attempt: when it says "not mounted", stop with success. */
  isMounted?: (path: string) => boolean;
}

/**
 * `umount2(path, 0)`, retried while it fails with EBUSY (5 retries, 100 ms
 * apart by default). Other errors are thrown at once; when the retries run
 * out the last EBUSY error is thrown (containers/storage swallowed it).
 *
 * @example
 * ```ts
 * import { systemLibc } from "../ffi/libc.ts";
 * import { unmountRetry } from "./mounts.ts";
 * await unmountRetry(systemLibc(), "/var/lib/strata/mnt/abc", { retries: 2 })
 *   .catch((e) => console.log(e.message));
 * ```
 */
export async function unmountRetry(
  libc: Libc,
  path: string,
  opts: UnmountRetryOptions = {},
): Promise<void> {
  const retries = opts.retries ?? 5, delayMs = opts.delayMs ?? 100;
  for (let attempt = 0;; attempt++) {
    if (opts.isMounted && !opts.isMounted(path)) return;
    try {
      libc.umount2(path, 0);
      return;
    } catch (e) {
      if (!isErrno(e, Errno.EBUSY) || attempt >= retries) throw e;
    }
    await new Promise((r) => setTimeout(r, delayMs));
  }
}

/** Unmount `mp`, detaching it lazily when it is busy. */
function unmountOne(libc: Libc, mp: string): void {
  try {
    libc.umount2(mp, 0);
  } catch (e) {
    if (!isErrno(e, Errno.EBUSY)) throw e;
    libc.umount2(mp, MNT.DETACH);
  }
}

/**
 * Unmount every mount at or below `dir`, deepest first. A busy mount is
 * detached lazily (`MNT_DETACH`): it leaves the tree at once and the kernel
 * frees it when its last user goes. A mount hidden under a later mount on an
 * ancestor cannot be reached by path: it is retried in another round, once
 * the mounts above it are gone. Whatever is still mounted when a round makes
 * no progress is reported in one error. Returns only after a read of the
 * mount table showed nothing at or below `dir`.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../ffi/libc.ts";
 * import { recursiveUnmount } from "./mounts.ts";
 * recursiveUnmount(systemLibc(), "/var/lib/strata/mnt");
 * ```
 */
export function recursiveUnmount(libc: Libc, dir: string, procRoot = "/proc"): void {
  let before = Infinity;
  let failures: unknown[] = [];
  for (;;) {
    const mounted = mountpointsUnder(dir, procRoot);
    if (mounted.length === 0) return;
    if (mounted.length >= before) {
      // No progress since the last round: report what failed, or what stayed.
      const what = failures.length > 0
        ? failures.map((e) => (e as Error).message).join("; ")
        : `still mounted: ${mounted.join(", ")}`;
      throw new Error(`unmount below ${dir}: ${what}`, { cause: failures[0] });
    }
    before = mounted.length;
    failures = [];
    for (const mp of mounted) {
      try {
        unmountOne(libc, mp);
      } catch (e) {
        failures.push(e);
      }
    }
  }
}
