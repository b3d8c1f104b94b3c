/**
 * `Root`: a directory handle through which every file operation of an
 * extraction goes, each name resolved by the kernel inside the directory, as
 * if the directory were `/` (like Go's `os.Root` or libpathrs).
 *
 * - Names are first cleaned lexically, with the root as `/`: empty and `.`
 *   components dropped, `..` removed together with the component before it
 *   and clamped at the root (so `../x` and `/../x` both mean `x`), exactly
 *   what a process chrooted into the directory sees for `filepath.Clean`ed
 *   names.
 * - The directory part of a name is then opened by the kernel with
 *   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks met on the
 *   way resolve inside the root (absolute targets from the root, `..` clamped
 *   at it). On kernels without openat2 (ENOSYS, before 5.6), or when forced,
 *   a component-by-component walk with `O_PATH | O_NOFOLLOW | O_DIRECTORY`
 *   resolves the symlinks itself the same way (40-link limit, ELOOP).
 * - The final component is never followed: every operation is an `*at` call
 *   on the parent's descriptor with `AT_SYMLINK_NOFOLLOW` / `O_NOFOLLOW`, or an
 *   `l*` xattr call on `/proc/self/fd/<parent>/<name>`.
 *
 * The descriptors of recently used parent directories are cached (tars are
 * mostly sorted, so consecutive entries share a directory); the cache is
 * dropped whenever an operation could change what a cached name resolves to
 * (removing or renaming anything but a regular file).
 *
 * Errors are {@linkcode ErrnoError}s whose `path` is the cleaned in-root name
 * of the operation.
 *
 * @module
 */

import {
  AT,
  Errno,
  ErrnoError,
  type Libc,
  O,
  type PathLike,
  RESOLVE,
  S,
  type Stat,
  systemLibc,
} from "../../ffi/libc.ts";

export type { Libc, PathLike, Stat } from "../../ffi/libc.ts";

const SLASH = 0x2f;
const DOT = 0x2e;

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = a.length - 1; i >= 0; i--) if (a[i] !== b[i]) return false;
  return true;
}
/** Symlinks followed in one resolution before ELOOP (the kernel's limit). */
const MAX_LINKS = 40;
/** Cached parent-directory descriptors. */
const CACHE_MAX = 16;
/** openat2 retries when the kernel reports a concurrent rename (EAGAIN). */
const EAGAIN_RETRIES = 16;
const IN_ROOT = RESOLVE.IN_ROOT | RESOLVE.NO_MAGICLINKS;

/** Why a directory could not be resolved, for errors caused by a link out of the root. */
const LINK_NOTES = new WeakMap<Error, string>();

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** How a {@linkcode Root} resolves the directory part of names. */
export type RootResolver = "openat2" | "walk";

/** Options of {@linkcode Root}. */
export interface RootOptions {
  /** The system calls (default: the real libc). */
  libc?: Libc;
  /** Use the component walk even where openat2 exists (tests run both). */
  forceFallback?: boolean;
}

/**
 * Clean `p` lexically as a name under a root: drop empty and `.`
 * components, resolve `..` against the preceding component, clamped at the
 * root. The result has no leading or trailing `/`; it is empty for the root
 * itself. Returns `p` itself (no copy) when it is already clean.
 *
 * @example
 * ```ts
 * import { cleanInRoot } from "./root.ts";
 * const t = (s: string) => new TextDecoder().decode(cleanInRoot(s));
 * console.log(t("/../a//b/./c/../d/")); // a/b/d
 * console.log(t("../..").length); // 0 (the root)
 * ```
 */
export function cleanInRoot(p: PathLike): Uint8Array {
  const b = typeof p === "string" ? encoder.encode(p) : p;
  if (b.length > 0 && b[0] !== SLASH) {
    let start = 0;
    let clean = true;
    for (let i = 0; i <= b.length; i++) {
      if (i !== b.length && b[i] !== SLASH) continue;
      const len = i - start;
      if (len === 0) {
        // One trailing slash is the only empty component a clean name has.
        if (i === b.length) return b.subarray(0, i - 1);
        clean = false;
        break;
      }
      if (b[start] === DOT && (len === 1 || (len === 2 && b[start + 1] === DOT))) {
        clean = false;
        break;
      }
      start = i + 1;
    }
    if (clean) return b;
  }
  const parts: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= b.length; i++) {
    if (i !== b.length && b[i] !== SLASH) continue;
    const len = i - start;
    if (len === 0 || (len === 1 && b[start] === DOT)) {
      // skip
    } else if (len === 2 && b[start] === DOT && b[start + 1] === DOT) {
      parts.pop();
    } else {
      parts.push(b.subarray(start, i));
    }
    start = i + 1;
  }
  return joinParts(parts);
}

