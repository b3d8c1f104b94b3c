/**
 * The only module that touches `Deno.dlopen`. It declares the libc symbols
 * strata needs in one table, and wraps each in a thin synchronous function that
 * turns a `-1` return into an {@linkcode ErrnoError}.
 *
 * Everything above this module reaches the kernel through the {@linkcode Libc}
 * interface, so tests can hand in a recording double where the host cannot do
 * the real thing (there is no aufs in most kernels).
 *
 * libc is opened lazily on the first call of {@linkcode systemLibc}: importing
 * this module needs no `--allow-ffi`.
 *
 * Paths are `string` (encoded as UTF-8) or `Uint8Array` (raw bytes, used as
 * they are: names from a tar need not be UTF-8).
 *
 * @module
 */

import { Errno, ErrnoError } from "./errno.ts";

export { Errno, ErrnoError, errnoOf, errnoText } from "./errno.ts";

/**
 * A path: a JS string (UTF-8 encoded) or raw bytes without a NUL.
 *
 * @example
 * ```ts
 * import type { PathLike } from "../mod.ts";
 * const paths: PathLike[] = ["/tmp", new Uint8Array([0x2f, 0xff])]; // text, or raw bytes
 * console.log(paths.length);
 * ```
 */
export type PathLike = string | Uint8Array;

const ARM = Deno.build.arch === "aarch64";

/**
 * open(2) flags for this architecture.
 *
 * @example
 * ```ts
 * import { AT, O, systemLibc } from "../mod.ts";
 * const libc = systemLibc();
 * const fd = libc.openat(AT.FDCWD, "/tmp", O.RDONLY | O.DIRECTORY | O.CLOEXEC);
 * libc.close(fd);
 * ```
 */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECTORY: ARM ? 0o40000 : 0o200000,
  NOFOLLOW: ARM ? 0o100000 : 0o400000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

/**
 * `*at` call flags.
 *
 * @example
 * ```ts
 * import { AT, systemLibc } from "../mod.ts";
 * const st = systemLibc().fstatat(AT.FDCWD, "/tmp", AT.SYMLINK_NOFOLLOW);
 * console.log(st.uid);
 * ```
 */
export const AT = {
  FDCWD: -100,
  SYMLINK_NOFOLLOW: 0x100,
  REMOVEDIR: 0x200,
  SYMLINK_FOLLOW: 0x400,
  EMPTY_PATH: 0x1000,
} as const;

/**
 * openat2(2) `resolve` flags.
 *
 * @example
 * ```ts
 * import { AT, O, RESOLVE, systemLibc } from "../mod.ts";
 * const libc = systemLibc();
 * const dir = libc.openat(AT.FDCWD, "/tmp", O.RDONLY | O.DIRECTORY);
 * // "../etc" resolves inside /tmp, as if /tmp were the root
 * const fd = libc.openat2(dir, "x", O.RDONLY | O.CREAT, 0o644, RESOLVE.IN_ROOT);
 * libc.close(fd);
 * libc.close(dir);
 * ```
 */
export const RESOLVE = {
  NO_XDEV: 0x01n,
  NO_MAGICLINKS: 0x02n,
  NO_SYMLINKS: 0x04n,
  BENEATH: 0x08n,
  IN_ROOT: 0x10n,
} as const;

/**
 * File type bits of `st_mode`.
 *
 * @example
 * ```ts
 * import { AT, S, systemLibc } from "../mod.ts";
 * const st = systemLibc().fstatat(AT.FDCWD, "/tmp", 0);
 * console.log((st.mode & S.IFMT) === S.IFDIR); // true
 * ```
 */
export const S = {
  IFMT: 0o170000,
  IFSOCK: 0o140000,
  IFLNK: 0o120000,
  IFREG: 0o100000,
  IFBLK: 0o060000,
  IFDIR: 0o040000,
  IFCHR: 0o020000,
  IFIFO: 0o010000,
} as const;

/**
 * mount(2) flags (as bigint: the C type is `unsigned long`).
 *
 * @example
 * ```ts
 * import { MS, systemLibc } from "../mod.ts";
 * const makePrivate = (path: string) => systemLibc().mount("", path, "", MS.PRIVATE, "");
 * console.log(typeof makePrivate);
 * ```
 */
export const MS = {
  RDONLY: 0x1n,
  NOSUID: 0x2n,
  NODEV: 0x4n,
  NOEXEC: 0x8n,
  REMOUNT: 0x20n,
  BIND: 0x1000n,
  REC: 0x4000n,
  SILENT: 0x8000n,
  UNBINDABLE: 0x20000n,
  PRIVATE: 0x40000n,
  SLAVE: 0x80000n,
  SHARED: 0x100000n,
} as const;

/**
 * umount2(2) flags.
 *
 * @example
 * ```ts
 * import { MNT, systemLibc } from "../mod.ts";
 * const lazily = (path: string) => systemLibc().umount2(path, MNT.DETACH);
 * console.log(typeof lazily);
 * ```
 */
export const MNT = { FORCE: 1, DETACH: 2, EXPIRE: 4 } as const;