function joinParts(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 0) return EMPTY;
  if (parts.length === 1) return parts[0];
  let n = parts.length - 1;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) out[off++] = SLASH;
    out.set(parts[i], off);
    off += parts[i].length;
  }
  return out;
}

/**
 * A byte string as a JS string with one char per byte: a lossless map key
 * for names that need not be UTF-8.
 *
 * @example
 * ```ts
 * import { byteKey } from "./root.ts";
 * console.log(byteKey(new Uint8Array([0x61, 0xff]))); // "a\u00ff"
 * ```
 */
export function byteKey(b: Uint8Array): string {
  if (b.length <= 8192) return String.fromCharCode.apply(null, b as unknown as number[]);
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 8192) as unknown as number[]);
  }
  return s;
}

/** A cached directory: its descriptor, and its mode and group as of `epoch`. */
interface CachedDir {
  fd: number;
  mode: number;
  gid: number;
  /** Whether the directory has a default ACL (new entries' modes then ignore the umask). */
  acl: boolean;
  epoch: number;
}

const DOT_NAME = new Uint8Array([DOT]);
const DEFAULT_ACL = "system.posix_acl_default";

const S_ISGID = 0o2000;

/** A cleaned name split into its directory part and final component. */
interface Target {
  /** Directory part (empty: the root). */
  dir: Uint8Array;
  /** Final component (never empty, `.` or `..`). */
  name: Uint8Array;
  /** The whole cleaned name, for messages. */
  full: Uint8Array;
}

function isDots(b: Uint8Array, start: number, end: number): 0 | 1 | 2 {
  const len = end - start;
  if (len === 1 && b[start] === DOT) return 1;
  if (len === 2 && b[start] === DOT && b[start + 1] === DOT) return 2;
  return 0;
}

/**
 * A directory opened as the root of every name passed to its methods.
 * Methods take names relative to the root (`string` or raw bytes); leading
 * `/` and `..` cannot leave it, nor can symlinks.
 *
 * @example
 * ```ts
 * import { Root } from "./root.ts";
 * const dir = Deno.makeTempDirSync();
 * const root = new Root(dir);
 * try {
 *   root.symlink("/etc", "escape");     // a symlink pointing "outside"
 *   root.mkdirAll("escape/app", 0o755); // lands in <dir>/etc/app
 *   console.log(Deno.statSync(`${dir}/etc/app`).isDirectory); // true
 * } finally {
 *   root.close();
 * }
 * ```
 */
export class Root {
  /** The directory, as given. */
  readonly path: string;
  /** An `O_PATH` descriptor of the directory. */
  readonly fd: number;
  #libc: Libc;
  #resolver: RootResolver;
  #cache = new Map<string, CachedDir>();
  #lastKey = "";
  /** The last directory looked up (a copy of its bytes) and its entry: the fast path. */
  #lastDir: Uint8Array | null = null;
  #lastEntry: CachedDir | null = null;
  #rootEntry: CachedDir;
  /** Bumped by every chmod/chown through the root: cached modes and groups are re-read. */
  #epoch = 1;
  /** Set while a removal runs: the cache is dropped when the operation ends. */
  #dirty = false;
  #closed = false;
  #procPrefix = new Map<number, Uint8Array>();

  /** Open `path` (which must be a directory; symlinks in `path` itself are followed). */
  constructor(path: string, options: RootOptions = {}) {
    this.#libc = options.libc ?? systemLibc();
    this.path = path;
    this.fd = this.#libc.openat(AT.FDCWD, path, O.PATH | O.DIRECTORY);
    this.#resolver = options.forceFallback ? "walk" : "openat2";
    this.#rootEntry = { fd: this.fd, mode: 0, gid: 0, acl: false, epoch: 0 };
  }

  /** How directory parts are resolved: the kernel's openat2, or the component walk. */
  get resolver(): RootResolver {
    return this.#resolver;
  }

  /** Close every descriptor the root holds. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.invalidate();
    this.#libc.close(this.fd);
  }

  /**
   * Drop the cached parent-directory descriptors. Root's own methods call
   * it when needed; callers that change the tree behind the root's back
   * (through a descriptor it returned) call it too.
   */
  invalidate(): void {
    this.#dirty = false;
    for (const e of this.#cache.values()) this.#libc.close(e.fd);
    this.#cache.clear();
    this.#lastKey = "";
    this.#lastDir = null;
    this.#lastEntry = null;
  }

  // ---- resolution -------------------------------------------------------

  #flush(): void {
    if (this.#dirty) this.invalidate();
  }

  #split(p: PathLike): Target | null {
    const full = cleanInRoot(p);
    if (full.length === 0) return null;
    const slash = full.lastIndexOf(SLASH);
    if (slash < 0) return { dir: EMPTY, name: full, full };
    return { dir: full.subarray(0, slash), name: full.subarray(slash + 1), full };
  }

  #target(p: PathLike, syscall: string): Target {
    const t = this.#split(p);
    if (t === null) throw new ErrnoError(Errno.EINVAL, syscall, "/");
    return t;
  }

  /** A descriptor of the directory `dir` (cleaned), owned by the cache or the root. */
  #dirFd(dir: Uint8Array): number {
    return this.#dirEntry(dir).fd;
  }

  /** The cache entry of the directory `dir` (cleaned), resolving it on a miss. */
  #dirEntry(dir: Uint8Array): CachedDir {
    if (dir.length === 0) return this.#rootEntry;
    const last = this.#lastDir;
    if (last !== null && last.length === dir.length && bytesEqual(last, dir)) {
      return this.#lastEntry!;
    }
    const key = byteKey(dir);
    let entry = this.#cache.get(key);
    if (entry !== undefined) {
      if (this.#lastKey !== key) {
        this.#cache.delete(key);
        this.#cache.set(key, entry);
      }
    } else {
      const fd = this.#resolveDir(dir);
      if (this.#cache.size >= CACHE_MAX) {
        const oldest = this.#cache.keys().next().value as string;
        this.#libc.close(this.#cache.get(oldest)!.fd);
        this.#cache.delete(oldest);
      }
      entry = { fd, mode: 0, gid: 0, acl: false, epoch: 0 };
      this.#cache.set(key, entry);
    }
    this.#lastKey = key;
    this.#lastDir = dir.slice();
    this.#lastEntry = entry;
    return entry;
  }

  /**
   * What a new entry at `p` gets from its directory when this process
   * creates it: the directory's group if the directory is setgid (and, for
   * a new directory, the setgid bit), else the process's own group; and
   * whether a default ACL (not the umask) decides its mode. Lets a caller
   * skip a chown or chmod that would change nothing. The directory's mode,
   * group and ACL presence are cached with its descriptor and re-read after
   * any chmod/chown made through the root.
   */
  inherited(p: PathLike): { setgid: boolean; gid: number; defaultAcl: boolean } {
    const t = this.#target(p, "statx");
    let e: CachedDir;
    try {
      e = this.#dirEntry(t.dir);
      if (e.epoch !== this.#epoch) {
        const st = this.#libc.fstat(e.fd);
        e.mode = st.mode;
        e.gid = st.gid;
        e.acl = this.#hasDefaultAcl(e.fd);
        e.epoch = this.#epoch;
      }
    } catch (err) {
      this.#rethrow(err, t.full);
    }
    const setgid = (e.mode & S_ISGID) !== 0;
    return { setgid, gid: setgid ? e.gid : -1, defaultAcl: e.acl };
  }

  #hasDefaultAcl(fd: number): boolean {
    try {
      // "<fd>/." is the directory itself (the magic link is not the final component).
      return this.#libc.lgetxattr(this.#procPath(fd, DOT_NAME), DEFAULT_ACL) !== null;
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP) return false;
      throw e;
    }
  }

  #resolveDir(dir: Uint8Array): number {
    try {
      return this.#resolveDirOnce(dir);
    } catch (e) {
      const n = e instanceof ErrnoError ? e.errno : undefined;
      if (n !== Errno.ENOENT && n !== Errno.ENOTDIR && n !== Errno.ELOOP) throw e;
      const note = this.#escapingLink(dir);
      if (note === undefined) throw e;
      const err = new ErrnoError(n, (e as ErrnoError).syscall, `${decoder.decode(dir)} (${note})`, {
        cause: e,
      });
      LINK_NOTES.set(err, note);
      throw err;
    }
  }

  /**
   * Why resolving `dir` failed, when the reason is a symbolic link on the way
   * that points outside the root (absolute, or climbing above it with `..`):
   * such a link is resolved inside the root, where its target usually does
   * not exist, and a bare ENOENT would hide that. Only the root's own
   * directories are looked at; the search stops at the first link.
   */
  #escapingLink(dir: Uint8Array): string | undefined {
    const parts = decoder.decode(dir).split("/").filter((c) => c !== "" && c !== ".");
    let depth = 0;
    for (let i = 0; i < parts.length; i++) {
      if (parts[i] === "..") {
        depth = Math.max(0, depth - 1);
        continue;
      }
      const prefix = parts.slice(0, i + 1).join("/");
      let st;
      try {
        st = this.#libc.fstatat(this.fd, prefix, AT.SYMLINK_NOFOLLOW);
      } catch {
        return undefined;
      }
      if ((st.mode & S.IFMT) !== S.IFLNK) {
        depth++;
        continue;
      }
      const target = decoder.decode(this.#libc.readlinkat(this.fd, prefix));
      let d = depth, escapes = target.startsWith("/");
      for (const c of target.split("/")) {
        if (c === "..") d--;
        else if (c !== "" && c !== ".") d++;
        if (d < 0) escapes = true;
      }
      if (!escapes) return undefined;
      return `${JSON.stringify(prefix)} is a symbolic link to ${
        JSON.stringify(target)
      }, which points outside the layer`;
    }
    return undefined;
  }

  #resolveDirOnce(dir: Uint8Array): number {
    if (this.#resolver === "openat2") {
      for (let attempt = 0;; attempt++) {
        try {
          return this.#libc.openat2(this.fd, dir, O.PATH | O.DIRECTORY, 0, IN_ROOT);
        } catch (e) {
          if (!(e instanceof ErrnoError)) throw e;
          if (e.errno === Errno.ENOSYS) {
            this.#resolver = "walk";
            break;
          }
          if (e.errno !== Errno.EAGAIN || attempt >= EAGAIN_RETRIES) throw e;
        }
      }
    }
    return this.#walk(dir);
  }

  /**
   * Resolve `dir` one component at a time from the root, following symlinks
   * inside the root. Returns a new `O_PATH` descriptor of the directory.
   */
  #walk(dir: Uint8Array): number {
    const libc = this.#libc;
    // Pending components, the next one last.
    const todo: Uint8Array[] = [];
    pushComponents(todo, dir);
    const stack: number[] = [];
    let links = 0;
    try {
      while (todo.length > 0) {
        const c = todo.pop()!;
        const dots = isDots(c, 0, c.length);
        if (dots === 1) continue;
        if (dots === 2) {
          if (stack.length > 0) libc.close(stack.pop()!);
          continue;
        }
        const cur = stack.length > 0 ? stack[stack.length - 1] : this.fd;
        let fd: number;
        try {
          fd = libc.openat(cur, c, O.PATH | O.NOFOLLOW | O.DIRECTORY);
        } catch (e) {
          if (!(e instanceof ErrnoError)) throw e;
          if (e.errno !== Errno.ENOTDIR && e.errno !== Errno.ELOOP) throw e;
          const st = libc.fstatat(cur, c, AT.SYMLINK_NOFOLLOW);
          if ((st.mode & S.IFMT) !== S.IFLNK) throw new ErrnoError(Errno.ENOTDIR, "openat", "");
          if (++links > MAX_LINKS) throw new ErrnoError(Errno.ELOOP, "openat", "");
          const target = libc.readlinkat(cur, c);
          if (target.length > 0 && target[0] === SLASH) {
            while (stack.length > 0) libc.close(stack.pop()!);
          }
          pushComponents(todo, target);
          continue;
        }
        stack.push(fd);
      }
      if (stack.length === 0) return libc.openat(this.fd, ".", O.PATH | O.DIRECTORY);
      return stack.pop()!;
    } finally {
      for (const fd of stack) libc.close(fd);
    }
  }

  #rethrow(e: unknown, full: Uint8Array | null): never {
    if (e instanceof ErrnoError) {
      const note = LINK_NOTES.get(e);
      const path = full === null ? "/" : decoder.decode(full);
      const err = new ErrnoError(e.errno, e.syscall, note ? `${path} (${note})` : path);
      if (note) LINK_NOTES.set(err, note);
      throw err;
    }
    throw e;
  }

  /** `/proc/self/fd/<fd>/<name>` as bytes (for the `l*xattr` calls). */
  #procPath(fd: number, name: Uint8Array): Uint8Array {
    let prefix = this.#procPrefix.get(fd);
    if (!prefix) {
      prefix = encoder.encode(`/proc/self/fd/${fd}/`);
      if (this.#procPrefix.size > 64) this.#procPrefix.clear();
      this.#procPrefix.set(fd, prefix);
    }
    const out = new Uint8Array(prefix.length + name.length);
    out.set(prefix);
    out.set(name, prefix.length);
    return out;
  }

  // ---- queries ------------------------------------------------------------

  /** lstat of a name (the root itself for an empty name); ENOENT when missing. */
  lstat(p: PathLike): Stat {
    const t = this.#split(p);
    try {
      if (t === null) return this.#libc.fstat(this.fd);
      return this.#libc.fstatat(this.#dirFd(t.dir), t.name, AT.SYMLINK_NOFOLLOW);
    } catch (e) {
      this.#rethrow(e, t?.full ?? null);
    }
  }

  /** lstat, or null when the name (or a directory on its way) does not exist. */
  lstatOrNull(p: PathLike): Stat | null {
    try {
      return this.lstat(p);
    } catch (e) {
      if (e instanceof ErrnoError && (e.errno === Errno.ENOENT || e.errno === Errno.ENOTDIR)) {
        return null;
      }
      throw e;
    }
  }

  /** Whether the name exists (a dangling symlink exists). */
  exists(p: PathLike): boolean {
    return this.lstatOrNull(p) !== null;
  }

  /** The target of a symlink, as bytes. */
  readlink(p: PathLike): Uint8Array {
    const t = this.#target(p, "readlinkat");
    try {
      return this.#libc.readlinkat(this.#dirFd(t.dir), t.name);
    } catch (e) {
      this.#rethrow(e, t.full);
    }
  }

  // ---- creation -----------------------------------------------------------

  /** mkdir of one directory (EEXIST when the name exists, whatever it is). */
  mkdir(p: PathLike, mode: number): void {
    const t = this.#target(p, "mkdirat");
    try {
      this.#libc.mkdirat(this.#dirFd(t.dir), t.name, mode);
    } catch (e) {
      this.#rethrow(e, t.full);
    }
  }

  /**
   * mkdir -p: create the missing directories of `p`, following existing
   * symlinks inside the root. `onCreate` is called with each directory it
   * created, parents first (to chown/chmod them). ENOTDIR / EEXIST when a
   * component exists and is not a directory.
   */
  mkdirAll(p: PathLike, mode: number, onCreate?: (created: Uint8Array) => void): void {
    const full = cleanInRoot(p);
    if (full.length === 0) return;
    try {
      this.#dirFd(full);
      return;
    } catch (e) {
      if (!(e instanceof ErrnoError) || e.errno !== Errno.ENOENT) this.#rethrow(e, full);
    }
    const slash = full.lastIndexOf(SLASH);
    if (slash > 0) this.mkdirAll(full.subarray(0, slash), mode, onCreate);
    try {
      this.mkdir(full, mode);
    } catch (e) {
      if (!(e instanceof ErrnoError) || e.errno !== Errno.EEXIST) throw e;
      // Exists now: fine only if it resolves to a directory.
      try {
        this.#dirFd(full);
      } catch (e2) {
        this.#rethrow(e2, full);
      }
      return;
    }
    onCreate?.(full);
  }

  /**
   * Create a regular file that must not exist (`O_CREAT | O_EXCL |
   * O_NOFOLLOW`), open for writing. The caller closes the descriptor.
   */
  createFile(p: PathLike, mode: number): number {
    const t = this.#target(p, "openat");
    try {
      return this.#libc.openat(
        this.#dirFd(t.dir),
        t.name,
        O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW,
        mode,
      );
    } catch (e) {
      this.#rethrow(e, t.full);
    }
  }

  /**
   * Open a directory for reading (`getdents`, `fsetxattr`, `fsync`); a
   * final symlink is not followed (ELOOP/ENOTDIR). The caller closes it.
   */
  openDir(p: PathLike): number {
    const t = this.#split(p);
    try {
      if (t === null) return this.#libc.openat(this.fd, ".", O.RDONLY | O.DIRECTORY);
      return this.#libc.openat(
        this.#dirFd(t.dir),
        t.name,
        O.RDONLY | O.DIRECTORY | O.NOFOLLOW,
      );
    } catch (e) {
      this.#rethrow(e, t?.full ?? null);
    }
  }

  /** Create a symlink at `p` whose content is `target`, verbatim. */
  symlink(target: PathLike, p: PathLike): void {
    const t = this.#target(p, "symlinkat");
    try {
      this.#libc.symlinkat(target, this.#dirFd(t.dir), t.name);
    } catch (e) {
      this.#rethrow(e, t.full);
    }
  }

  /**
   * Hard link `newP` to `oldP`; both resolved inside the root, a final
   * symlink of `oldP` is linked itself, not followed.
   */
  link(oldP: PathLike, newP: PathLike): void {
    const o = this.#split(oldP);
    const n = this.#target(newP, "linkat");
    if (o === null) throw new ErrnoError(Errno.EPERM, "linkat", decoder.decode(n.full));
    try {
      const ofd = this.#dirFd(o.dir);
      const nfd = this.#dirFd(n.dir);
      this.#libc.linkat(ofd, o.name, nfd, n.name, 0);
    } catch (e) {
      this.#rethrow(e, n.full);
    }
  }

  /** mknod: `mode` carries the type bits (S.IFCHR, S.IFBLK, S.IFIFO). */
  mknod(p: PathLike, mode: number, major: number, minor: number): void {
    const t = this.#target(p, "mknodat");
    try {
      this.#libc.mknodat(this.#dirFd(t.dir), t.name, mode, major, minor);
    } catch (e) {
      this.#rethrow(e, t.full);
    }
  }

  // ---- removal and rename -------------------------------------------------

  /** Remove a non-directory (a symlink itself, never its target). */
  unlink(p: PathLike): void {
    const t = this.#target(p, "unlinkat");
    try {
      const dfd = this.#dirFd(t.dir);
      const st = this.#libc.fstatat(dfd, t.name, AT.SYMLINK_NOFOLLOW);
      this.#libc.unlinkat(dfd, t.name, 0);
      if ((st.mode & S.IFMT) !== S.IFREG) this.invalidate();
    } catch (e) {
      this.#rethrow(e, t.full);
    }
  }

  /** Remove an empty directory. */
  rmdir(p: PathLike): void {
    const t = this.#target(p, "unlinkat");
    try {
      this.#libc.unlinkat(this.#dirFd(t.dir), t.name, AT.REMOVEDIR);
      this.invalidate();
    } catch (e) {
      this.#rethrow(e, t.full);
    }
  }

  /**
   * Remove a name and, for a directory, everything below it, never
   * following symlinks (they are removed, not their targets). A missing
   * name is not an error. The root itself cannot be removed (EBUSY): see
   * {@linkcode Root.prune}.
   */
  removeAll(p: PathLike): void {
    const t = this.#split(p);
    if (t === null) throw new ErrnoError(Errno.EBUSY, "unlinkat", "/");
    try {
      let dfd: number;
      try {
        dfd = this.#dirFd(t.dir);
      } catch (e) {
        if (e instanceof ErrnoError && (e.errno === Errno.ENOENT || e.errno === Errno.ENOTDIR)) {
          return;
        }
        throw e;
      }
      this.#removeAt(dfd, t.name, -1);
    } catch (e) {
      this.#rethrow(e, t.full);
    } finally {
      this.#flush();
    }
  }

  /**
   * Remove `name` in the directory `dfd`; `type` is a d_type hint or -1.
   * Directories are emptied through descriptors, depth first.
   */
  #removeAt(dfd: number, name: Uint8Array, type: number): void {
    const libc = this.#libc;
    let isDir: boolean;
    if (type === 4 /* DT_DIR */) isDir = true;
    else if (type > 0) isDir = false;
    else {
      let st: Stat;
      try {
        st = libc.fstatat(dfd, name, AT.SYMLINK_NOFOLLOW);
      } catch (e) {
        if (e instanceof ErrnoError && e.errno === Errno.ENOENT) return;
        throw e;
      }
      isDir = (st.mode & S.IFMT) === S.IFDIR;
      if (!isDir && (st.mode & S.IFMT) !== S.IFREG) this.#dirty = true;
    }
    if (!isDir) {
      try {
        libc.unlinkat(dfd, name, 0);
        if (type > 0 && type !== 8 /* DT_REG */) this.#dirty = true;
        return;
      } catch (e) {
        if (!(e instanceof ErrnoError)) throw e;
        if (e.errno === Errno.ENOENT) return;
        if (e.errno !== Errno.EISDIR && e.errno !== Errno.EPERM) throw e;
        // A directory after all (type hint stale).
      }
    }
    this.#dirty = true;
    let fd: number;
    try {
      fd = libc.openat(dfd, name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.ENOENT) return;
      throw e;
    }
    try {
      for (const ent of libc.readdir(fd)) this.#removeAt(fd, ent.name, ent.type);
    } finally {
      libc.close(fd);
    }
    try {
      libc.unlinkat(dfd, name, AT.REMOVEDIR);
    } catch (e) {
      if (!(e instanceof ErrnoError) || e.errno !== Errno.ENOENT) throw e;
    }
  }

  /**
   * Remove, below the directory `p` (not following `p` if it is a symlink),
   * every entry for which `keep(path)` is false; entries kept that are
   * directories are visited in turn. `path` is the entry's cleaned in-root
   * name. This is how an opaque whiteout clears what lower layers put in a
   * directory. ENOTDIR/ELOOP when `p` is not a directory.
   */
  prune(p: PathLike, keep: (path: Uint8Array) => boolean): void {
    const full = cleanInRoot(p);
    const fd = this.openDir(full);
    try {
      this.#pruneAt(fd, full, keep);
    } catch (e) {
      this.#rethrow(e, full);
    } finally {
      this.#libc.close(fd);
      this.#flush();
    }
  }

  #pruneAt(fd: number, dir: Uint8Array, keep: (path: Uint8Array) => boolean): void {
    const libc = this.#libc;
    for (const ent of libc.readdir(fd)) {
      const child = dir.length === 0 ? ent.name : joinParts([dir, ent.name]);
      if (!keep(child)) {
        this.#removeAt(fd, ent.name, ent.type);
        continue;
      }
      let isDir = ent.type === 4;
      if (ent.type === 0) {
        isDir = (libc.fstatat(fd, ent.name, AT.SYMLINK_NOFOLLOW).mode & S.IFMT) === S.IFDIR;
      }
      if (!isDir) continue;
      let cfd: number;
      try {
        cfd = libc.openat(fd, ent.name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
      } catch (e) {
        if (e instanceof ErrnoError && e.errno === Errno.ENOENT) continue;
        throw e;
      }
      try {
        this.#pruneAt(cfd, child, keep);
      } finally {
        libc.close(cfd);
      }
    }
  }

  /** rename(2) of `oldP` to `newP`, both inside the root, neither final component followed. */
  rename(oldP: PathLike, newP: PathLike): void {
    const o = this.#target(oldP, "renameat");
    const n = this.#target(newP, "renameat");
    try {
      const ofd = this.#dirFd(o.dir);
      const nfd = this.#dirFd(n.dir);
      this.#libc.renameat(ofd, o.name, nfd, n.name);
    } catch (e) {
      this.#rethrow(e, o.full);
    } finally {
      this.invalidate();
    }
  }

  // ---- metadata -----------------------------------------------------------

  /** lchown: owner of the name itself (a symlink's own owner). */
  lchown(p: PathLike, uid: number, gid: number): void {
    this.#epoch++;
    const t = this.#split(p);
    try {
      if (t === null) this.#libc.fchownat(this.fd, "", uid, gid, AT.EMPTY_PATH);
      else this.#libc.fchownat(this.#dirFd(t.dir), t.name, uid, gid, AT.SYMLINK_NOFOLLOW);
    } catch (e) {
      this.#rethrow(e, t?.full ?? null);
    }
  }

  /**
   * chmod without following a final symlink (EOPNOTSUPP on a symlink: they
   * have no mode of their own on Linux). `mode` may carry setuid, setgid and
   * sticky bits.
   */
  chmod(p: PathLike, mode: number): void {
    this.#epoch++;
    const t = this.#split(p);
    try {
      if (t === null) {
        const fd = this.#libc.openat(this.fd, ".", O.RDONLY | O.DIRECTORY);
        try {
          this.#libc.fchmod(fd, mode);
        } finally {
          this.#libc.close(fd);
        }
      } else {
        this.#libc.fchmodat(this.#dirFd(t.dir), t.name, mode, AT.SYMLINK_NOFOLLOW);
      }
    } catch (e) {
      this.#rethrow(e, t?.full ?? null);
    }
  }

  /** utimensat without following a final symlink; nanosecond times. */
  utimens(p: PathLike, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number) {
    const t = this.#split(p);
    try {
      if (t === null) {
        this.#libc.utimensat(this.fd, "", atimeSec, atimeNsec, mtimeSec, mtimeNsec, AT.EMPTY_PATH);
      } else {
        this.#libc.utimensat(
          this.#dirFd(t.dir),
          t.name,
          atimeSec,
          atimeNsec,
          mtimeSec,
          mtimeNsec,
          AT.SYMLINK_NOFOLLOW,
        );
      }
    } catch (e) {
      this.#rethrow(e, t?.full ?? null);
    }
  }

  /** Set an extended attribute on the name itself (never a symlink's target). */
  setxattr(p: PathLike, name: string, value: Uint8Array): void {
    const t = this.#split(p);
    try {
      if (t === null) {
        const fd = this.#libc.openat(this.fd, ".", O.RDONLY | O.DIRECTORY);
        try {
          this.#libc.fsetxattr(fd, name, value);
        } finally {
          this.#libc.close(fd);
        }
      } else {
        this.#libc.lsetxattr(this.#procPath(this.#dirFd(t.dir), t.name), name, value);
      }
    } catch (e) {
      this.#rethrow(e, t?.full ?? null);
    }
  }

  /** Read an extended attribute of the name itself; null when absent. */
  getxattr(p: PathLike, name: string): Uint8Array | null {
    const t = this.#split(p);
    try {
      if (t === null) {
        const fd = this.#libc.openat(this.fd, ".", O.RDONLY | O.DIRECTORY);
        try {
          return this.#libc.fgetxattr(fd, name);
        } finally {
          this.#libc.close(fd);
        }
      }
      return this.#libc.lgetxattr(this.#procPath(this.#dirFd(t.dir), t.name), name);
    } catch (e) {
      this.#rethrow(e, t?.full ?? null);
    }
  }

  /** syncfs(2) on the filesystem holding the root. */
  syncfs(): void {
    const fd = this.#libc.openat(this.fd, ".", O.RDONLY | O.DIRECTORY);
    try {
      this.#libc.syncfs(fd);
    } finally {
      this.#libc.close(fd);
    }
  }
}

/** Push the components of `path` on `todo` so the first component is popped first. */
function pushComponents(todo: Uint8Array[], path: Uint8Array): void {
  let end = path.length;
  for (let i = path.length - 1; i >= -1; i--) {
    if (i >= 0 && path[i] !== SLASH) continue;
    if (end - (i + 1) > 0) todo.push(path.subarray(i + 1, end));
    end = i;
  }
}