/**
 * utimensat: leave this time unchanged.
 *
 * @example
 * ```ts
 * import { UTIME_OMIT } from "../mod.ts";
 * // utimensat times: keep the access time, set the modification time to the epoch
 * const times = [{ sec: 0, nsec: UTIME_OMIT }, { sec: 0, nsec: 0 }];
 * console.log(times.length);
 * ```
 */
export const UTIME_OMIT = 0x3ffffffe;

/**
 * getdents64 `d_type` values.
 *
 * @example
 * ```ts
 * import { DT } from "../mod.ts";
 * const isDir = (type: number) => type === DT.DIR;
 * console.log(isDir(4)); // true
 * ```
 */
export const DT = {
  UNKNOWN: 0,
  FIFO: 1,
  CHR: 2,
  DIR: 4,
  BLK: 6,
  REG: 8,
  LNK: 10,
  SOCK: 12,
} as const;

/**
 * What statfs(2) reports.
 *
 * @example
 * ```ts
 * import { type StatFs, systemLibc } from "../mod.ts";
 * const fs: StatFs = systemLibc().statfs("/tmp");
 * console.log(fs.type.toString(16), fs.bavail * fs.blockSize);
 * ```
 */
export interface StatFs {
  /** Filesystem magic (`f_type`), as an unsigned 32-bit number. */
  type: number;
  /** Optimal transfer block size (`f_bsize`). */
  blockSize: number;
  /** Total data blocks (`f_blocks`). */
  blocks: number;
  /** Free blocks (`f_bfree`). */
  bfree: number;
  /** Free blocks available to unprivileged users (`f_bavail`). */
  bavail: number;
  /** Total inodes (`f_files`). */
  files: number;
  /** Free inodes (`f_ffree`). */
  ffree: number;
  /** Maximum name length (`f_namelen`). */
  nameLen: number;
}

/**
 * What statx(2) reports, with nanosecond times.
 *
 * @example
 * ```ts
 * import { AT, type Stat, systemLibc } from "../mod.ts";
 * const st: Stat = systemLibc().fstatat(AT.FDCWD, "/tmp", 0);
 * console.log(st.mode.toString(8), st.uid, st.size);
 * ```
 */
export interface Stat {
  /** Type and permission bits (`st_mode`). */
  mode: number;
  /** Inode number. */
  ino: number;
  /** Major number of the device holding the file. */
  devMajor: number;
  /** Minor number of the device holding the file. */
  devMinor: number;
  /** Hard link count. */
  nlink: number;
  /** Owner user id. */
  uid: number;
  /** Owner group id. */
  gid: number;
  /** Major number of a device file. */
  rdevMajor: number;
  /** Minor number of a device file. */
  rdevMinor: number;
  /** Size in bytes. */
  size: number;
  /** Access time, seconds. */
  atimeSec: number;
  /** Access time, nanoseconds. */
  atimeNsec: number;
  /** Modification time, seconds. */
  mtimeSec: number;
  /** Modification time, nanoseconds. */
  mtimeNsec: number;
  /** Status change time, seconds. */
  ctimeSec: number;
  /** Status change time, nanoseconds. */
  ctimeNsec: number;
}

/**
 * One directory entry from getdents64, with its raw name bytes.
 *
 * @example
 * ```ts
 * import type { DirEntry } from "../mod.ts";
 * const name = (e: DirEntry) => new TextDecoder().decode(e.name);
 * console.log(name({ name: new TextEncoder().encode("etc"), ino: 2, type: 4 })); // etc
 * ```
 */
export interface DirEntry {
  /** The name's raw bytes. */
  name: Uint8Array;
  /** Inode number. */
  ino: number;
  /** A {@linkcode DT} value; `DT.UNKNOWN` on filesystems that do not fill it. */
  type: number;
}

/**
 * The system calls strata uses. Every method is synchronous, returns its value
 * or throws {@linkcode ErrnoError}.
 *
 * @example
 * ```ts
 * import { systemLibc } from "./libc.ts";
 * const libc = systemLibc();
 * console.log(libc.statfs("/tmp").type.toString(16));
 * ```
 */
export interface Libc {
  /** `int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)` */
  mount(source: string, target: string, fstype: string, flags: bigint, data: string): void;
  /** `int umount2(const char *target, int flags)` */
  umount2(target: string, flags: number): void;
  /** `int statfs(const char *path, struct statfs *buf)` */
  statfs(path: PathLike): StatFs;
  /** `int getpagesize(void)` */
  getpagesize(): number;
  /** `int rename(const char *old, const char *new)` */
  rename(oldPath: PathLike, newPath: PathLike): void;
  /** `int openat(int dirfd, const char *path, int flags, mode_t mode)` */
  openat(dirfd: number, path: PathLike, flags: number, mode?: number): number;
  /** `syscall(SYS_openat2, dirfd, path, struct open_how *, sizeof)`; ENOSYS where the kernel lacks it. */
  openat2(dirfd: number, path: PathLike, flags: number, mode: number, resolve: bigint): number;
  /** `int close(int fd)` */
  close(fd: number): void;
  /** `ssize_t read(int fd, void *buf, size_t n)`; reads into `buf[0..n)`. */
  read(fd: number, buf: Uint8Array, n?: number): number;
  /** `ssize_t write(int fd, const void *buf, size_t n)`; loops until all `n` bytes are written. */
  writeAll(fd: number, buf: Uint8Array, n?: number): void;
  /**
   * `ssize_t sendfile(int out, int in, off_t *offset, size_t count)` with a
   * NULL offset (reads from `inFd`'s own position, in the kernel); returns the
   * bytes moved (0 at the end of `inFd`). Optional: a libc wrapper without it
   * makes callers copy through a buffer instead.
   */
  sendfile?(outFd: number, inFd: number, count: number): number;
  /** `statx(dirfd, path, flags, STATX_BASIC_STATS, buf)`; `AT.SYMLINK_NOFOLLOW` for lstat. */
  fstatat(dirfd: number, path: PathLike, flags: number): Stat;
  /** statx of an open fd (AT_EMPTY_PATH). */
  fstat(fd: number): Stat;
  /** `int mkdirat(int dirfd, const char *path, mode_t mode)` */
  mkdirat(dirfd: number, path: PathLike, mode: number): void;
  /** `int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)` */
  mknodat(dirfd: number, path: PathLike, mode: number, major: number, minor: number): void;
  /** `int symlinkat(const char *target, int dirfd, const char *path)` */
  symlinkat(target: PathLike, dirfd: number, path: PathLike): void;
  /** `int linkat(int olddirfd, const char *old, int newdirfd, const char *new, int flags)` */
  linkat(
    oldDirfd: number,
    oldPath: PathLike,
    newDirfd: number,
    newPath: PathLike,
    flags: number,
  ): void;
  /** `int unlinkat(int dirfd, const char *path, int flags)` */
  unlinkat(dirfd: number, path: PathLike, flags: number): void;
  /** `int renameat(int olddirfd, const char *old, int newdirfd, const char *new)` */
  renameat(oldDirfd: number, oldPath: PathLike, newDirfd: number, newPath: PathLike): void;
  /** `int fchownat(int dirfd, const char *path, uid_t, gid_t, int flags)` */
  fchownat(dirfd: number, path: PathLike, uid: number, gid: number, flags: number): void;
  /** `int fchmodat(int dirfd, const char *path, mode_t mode, int flags)` */
  fchmodat(dirfd: number, path: PathLike, mode: number, flags: number): void;
  /** `int fchmod(int fd, mode_t mode)` */
  fchmod(fd: number, mode: number): void;
  /**
   * `int fchown(int fd, uid_t, gid_t)`: cheaper than `fchownat(fd, "", …,
   * AT.EMPTY_PATH)` (no path lookup), but `fd` must be a real open file, not
   * `O.PATH`. Optional so that doubles may leave it out: callers fall back to
   * `fchownat` when it is absent.
   */
  fchown?(fd: number, uid: number, gid: number): void;
  /**
   * `int futimens(int fd, const struct timespec t[2])`: cheaper than
   * `utimensat(fd, "", …, AT.EMPTY_PATH)`, for a real open file (not
   * `O.PATH`). Optional like {@linkcode Libc.fchown}: callers fall back to
   * `utimensat` when it is absent.
   */
  futimens?(
    fd: number,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
  ): void;
  /** `int utimensat(int dirfd, const char *path, const struct timespec t[2], int flags)` */
  utimensat(
    dirfd: number,
    path: PathLike,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
    flags: number,
  ): void;
  /** `ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t n)` */
  readlinkat(dirfd: number, path: PathLike): Uint8Array;
  /** `int lsetxattr(const char *path, const char *name, const void *value, size_t n, int flags)` */
  lsetxattr(path: PathLike, name: string, value: Uint8Array): void;
  /** `int fsetxattr(int fd, const char *name, const void *value, size_t n, int flags)` */
  fsetxattr(fd: number, name: string, value: Uint8Array): void;
  /** `ssize_t lgetxattr(const char *path, const char *name, void *v, size_t n)`; null when absent (ENODATA). */
  lgetxattr(path: PathLike, name: string): Uint8Array | null;
  /** `ssize_t fgetxattr(int fd, const char *name, void *v, size_t n)`; null when absent. */
  fgetxattr(fd: number, name: string): Uint8Array | null;
  /** `ssize_t llistxattr(const char *path, char *list, size_t n)`; names in listing order. */
  llistxattr(path: PathLike): string[];
  /** `ssize_t flistxattr(int fd, char *list, size_t n)` */
  flistxattr(fd: number): string[];
  /** `int lremovexattr(const char *path, const char *name)` */
  lremovexattr(path: PathLike, name: string): void;
  /** All entries of an open directory (getdents64), without `.` and `..`, in kernel order. */
  readdir(fd: number): DirEntry[];
  /** `int fsync(int fd)` */
  fsync(fd: number): void;
  /** `int syncfs(int fd)` */
  syncfs(fd: number): void;
  /** `int ftruncate(int fd, off_t len)` */
  ftruncate(fd: number, length: number): void;
}

// 64-bit parameters (u64, i64, usize) take BigInts. Deno 2.9 accepts plain
// numbers for them as well, but such a call leaves the fast FFI path: about
// 130 ns a call instead of 20 ns with a BigInt (bench/libc_bench.ts shows the
// wrappers; the comparison was measured separately). Their results are
// BigInts.
const SYMBOLS = {
  /** int mount(const char*, const char*, const char*, unsigned long, const void*) */
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  /** int umount2(const char*, int) */
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  /** int statfs(const char*, struct statfs*) */
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  /** int getpagesize(void) */
  getpagesize: { parameters: [], result: "i32" },
  /** int rename(const char*, const char*) */
  rename: { parameters: ["buffer", "buffer"], result: "i32" },
  /** int *__errno_location(void) */
  __errno_location: { parameters: [], result: "pointer" },
  /** int openat(int, const char*, int, mode_t) */
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  /** long syscall(long nr, ...): used for openat2 */
  syscall: { parameters: ["i64", "i64", "buffer", "buffer", "i64"], result: "i64" },
  /** int close(int) */
  close: { parameters: ["i32"], result: "i32" },
  /** ssize_t read(int, void*, size_t) */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int, const void*, size_t) */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int statx(int, const char*, int, unsigned int, struct statx*) */
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  /** int mkdirat(int, const char*, mode_t) */
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int mknodat(int, const char*, mode_t, dev_t) */
  mknodat: { parameters: ["i32", "buffer", "u32", "u64"], result: "i32" },
  /** int symlinkat(const char*, int, const char*) */
  symlinkat: { parameters: ["buffer", "i32", "buffer"], result: "i32" },
  /** int linkat(int, const char*, int, const char*, int) */
  linkat: { parameters: ["i32", "buffer", "i32", "buffer", "i32"], result: "i32" },
  /** int unlinkat(int, const char*, int) */
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** int renameat(int, const char*, int, const char*) */
  renameat: { parameters: ["i32", "buffer", "i32", "buffer"], result: "i32" },
  /** int fchownat(int, const char*, uid_t, gid_t, int) */
  fchownat: { parameters: ["i32", "buffer", "u32", "u32", "i32"], result: "i32" },
  /** int fchmodat(int, const char*, mode_t, int) */
  fchmodat: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  /** int fchmod(int, mode_t) */
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  /** int fchown(int, uid_t, gid_t) */
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
  /** int futimens(int, const struct timespec[2]) */
  futimens: { parameters: ["i32", "buffer"], result: "i32" },
  /** int utimensat(int, const char*, const struct timespec[2], int) */
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  /** ssize_t readlinkat(int, const char*, char*, size_t) */
  readlinkat: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  /** int lsetxattr(const char*, const char*, const void*, size_t, int) */
  lsetxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  /** int fsetxattr(int, const char*, const void*, size_t, int) */
  fsetxattr: { parameters: ["i32", "buffer", "buffer", "usize", "i32"], result: "i32" },
  /** ssize_t lgetxattr(const char*, const char*, void*, size_t) */
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  /** ssize_t fgetxattr(int, const char*, void*, size_t) */
  fgetxattr: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  /** ssize_t llistxattr(const char*, char*, size_t) */
  llistxattr: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  /** ssize_t flistxattr(int, char*, size_t) */
  flistxattr: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int lremovexattr(const char*, const char*) */
  lremovexattr: { parameters: ["buffer", "buffer"], result: "i32" },
  /** ssize_t getdents64(int, void*, size_t) */
  getdents64: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int fsync(int) */
  fsync: { parameters: ["i32"], result: "i32" },
  /** int syncfs(int) */
  syncfs: { parameters: ["i32"], result: "i32" },
  /** int ftruncate(int, off_t) */
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  /** ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count) */
  sendfile: { parameters: ["i32", "i32", "pointer", "usize"], result: "isize" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Linux syscall number of openat2 (same on x86_64 and aarch64). */
const SYS_OPENAT2 = 437n;
const STATX_BASIC_STATS = 0x7ff;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Scratch buffers for NUL-terminated strings: one per argument position. */
class CStrings {
  #slots: Uint8Array[] = [
    new Uint8Array(4096),
    new Uint8Array(4096),
    new Uint8Array(256),
    new Uint8Array(4096),
  ];

  /** `p` as a NUL-terminated C string in slot `i` (valid until the next call using slot `i`). */
  at(i: number, p: PathLike): Uint8Array {
    let buf = this.#slots[i];
    if (p.length === 0) {
      buf[0] = 0;
      return buf;
    }
    if (typeof p === "string") {
      // UTF-8 needs at most 3 bytes per UTF-16 unit.
      if (buf.length < p.length * 3 + 1) buf = this.#slots[i] = new Uint8Array(p.length * 3 + 1);
      const { written } = encoder.encodeInto(p, buf);
      buf[written] = 0;
      return buf;
    }
    if (buf.length < p.length + 1) buf = this.#slots[i] = new Uint8Array(p.length * 2 + 1);
    buf.set(p);
    buf[p.length] = 0;
    return buf;
  }

  #name = new Uint8Array(256);
  #nameText: string | null = null;

  /**
   * An xattr name as a C string, in a slot of its own. Callers ask for the
   * same few names over and over, so the last one is encoded only once.
   */
  name(s: string): Uint8Array {
    if (s === this.#nameText) return this.#name;
    if (this.#name.length < s.length * 3 + 1) this.#name = new Uint8Array(s.length * 3 + 1);
    const { written } = encoder.encodeInto(s, this.#name);
    this.#name[written] = 0;
    this.#nameText = s;
    return this.#name;
  }
}

function pathText(p: PathLike): string {
  return typeof p === "string" ? p : decoder.decode(p);
}

/*
 * 64-bit fields are read as two 32-bit halves: the one rounding of the sum
 * gives the same number as Number(getBigUint64(...)) without making a BigInt.
 */

/** The unsigned little-endian 64-bit field at `off`, as a number. */
function u64(v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * 0x1_0000_0000;
}

/** The signed little-endian 64-bit field at `off`, as a number. */
function i64(v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getInt32(off + 4, true) * 0x1_0000_0000;
}

/** Names short enough that building the string by hand beats TextDecoder. */
const SHORT_NAME = 12;

/** `b[start..end)` as text: by hand when short and ASCII, else UTF-8 decoded. */
function bytesText(b: Uint8Array, start: number, end: number): string {
  if (end - start <= SHORT_NAME) {
    let s = "";
    let i = start;
    for (; i < end; i++) {
      const c = b[i];
      if (c >= 0x80) break;
      s += String.fromCharCode(c);
    }
    if (i === end) return s;
  }
  return decoder.decode(b.subarray(start, end));
}

class SystemLibc implements Libc {
  #s: Symbols;
  #errnoView: Deno.UnsafePointerView;
  #c = new CStrings();
  #statxBuf = new Uint8Array(256);
  #statxView = new DataView(this.#statxBuf.buffer);
  #statfsBuf = new Uint8Array(128);
  #statfsView = new DataView(this.#statfsBuf.buffer);
  #times = new BigInt64Array(4);
  #timesBytes = new Uint8Array(this.#times.buffer);
  #how = new BigUint64Array(3);
  #howBytes = new Uint8Array(this.#how.buffer);
  #dents = new Uint8Array(64 * 1024);
  #dentsView = new DataView(this.#dents.buffer);
  #xattr = new Uint8Array(64 * 1024);
  #link = new Uint8Array(4097);

  constructor(lib: Deno.DynamicLibrary<typeof SYMBOLS>) {
    this.#s = lib.symbols;
    const p = this.#s.__errno_location();
    if (p === null) throw new Error("__errno_location returned NULL");
    this.#errnoView = new Deno.UnsafePointerView(p);
  }

  #fail(syscall: string, path: PathLike = ""): never {
    const errno = this.#errnoView.getInt32();
    throw new ErrnoError(errno, syscall, pathText(path));
  }

  mount(source: string, target: string, fstype: string, flags: bigint, data: string): void {
    const c = this.#c;
    const r = this.#s.mount(
      c.at(0, source),
      c.at(1, target),
      c.at(2, fstype),
      flags,
      c.at(3, data),
    );
    if (r !== 0) this.#fail("mount", target);
  }

  umount2(target: string, flags: number): void {
    if (this.#s.umount2(this.#c.at(0, target), flags) !== 0) this.#fail("umount2", target);
  }

  statfs(path: PathLike): StatFs {
    if (this.#s.statfs(this.#c.at(0, path), this.#statfsBuf) !== 0) this.#fail("statfs", path);
    const v = this.#statfsView;
    return {
      type: v.getUint32(0, true),
      blockSize: u64(v, 8),
      blocks: u64(v, 16),
      bfree: u64(v, 24),
      bavail: u64(v, 32),
      files: u64(v, 40),
      ffree: u64(v, 48),
      nameLen: u64(v, 64),
    };
  }

  getpagesize(): number {
    return this.#s.getpagesize();
  }

  rename(oldPath: PathLike, newPath: PathLike): void {
    if (this.#s.rename(this.#c.at(0, oldPath), this.#c.at(1, newPath)) !== 0) {
      this.#fail("rename", `${pathText(oldPath)} ${pathText(newPath)}`);
    }
  }

  openat(dirfd: number, path: PathLike, flags: number, mode = 0): number {
    const fd = this.#s.openat(dirfd, this.#c.at(0, path), flags | O.CLOEXEC, mode);
    if (fd < 0) this.#fail("openat", path);
    return fd;
  }

  openat2(dirfd: number, path: PathLike, flags: number, mode: number, resolve: bigint): number {
    const how = this.#how;
    how[0] = BigInt(flags | O.CLOEXEC);
    how[1] = BigInt(mode);
    how[2] = resolve;
    const fd = this.#s.syscall(
      SYS_OPENAT2,
      BigInt(dirfd),
      this.#c.at(0, path),
      this.#howBytes,
      24n,
    );
    if (fd < 0n) this.#fail("openat2", path);
    return Number(fd);
  }

  close(fd: number): void {
    if (this.#s.close(fd) !== 0) this.#fail("close");
  }

  read(fd: number, buf: Uint8Array, n = buf.length): number {
    for (;;) {
      const r = this.#s.read(fd, buf, BigInt(n));
      if (r >= 0) return Number(r);
      if (this.#errnoView.getInt32() !== Errno.EINTR) this.#fail("read");
    }
  }

  writeAll(fd: number, buf: Uint8Array, n = buf.length): void {
    let off = 0;
    while (off < n) {
      const chunk = off === 0 ? buf : buf.subarray(off);
      const r = this.#s.write(fd, chunk, BigInt(n - off));
      if (r < 0) {
        if (this.#errnoView.getInt32() === Errno.EINTR) continue;
        this.#fail("write");
      }
      off += Number(r);
    }
  }

  sendfile(outFd: number, inFd: number, count: number): number {
    for (;;) {
      const r = this.#s.sendfile(outFd, inFd, null, BigInt(count));
      if (r >= 0) return Number(r);
      if (this.#errnoView.getInt32() !== Errno.EINTR) this.#fail("sendfile");
    }
  }

  #stat(dirfd: number, path: PathLike, flags: number, syscall: string): Stat {
    if (this.#s.statx(dirfd, this.#c.at(0, path), flags, STATX_BASIC_STATS, this.#statxBuf) !== 0) {
      this.#fail(syscall, path);
    }
    const v = this.#statxView;
    return {
      nlink: v.getUint32(16, true),
      uid: v.getUint32(20, true),
      gid: v.getUint32(24, true),
      mode: v.getUint16(28, true),
      ino: u64(v, 32),
      size: u64(v, 40),
      atimeSec: i64(v, 64),
      atimeNsec: v.getUint32(72, true),
      ctimeSec: i64(v, 96),
      ctimeNsec: v.getUint32(104, true),
      mtimeSec: i64(v, 112),
      mtimeNsec: v.getUint32(120, true),
      rdevMajor: v.getUint32(128, true),
      rdevMinor: v.getUint32(132, true),
      devMajor: v.getUint32(136, true),
      devMinor: v.getUint32(140, true),
    };
  }

  fstatat(dirfd: number, path: PathLike, flags: number): Stat {
    return this.#stat(dirfd, path, flags, "statx");
  }

  fstat(fd: number): Stat {
    return this.#stat(fd, "", AT.EMPTY_PATH, "fstat");
  }

  mkdirat(dirfd: number, path: PathLike, mode: number): void {
    if (this.#s.mkdirat(dirfd, this.#c.at(0, path), mode) !== 0) this.#fail("mkdirat", path);
  }

  mknodat(dirfd: number, path: PathLike, mode: number, major: number, minor: number): void {
    // glibc makedev
    const maj = BigInt(major), min = BigInt(minor);
    const dev = ((maj & 0xfffn) << 8n) | ((maj & ~0xfffn) << 32n) | (min & 0xffn) |
      ((min & ~0xffn) << 12n);
    if (this.#s.mknodat(dirfd, this.#c.at(0, path), mode, dev) !== 0) this.#fail("mknodat", path);
  }

  symlinkat(target: PathLike, dirfd: number, path: PathLike): void {
    if (this.#s.symlinkat(this.#c.at(1, target), dirfd, this.#c.at(0, path)) !== 0) {
      this.#fail("symlinkat", path);
    }
  }

  linkat(
    oldDirfd: number,
    oldPath: PathLike,
    newDirfd: number,
    newPath: PathLike,
    flags: number,
  ): void {
    const r = this.#s.linkat(
      oldDirfd,
      this.#c.at(1, oldPath),
      newDirfd,
      this.#c.at(0, newPath),
      flags,
    );
    if (r !== 0) this.#fail("linkat", newPath);
  }

  unlinkat(dirfd: number, path: PathLike, flags: number): void {
    if (this.#s.unlinkat(dirfd, this.#c.at(0, path), flags) !== 0) this.#fail("unlinkat", path);
  }

  renameat(oldDirfd: number, oldPath: PathLike, newDirfd: number, newPath: PathLike): void {
    const r = this.#s.renameat(oldDirfd, this.#c.at(0, oldPath), newDirfd, this.#c.at(1, newPath));
    if (r !== 0) this.#fail("renameat", oldPath);
  }

  fchownat(dirfd: number, path: PathLike, uid: number, gid: number, flags: number): void {
    if (this.#s.fchownat(dirfd, this.#c.at(0, path), uid, gid, flags) !== 0) {
      this.#fail("fchownat", path);
    }
  }

  fchmodat(dirfd: number, path: PathLike, mode: number, flags: number): void {
    if (this.#s.fchmodat(dirfd, this.#c.at(0, path), mode, flags) !== 0) {
      this.#fail("fchmodat", path);
    }
  }

  fchmod(fd: number, mode: number): void {
    if (this.#s.fchmod(fd, mode) !== 0) this.#fail("fchmod");
  }

  fchown(fd: number, uid: number, gid: number): void {
    if (this.#s.fchown(fd, uid, gid) !== 0) this.#fail("fchown");
  }

  /** The two timespecs in the shared scratch buffer. */
  #setTimes(atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): Uint8Array {
    const t = this.#times;
    t[0] = BigInt(atimeSec);
    t[1] = BigInt(atimeNsec);
    t[2] = BigInt(mtimeSec);
    t[3] = BigInt(mtimeNsec);
    return this.#timesBytes;
  }

  futimens(
    fd: number,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
  ): void {
    const t = this.#setTimes(atimeSec, atimeNsec, mtimeSec, mtimeNsec);
    if (this.#s.futimens(fd, t) !== 0) this.#fail("futimens");
  }

  utimensat(
    dirfd: number,
    path: PathLike,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
    flags: number,
  ): void {
    const t = this.#setTimes(atimeSec, atimeNsec, mtimeSec, mtimeNsec);
    const r = this.#s.utimensat(dirfd, this.#c.at(0, path), t, flags);
    if (r !== 0) this.#fail("utimensat", path);
  }

  readlinkat(dirfd: number, path: PathLike): Uint8Array {
    let buf = this.#link;
    for (;;) {
      const r = Number(this.#s.readlinkat(dirfd, this.#c.at(0, path), buf, BigInt(buf.length)));
      if (r < 0) this.#fail("readlinkat", path);
      if (r < buf.length) return buf.slice(0, r);
      buf = this.#link = new Uint8Array(buf.length * 2);
    }
  }

  lsetxattr(path: PathLike, name: string, value: Uint8Array): void {
    const r = this.#s.lsetxattr(
      this.#c.at(0, path),
      this.#c.name(name),
      value,
      BigInt(value.length),
      0,
    );
    if (r !== 0) this.#fail("lsetxattr", path);
  }

  fsetxattr(fd: number, name: string, value: Uint8Array): void {
    if (this.#s.fsetxattr(fd, this.#c.name(name), value, BigInt(value.length), 0) !== 0) {
      this.#fail("fsetxattr", name);
    }
  }

  /**
   * After an xattr call returned -1: false for ENODATA (absent), true after
   * growing the buffer for ERANGE (call again), else throws.
   */
  #xattrRetry(syscall: string, path: PathLike): boolean {
    const e = this.#errnoView.getInt32();
    if (e === Errno.ENODATA) return false;
    if (e !== Errno.ERANGE) throw new ErrnoError(e, syscall, pathText(path));
    this.#xattr = new Uint8Array(this.#xattr.length * 4);
    return true;
  }

  lgetxattr(path: PathLike, name: string): Uint8Array | null {
    const p = this.#c.at(0, path), n = this.#c.name(name);
    for (;;) {
      const buf = this.#xattr;
      const r = this.#s.lgetxattr(p, n, buf, BigInt(buf.length));
      if (r >= 0) return buf.slice(0, Number(r));
      if (!this.#xattrRetry("lgetxattr", path)) return null;
    }
  }

  fgetxattr(fd: number, name: string): Uint8Array | null {
    const n = this.#c.name(name);
    for (;;) {
      const buf = this.#xattr;
      const r = this.#s.fgetxattr(fd, n, buf, BigInt(buf.length));
      if (r >= 0) return buf.slice(0, Number(r));
      if (!this.#xattrRetry("fgetxattr", name)) return null;
    }
  }

  /** The NUL-separated names in `#xattr[0..n)`. */
  #names(n: number): string[] {
    const out: string[] = [];
    const bytes = this.#xattr;
    let start = 0;
    for (let i = 0; i < n; i++) {
      if (bytes[i] === 0) {
        if (i > start) out.push(bytesText(bytes, start, i));
        start = i + 1;
      }
    }
    return out;
  }

  llistxattr(path: PathLike): string[] {
    const p = this.#c.at(0, path);
    for (;;) {
      const buf = this.#xattr;
      const r = this.#s.llistxattr(p, buf, BigInt(buf.length));
      if (r >= 0) return r === 0n ? [] : this.#names(Number(r));
      if (!this.#xattrRetry("llistxattr", path)) return [];
    }
  }

  flistxattr(fd: number): string[] {
    for (;;) {
      const buf = this.#xattr;
      const r = this.#s.flistxattr(fd, buf, BigInt(buf.length));
      if (r >= 0) return r === 0n ? [] : this.#names(Number(r));
      if (!this.#xattrRetry("flistxattr", "")) return [];
    }
  }

  lremovexattr(path: PathLike, name: string): void {
    if (this.#s.lremovexattr(this.#c.at(0, path), this.#c.name(name)) !== 0) {
      this.#fail("lremovexattr", path);
    }
  }

  readdir(fd: number): DirEntry[] {
    const out: DirEntry[] = [];
    const buf = this.#dents, v = this.#dentsView;
    for (;;) {
      const n = Number(this.#s.getdents64(fd, buf, BigInt(buf.length)));
      if (n < 0) this.#fail("getdents64");
      if (n === 0) return out;
      // One copy of the batch; the names are views into it.
      const names = buf.slice(0, n);
      let off = 0;
      while (off < n) {
        const reclen = v.getUint16(off + 16, true);
        const type = buf[off + 18];
        let end = off + 19;
        while (buf[end] !== 0) end++;
        const len = end - off - 19;
        const isDot = (len === 1 && buf[off + 19] === 0x2e) ||
          (len === 2 && buf[off + 19] === 0x2e && buf[off + 20] === 0x2e);
        if (!isDot) {
          out.push({ name: names.subarray(off + 19, end), ino: u64(v, off), type });
        }
        off += reclen;
      }
    }
  }

  fsync(fd: number): void {
    if (this.#s.fsync(fd) !== 0) this.#fail("fsync");
  }

  syncfs(fd: number): void {
    if (this.#s.syncfs(fd) !== 0) this.#fail("syncfs");
  }

  ftruncate(fd: number, length: number): void {
    if (this.#s.ftruncate(fd, BigInt(length)) !== 0) this.#fail("ftruncate");
  }
}

let cached: Libc | undefined;

/**
 * Thrown when libc cannot be opened because FFI is not permitted.
 *
 * @example
 * ```ts
 * import { FfiPermissionError, systemLibc } from "../mod.ts";
 * try {
 *   systemLibc();
 * } catch (e) {
 *   if (e instanceof FfiPermissionError) console.error(e.message); // run with --allow-ffi
 *   else throw e;
 * }
 * ```
 */
export class FfiPermissionError extends Error {
  /** Wrap the permission error Deno raised. */
  constructor(options?: ErrorOptions) {
    super(
      "strata needs FFI to reach the kernel (mount, statfs, ...): run with --allow-ffi (and --allow-read --allow-write)",
      options,
    );
    this.name = "FfiPermissionError";
  }
}

/** Whether FFI (for libc) is granted now; asks without prompting. */
function ffiGranted(): boolean {
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state === "granted") return true;
    return Deno.permissions.querySync({ name: "ffi", path: "libc.so.6" }).state === "granted";
  } catch {
    return true; // cannot tell: let dlopen decide
  }
}

/**
 * The real libc, opened on first use and shared afterwards.
 *
 * @example
 * ```ts
 * import { systemLibc } from "./libc.ts";
 * console.log(systemLibc().getpagesize()); // 4096 on x86_64
 * ```
 */
export function systemLibc(): Libc {
  if (cached) return cached;
  if (!ffiGranted()) throw new FfiPermissionError(); // never a permission prompt
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen("libc.so.6", SYMBOLS);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new FfiPermissionError({ cause: e });
    }
    throw e;
  }
  cached = new SystemLibc(lib);
  return cached;
}

/**
 * True when `err` is an {@linkcode ErrnoError} with errno `errno`.
 *
 * @example
 * ```ts
 * import { Errno, isErrno, systemLibc } from "../mod.ts";
 * try {
 *   systemLibc().mkdirat(-100, "/tmp", 0o755);
 * } catch (e) {
 *   console.log(isErrno(e, Errno.EEXIST)); // true
 * }
 * ```
 */
export function isErrno(err: unknown, errno: number): boolean {
  return err instanceof ErrnoError && err.errno === errno;
}

/**
 * Read a small file (such as `/proc/self/mountinfo`) through libc. Deno lets
 * a program read `/proc` only with `--allow-all`; through FFI the same read
 * needs just `--allow-ffi`, which strata needs anyway.
 *
 * @example
 * ```ts
 * import { readTextFileViaLibc } from "./libc.ts";
 * console.log(readTextFileViaLibc("/proc/filesystems").includes("overlay"));
 * ```
 */
export function readTextFileViaLibc(path: string, libc: Libc = systemLibc()): string {
  const fd = libc.openat(AT.FDCWD, path, O.RDONLY);
  try {
    // One buffer for every call (grown when a file needs more): mountinfo is
    // read several times per create/remove, and fresh memory costs a page
    // fault per 4 KiB here.
    let buf = textFileBuffer;
    let total = 0;
    for (;;) {
      if (total === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = textFileBuffer = bigger;
      }
      const n = libc.read(fd, buf.subarray(total));
      if (n === 0) break;
      total += n;
    }
    return decoder.decode(buf.subarray(0, total));
  } finally {
    libc.close(fd);
  }
}

/** The buffer {@linkcode readTextFileViaLibc} reads into (never handed out). */
let textFileBuffer = new Uint8Array(64 * 1024);

/**
 * The effective uid of this process (from `/proc/self/status`, read through
 * libc, so it needs `--allow-ffi` only).
 *
 * @example
 * ```ts
 * import { effectiveUid } from "./libc.ts";
 * console.log(effectiveUid() === 0 ? "root" : "not root");
 * ```
 */
export function effectiveUid(libc: Libc = systemLibc()): number {
  const m = /^Uid:\s+\d+\s+(\d+)/m.exec(readTextFileViaLibc("/proc/self/status", libc));
  if (!m) throw new Error("no Uid line in /proc/self/status");
  return Number(m[1]);
}
