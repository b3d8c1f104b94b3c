/**
 * What `untar` and `applyLayer` share: the options, the error types, the
 * creation of one tar entry through a {@linkcode Root} (containers/storage's
 * `createTarFile`), and the async loop that feeds a tar stream to a
 * synchronous sink and turns every failure into an {@linkcode ExtractError}.
 *
 * @module
 */

import { resolve as resolvePath } from "node:path";
import {
  AT,
  Errno,
  ErrnoError,
  errnoOf,
  type Libc,
  readTextFileViaLibc,
  S,
  type Stat,
  systemLibc,
} from "../../ffi/libc.ts";
import type { IDMap } from "../driver.ts";
import { isIdentity, rootPair, toHost } from "./idmap.ts";
import { cleanInRoot, Root } from "./root.ts";
import { nameText, type TarHeader, TarType } from "./tar_header.ts";
import { TarFormatError, TarParser, type TarSink } from "./tar_reader.ts";
import type { TarSplitRecorder } from "./tar_split.ts";

export type { IDMap } from "../driver.ts";
export type { Libc } from "../../ffi/libc.ts";
export type { TarHeader } from "./tar_header.ts";
export type { TarSink } from "./tar_reader.ts";

/**
 * Options of `untar` (and, with a whiteout format, of `applyLayer`).
 *
 * @example
 * ```ts
 * import { untar, type UntarOptions } from "../../mod.ts";
 * const opts: UntarOptions = {
 *   noLchown: true,
 *   onProgress: (bytes, entries) => console.log(bytes, entries),
 *   signal: AbortSignal.timeout(30_000),
 * };
 * await untar((await Deno.open("layer.tar")).readable, "/tmp/out", opts);
 * ```
 */
export interface UntarOptions {
  /** Container→host uid ranges (identity when absent or empty). */
  uidMaps?: IDMap[];
  /** Container→host gid ranges (identity when absent or empty). */
  gidMaps?: IDMap[];
  /** The system calls (default: the real libc). */
  libc?: Libc;
  /** Resolve names with the component walk instead of openat2 (tests). */
  forceFallback?: boolean;
  /** Do not chown anything (unprivileged extraction). */
  noLchown?: boolean;
  /**
   * Whether the process runs in a user namespace: device nodes are then
   * skipped, as containers/storage does. Default: read from `/proc/self/uid_map`.
   */
  inUserNS?: boolean;
  /** Called after every chunk with the bytes read and the entries seen so far. */
  onProgress?: (bytes: number, entries: number) => void;
  /** syncfs(2) the destination's filesystem once at the end. */
  sync?: boolean;
  /**
   * Abort the extraction: it stops reading, cancels the input and rejects
   * with `signal.reason`. What was extracted so far stays in `dest`.
   */
  signal?: AbortSignal;
  /** Told about things skipped without failing (xattrs the filesystem refused). Default: ignored. */
  onWarning?: (message: string) => void;
  /**
   * Filled in as the extraction goes (an out-parameter): what it created, so a
   * caller that extracted into an empty directory can know the directory's
   * size without walking it again.
   */
  stats?: ExtractStats;
  /**
   * Record the tar's tar-split while extracting (same pass): the recorder
   * sees every chunk and entry; see {@linkcode TarSplitRecorder}.
   */
  tarSplit?: TarSplitRecorder;
}

/**
 * What an extraction created. `createdSize` is what `directorySize` of an
 * initially empty destination gives afterwards (regular files' and symlinks'
 * sizes, each inode once) as long as `replaced` is false; once anything was
 * removed or overwritten, only a walk can tell.
 *
 * @example
 * ```ts
 * import { type ExtractStats, newExtractStats, untar } from "../../mod.ts";
 * const stats: ExtractStats = newExtractStats();
 * await untar((await Deno.open("layer.tar")).readable, await Deno.makeTempDir(), { stats });
 * console.log(stats.createdSize);
 * ```
 */
export interface ExtractStats {
  /** Sum of the sizes of the non-directory entries created (hard links add nothing). */
  createdSize: number;
  /** Something existing was removed or replaced (a whiteout, a name written twice, ...). */
  replaced: boolean;
}

/**
 * A fresh {@linkcode ExtractStats}.
 *
 * @example
 * ```ts
 * import { newExtractStats } from "./extract.ts";
 * console.log(newExtractStats()); // { createdSize: 0, replaced: false }
 * ```
 */
export function newExtractStats(): ExtractStats {
  return { createdSize: 0, replaced: false };
}

/**
 * An archive the extraction refuses as unsafe or malformed at the entry
 * level: a whiteout of `.`, `..` or of an empty name, an unknown entry type,
 * an aufs hard link to a pseudo-link that is not in the layer.
 *
 * @example
 * ```ts
 * import { InvalidArchiveError } from "./extract.ts";
 * const e = new InvalidArchiveError(".wh..", "whiteout of the directory itself");
 * console.log(e.message); // invalid archive: entry ".wh..": whiteout of the directory itself
 * ```
 */
export class InvalidArchiveError extends Error {
  /** The entry's name as text. */
  readonly entry: string;
  /** Why the entry is refused. */
  readonly reason: string;
  /** Name the entry and say why it is refused. */
  constructor(entry: string, reason: string) {
    super(`invalid archive: entry ${JSON.stringify(entry)}: ${reason}`);
    this.name = "InvalidArchiveError";
    this.entry = entry;
    this.reason = reason;
  }
}

/**
 * An extraction failed. The message names the operation, the destination,
 * the entry and the failing call, e.g.
 * `apply layer into /x/diff/abc: entry "a/b": mkdirat a/b: file exists (EEXIST)`.
 * `cause` is the underlying {@linkcode ErrnoError}, `TarFormatError`,
 * {@linkcode InvalidArchiveError} or id-map error.
 *
 * @example
 * ```ts
 * import { ExtractError } from "./extract.ts";
 * import { ErrnoError } from "../../ffi/libc.ts";
 * const e = new ExtractError("untar", "/d", "a/b", new ErrnoError(17, "mkdirat", "a/b"));
 * console.log(e.syscall, e.path); // mkdirat a/b
 * ```
 */
export class ExtractError extends Error {
  /** The entry being extracted (text), when the failure belongs to one. */
  readonly entry?: string;
  /** The in-root path of the failing call, else the entry's. */
  readonly path?: string;
  /** The failing system call, when there is one. */
  readonly syscall?: string;
  /** The destination directory. */
  readonly dest: string;

  /** `op` is "untar" or "apply layer". */
  constructor(op: string, dest: string, entry: string | undefined, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      `${op} into ${dest}: ` + (entry === undefined ? "" : `entry ${JSON.stringify(entry)}: `) +
        why,
      { cause },
    );
    this.name = "ExtractError";
    this.dest = dest;
    if (entry !== undefined) this.entry = entry;
    if (cause instanceof ErrnoError) {
      this.syscall = cause.syscall;
      this.path = cause.path;
    } else if (entry !== undefined) {
      this.path = entry;
    }
  }
}

// ---- process facts ---------------------------------------------------------

/** What new files get from this process: its umask and filesystem uid/gid. */
interface Creator {
  umask: number;
  fsuid: number;
  fsgid: number;
}

let creatorCache: Creator | undefined;

/**
 * The process umask and fs ids, from /proc/self/status (read through libc:
 * Deno wants --allow-all for /proc/self). When unknown, the safe answers:
 * umask 0o777 (always chmod) and ids -1 (always chown).
 */
function creator(): Creator {
  if (creatorCache) return creatorCache;
  creatorCache = { umask: 0o777, fsuid: -1, fsgid: -1 };
  try {
    const status = readTextFileViaLibc("/proc/self/status");
    const umask = /^Umask:\s*([0-7]+)/m.exec(status);
    if (umask) creatorCache.umask = parseInt(umask[1], 8);
    const uid = /^Uid:\s+\d+\s+\d+\s+\d+\s+(\d+)/m.exec(status);
    const gid = /^Gid:\s+\d+\s+\d+\s+\d+\s+(\d+)/m.exec(status);
    if (uid && gid) {
      creatorCache.fsuid = Number(uid[1]);
      creatorCache.fsgid = Number(gid[1]);
    }
  } catch {
    // keep the safe defaults
  }
  return creatorCache;
}

/**
 * Whether this process runs in a user namespace (its uid map is not the
 * initial namespace's `0 0 4294967295`).
 *
 * @example
 * ```ts
 * import { detectUserNS } from "./extract.ts";
 * console.log(typeof detectUserNS()); // boolean
 * ```
 */
export function detectUserNS(): boolean {
  try {
    const map = readTextFileViaLibc("/proc/self/uid_map").trim().split(/\s+/);
    return !(map.length === 3 && map[0] === "0" && map[1] === "0" && map[2] === "4294967295");
  } catch {
    return false;
  }
}

// ---- times -----------------------------------------------------------------

/** Go's system.Chtimes clamp: before the epoch or after 2262-04-11 → the epoch. */
const MAX_SEC = 9223372036;
const MAX_NSEC_AT_MAX_SEC = 854775807;

function clamped(sec: number, nsec: number): boolean {
  return sec < 0 || sec > MAX_SEC || (sec === MAX_SEC && nsec > MAX_NSEC_AT_MAX_SEC);
}

/** The times an entry gets: atime = max(atime, mtime). */
interface Times {
  aSec: number;
  aNsec: number;
  mSec: number;
  mNsec: number;
}

function entryTimes(h: TarHeader, clamp: boolean): Times {
  let aSec = h.mtimeSec, aNsec = h.mtimeNsec;
  if (
    h.atimeSec !== undefined &&
    (h.atimeSec > h.mtimeSec || (h.atimeSec === h.mtimeSec && (h.atimeNsec ?? 0) > h.mtimeNsec))
  ) {
    aSec = h.atimeSec;
    aNsec = h.atimeNsec ?? 0;
  }
  let mSec = h.mtimeSec, mNsec = h.mtimeNsec;
  if (clamp) {
    if (clamped(aSec, aNsec)) aSec = aNsec = 0;
    if (clamped(mSec, mNsec)) mSec = mNsec = 0;
  }
  return { aSec, aNsec, mSec, mNsec };
}

// ---- the entry writer ------------------------------------------------------

const enum Kind {
  /** Nothing to finish (skipped entry). */
  None,
  /** A regular file open on `#fd`. */
  File,
  /** Anything else created at `#path`. */
  Other,
}

/** A directory whose times are set after the whole archive. */
interface PendingDir {
  path: Uint8Array;
  times: Times;
}

const PERM = 0o7777;
const SPECIAL = 0o7000;

/**
 * Creates tar entries in a {@linkcode Root}, one at a time: `begin` creates
 * the entry (replacing an existing non-directory, merging into an existing
 * directory, creating missing parents 0755 owned by the root pair), `data`
 * writes a regular file's body, `end` applies ownership (host-mapped ids),
 * xattrs, mode and times, in that order. Directory times wait for
 * {@linkcode EntryWriter.finishDirs}.
 *
 * @example
 * ```ts
 * import { EntryWriter } from "./extract.ts";
 * import { Root } from "./root.ts";
 * import { makeHeader } from "./tar_header.ts";
 * const root = new Root(Deno.makeTempDirSync());
 * const w = new EntryWriter(root, {});
 * const h = makeHeader({ name: "a/hello", size: 2 });
 * w.begin(h, h.name);
 * w.data(new TextEncoder().encode("hi"));
 * w.end();
 * w.finishDirs();
 * root.close();
 * ```
 */
export class EntryWriter {
  #root: Root;
  #libc: Libc;
  #uidMaps?: IDMap[];
  #gidMaps?: IDMap[];
  #identity: boolean;
  #rootUid: number;
  #rootGid: number;
  #chown: boolean;
  #inUserNS: boolean;
  #umask: number;
  #fsuid: number;
  #fsgid: number;
  #dirs: PendingDir[] = [];
  // Current entry.
  #kind = Kind.None;
  #fd = -1;
  #h: TarHeader | null = null;
  #path: Uint8Array = new Uint8Array(0);
  #uid = 0;
  #gid = 0;
  /** Whether the current entry needs its chown (false when creation already gave that owner). */
  #needChown = true;
  /** Whether the current entry needs its chmod (false when creation already gave that mode). */
  #needChmod = true;
  /** The current entry's directory has a default ACL. */
  #aclParent = false;
  /** xattrs the filesystem refused with ENOTSUP (tolerated, as containers/storage does). */
  ignoredXattrs = 0;
  /** What this writer created (the caller's `opts.stats`, or its own). */
  readonly stats: ExtractStats;

  /** A writer into `root` with the id maps and flags of `opts`. */
  constructor(root: Root, opts: UntarOptions) {
    this.#root = root;
    this.#libc = opts.libc ?? systemLibc();
    this.#uidMaps = opts.uidMaps;
    this.#gidMaps = opts.gidMaps;
    this.#identity = isIdentity(opts.uidMaps) && isIdentity(opts.gidMaps);
    const pair = rootPair(opts);
    this.#rootUid = pair.uid;
    this.#rootGid = pair.gid;
    this.#chown = !opts.noLchown;
    this.stats = opts.stats ?? newExtractStats();
    this.#inUserNS = opts.inUserNS ?? detectUserNS();
    const c = creator();
    this.#umask = c.umask;
    this.#fsuid = c.fsuid;
    this.#fsgid = c.fsgid;
  }

  /** Host uid/gid for header ids (ids equal to the root pair's host ids pass unmapped). */
  mapIds(uid: number, gid: number): [number, number] {
    if (this.#identity) return [uid, gid];
    return [
      uid === this.#rootUid ? uid : toHost(uid, this.#uidMaps),
      gid === this.#rootGid ? gid : toHost(gid, this.#gidMaps),
    ];
  }

  /** Create the missing directories above `path` (0755, owned by the root pair). */
  ensureParent(path: Uint8Array): void {
    const slash = path.lastIndexOf(0x2f);
    if (slash <= 0) return;
    this.mkdirAll(path.subarray(0, slash));
  }

  /** mkdir -p inside the root, new directories 0755 and owned by the root pair. */
  mkdirAll(path: Uint8Array): void {
    const root = this.#root;
    root.mkdirAll(path, 0o755, (created) => {
      if (this.#chown) root.lchown(created, this.#rootUid, this.#rootGid);
      if ((this.#umask & 0o755) !== 0) root.chmod(created, 0o755);
    });
  }

  /**
   * Run `make` (a creation call at `path`); on ENOENT create the missing
   * parents, on EEXIST remove what is there (unless `keepDir` and it is a
   * directory: then return false, "merged") and retry.
   */
  #create(path: Uint8Array, make: () => void, keepDir: boolean): boolean {
    let parentsMade = false, removed = false;
    for (;;) {
      try {
        make();
        return true;
      } catch (e) {
        const errno = errnoOf(e);
        if (errno === Errno.ENOENT && !parentsMade) {
          parentsMade = true;
          this.ensureParent(path);
          continue;
        }
        if (errno === Errno.EEXIST && !removed) {
          removed = true;
          if (keepDir) {
            const st = this.#root.lstatOrNull(path);
            if (st && (st.mode & S.IFMT) === S.IFDIR) return false;
          }
          this.stats.replaced = true;
          this.#root.removeAll(path);
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * After creating `path`: skip the chown if the kernel already gave it the
   * wanted owner (this process's fs uid, and its fs gid or a setgid
   * directory's group). Returns whether the directory is setgid (only
   * looked up when a chown is pending or `forMode`).
   */
  #fresh(path: Uint8Array, forMode: boolean): boolean {
    if (!this.#needChown && !forMode) return false;
    const inherited = this.#root.inherited(path);
    if (this.#needChown) {
      const gid = inherited.setgid ? inherited.gid : this.#fsgid;
      this.#needChown = this.#uid !== this.#fsuid || this.#gid !== gid;
    }
    // A default ACL, not the umask, made the mode: always chmod.
    if (inherited.defaultAcl) this.#aclParent = true;
    return inherited.setgid;
  }

  /**
   * Create the entry `h` at the cleaned in-root name `path` (empty: the
   * root, which only a directory entry may name: its metadata is applied).
   * Throws {@linkcode InvalidArchiveError} for a type it cannot create.
   */
  begin(h: TarHeader, path: Uint8Array): void {
    const root = this.#root;
    this.#h = h;
    this.#path = path;
    this.#kind = Kind.Other;
    if (this.#identity) {
      this.#uid = h.uid;
      this.#gid = h.gid;
    } else {
      [this.#uid, this.#gid] = this.mapIds(h.uid, h.gid);
    }
    const perm = h.mode & PERM;
    this.#needChown = this.#chown;
    this.#needChmod = true;
    this.#aclParent = false;
    switch (h.type) {
      case TarType.DIR:
        // The root (an empty name) exists: only its metadata is applied.
        if (path.length > 0 && this.#create(path, () => root.mkdir(path, perm & 0o777), true)) {
          const setgid = this.#fresh(path, true);
          this.#needChmod = this.#aclParent ||
            ((perm & 0o777 & ~this.#umask) | (setgid ? 0o2000 : 0)) !== perm;
        }
        break;
      case TarType.REG:
      case TarType.CONT:
        this.#create(path, () => {
          this.#fd = root.createFile(path, perm & 0o777);
        }, false);
        this.#kind = Kind.File;
        this.stats.createdSize += h.size;
        this.#fresh(path, true);
        // Made with perm & ~umask; special bits only come with the chmod.
        this.#needChmod = this.#aclParent || (perm & SPECIAL) !== 0 || (perm & this.#umask) !== 0;
        break;
      case TarType.CHR:
      case TarType.BLK:
        if (this.#inUserNS) {
          // Devices cannot be made in a user namespace: skipped, as the seed does.
          this.#kind = Kind.None;
          return;
        }
        this.#create(path, () => {
          root.mknod(
            path,
            perm | (h.type === TarType.CHR ? S.IFCHR : S.IFBLK),
            h.devmajor,
            h.devminor,
          );
        }, false);
        break;
      case TarType.FIFO:
        this.#create(path, () => root.mknod(path, perm | S.IFIFO, 0, 0), false);
        break;
      case TarType.LINK: {
        const target = cleanInRoot(h.linkname);
        this.#create(path, () => root.link(target, path), false);
        break;
      }
      case TarType.SYMLINK:
        this.#create(path, () => root.symlink(h.linkname, path), false);
        this.stats.createdSize += h.linkname.length;
        this.#fresh(path, false);
        break;
      default:
        this.#kind = Kind.None;
        throw new InvalidArchiveError(nameText(h.name), `unhandled tar header type ${h.type}`);
    }
  }

  /** Body bytes of the current entry (written only for regular files). */
  data(chunk: Uint8Array): void {
    if (this.#fd >= 0) this.#libc.writeAll(this.#fd, chunk);
  }

  /** Apply the current entry's metadata and close it. */
  end(): void {
    const kind = this.#kind;
    this.#kind = Kind.None;
    if (kind === Kind.None) return;
    const h = this.#h!;
    if (kind === Kind.File) {
      const fd = this.#fd;
      try {
        this.#fileMeta(fd, h);
      } finally {
        this.#fd = -1;
        this.#libc.close(fd);
      }
      return;
    }
    this.#otherMeta(h, this.#path);
  }

  #fileMeta(fd: number, h: TarHeader): void {
    const libc = this.#libc;
    if (this.#needChown) {
      // fchown on the open fd skips the empty-path lookup of fchownat (a double may lack it).
      if (libc.fchown) libc.fchown(fd, this.#uid, this.#gid);
      else libc.fchownat(fd, "", this.#uid, this.#gid, AT.EMPTY_PATH);
    }
    if (h.xattrs) {
      for (const [name, value] of h.xattrs) {
        this.#xattr(() => libc.fsetxattr(fd, name, value));
      }
    }
    if (this.#needChmod) libc.fchmod(fd, h.mode & PERM);
    const t = entryTimes(h, true);
    if (libc.futimens) libc.futimens(fd, t.aSec, t.aNsec, t.mSec, t.mNsec);
    else libc.utimensat(fd, "", t.aSec, t.aNsec, t.mSec, t.mNsec, AT.EMPTY_PATH);
  }

  #otherMeta(h: TarHeader, path: Uint8Array): void {
    const root = this.#root;
    if (this.#needChown) root.lchown(path, this.#uid, this.#gid);
    if (h.xattrs) {
      for (const [name, value] of h.xattrs) {
        this.#xattr(() => root.setxattr(path, name, value));
      }
    }
    if (h.type === TarType.SYMLINK) {
      // No mode of their own; times unclamped, as Go's LUtimesNano.
      const t = entryTimes(h, false);
      root.utimens(path, t.aSec, t.aNsec, t.mSec, t.mNsec);
      return;
    }
    if (h.type === TarType.LINK) {
      // Mode and times only when the link's target is not a symlink (§7.3).
      const st: Stat = root.lstat(path);
      if ((st.mode & S.IFMT) === S.IFLNK) return;
    }
    if (this.#needChmod) root.chmod(path, h.mode & PERM);
    if (h.type === TarType.DIR) {
      this.#dirs.push({ path, times: entryTimes(h, true) });
      return;
    }
    const t = entryTimes(h, true);
    root.utimens(path, t.aSec, t.aNsec, t.mSec, t.mNsec);
  }

  #xattr(set: () => void): void {
    try {
      set();
    } catch (e) {
      if (errnoOf(e) !== Errno.EOPNOTSUPP) throw e;
      this.ignoredXattrs++;
    }
  }

  /** Forget the current entry without finishing it, closing its file (after an error). */
  abort(): void {
    this.#kind = Kind.None;
    if (this.#fd >= 0) {
      const fd = this.#fd;
      this.#fd = -1;
      try {
        this.#libc.close(fd);
      } catch {
        // the extraction already failed; its error is the one reported
      }
    }
  }

  /**
   * Set the remembered directories' times, now that nothing more is created
   * in them. A directory removed by a later entry is skipped.
   */
  finishDirs(): void {
    const root = this.#root;
    for (const { path, times: t } of this.#dirs) {
      try {
        root.utimens(path, t.aSec, t.aNsec, t.mSec, t.mNsec);
      } catch (e) {
        if (errnoOf(e) !== Errno.ENOENT) throw e;
      }
    }
    this.#dirs = [];
  }
}

// ---- destination and the stream loop ---------------------------------------

/**
 * Make sure `dest` is a directory: create it and its missing ancestors
 * (0755, chowned to the root pair, only the new ones) when it is missing.
 */
function prepareDest(dest: string, libc: Libc, opts: UntarOptions): void {
  const missing: string[] = [];
  let p = dest;
  for (;;) {
    try {
      const st = libc.fstatat(AT.FDCWD, p, 0);
      if (p === dest && (st.mode & S.IFMT) !== S.IFDIR) {
        throw new ErrnoError(Errno.ENOTDIR, "mkdir", dest);
      }
      break;
    } catch (e) {
      if (errnoOf(e) !== Errno.ENOENT) throw e;
      missing.push(p);
      const parent = resolvePath(p, "..");
      if (parent === p) break;
      p = parent;
    }
  }
  if (missing.length === 0) return;
  const pair = rootPair(opts);
  for (const dir of missing.reverse()) {
    try {
      libc.mkdirat(AT.FDCWD, dir, 0o755);
    } catch (e) {
      if (errnoOf(e) !== Errno.EEXIST) throw e;
      continue;
    }
    if (!opts.noLchown) libc.fchownat(AT.FDCWD, dir, pair.uid, pair.gid, AT.SYMLINK_NOFOLLOW);
    libc.fchmodat(AT.FDCWD, dir, 0o755, 0);
  }
}

/** Size of each of the two buffers a byte stream is read into. */
const READ_CHUNK = 1 << 20;

/**
 * Reads a stream's chunks. A byte stream (a file's `readable`, a `Blob`'s
 * stream) is read with a BYOB reader into two reused 1 MiB buffers, the
 * next read in flight while the current chunk is processed; any other
 * stream with its default reader. A chunk is valid until it is released.
 */
class ChunkReader {
  #byob: ReadableStreamBYOBReader | null = null;
  #default: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #spare: Uint8Array | null = null;
  #pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;

  constructor(stream: ReadableStream<Uint8Array>) {
    try {
      this.#byob = stream.getReader({ mode: "byob" });
      this.#spare = new Uint8Array(READ_CHUNK);
      this.#pending = this.#read(new Uint8Array(READ_CHUNK));
    } catch {
      this.#default = stream.getReader();
    }
  }

  #read(buf: Uint8Array): Promise<ReadableStreamReadResult<Uint8Array>> {
    const p = this.#byob!.read(buf);
    // A read still pending when the extraction fails settles after cancel or
    // release: its outcome is not needed, its rejection must not go unhandled.
    p.catch(() => {});
    return p;
  }

  /** The next chunk, or null at the end of the stream. */
  async next(): Promise<Uint8Array | null> {
    if (this.#default) {
      const { done, value } = await this.#default.read();
      return done ? null : value;
    }
    const { done, value } = await this.#pending!;
    if (done || !value) {
      this.#pending = null;
      return null;
    }
    // Start filling the other buffer while the caller works on this one.
    this.#pending = this.#read(this.#spare!);
    this.#spare = null;
    return value;
  }

  /** The caller is done with `chunk`: its buffer takes the next turn. */
  release(chunk: Uint8Array): void {
    if (this.#byob) this.#spare = new Uint8Array(chunk.buffer);
  }

  /** Stop reading: cancel the stream with `reason`. */
  async cancel(reason: unknown): Promise<void> {
    await (this.#byob ?? this.#default)!.cancel(reason).catch(() => {});
  }

  /** Let go of the stream. */
  releaseLock(): void {
    (this.#byob ?? this.#default)!.releaseLock();
  }
}

/** What an extraction sink knows about the entry in progress, for error messages. */
export interface ExtractSink extends TarSink {
  /** The name (text) of the entry being processed, if any. */
  readonly current: string | undefined;
  /** Entries seen so far. */
  readonly entries: number;
  /** After the archive ended: directory times etc. */
  complete(): void;
  /** After a failure: close what is open. */
  abort(): void;
}

/**
 * Extract a tar stream into `dest` through a {@linkcode Root}: creates
 * `dest` if missing, builds the sink with `makeSink(root)`, pushes every
 * chunk through a synchronous {@linkcode TarParser}, and wraps any failure
 * in an {@linkcode ExtractError} (`op` names the operation in messages).
 * On failure the stream is cancelled; nothing is written outside `dest`.
 *
 * @example
 * ```ts
 * import { EntryWriter, extractStream } from "./extract.ts";
 * import { cleanInRoot } from "./root.ts";
 * const dest = Deno.makeTempDirSync();
 * await extractStream(new Blob([new Uint8Array(1024)]).stream(), dest, {}, "untar", (root) => {
 *   const w = new EntryWriter(root, {});
 *   let n = 0;
 *   return {
 *     current: undefined,
 *     get entries() { return n; },
 *     entry(h) { n++; w.begin(h, cleanInRoot(h.name)); },
 *     data: (c) => w.data(c),
 *     end: () => w.end(),
 *     complete: () => w.finishDirs(),
 *     abort: () => w.abort(),
 *   };
 * });
 * ```
 */
export async function extractStream(
  tar: ReadableStream<Uint8Array>,
  dest: string,
  opts: UntarOptions,
  op: string,
  makeSink: (root: Root) => ExtractSink,
): Promise<void> {
  const libc = opts.libc ?? systemLibc();
  const absDest = resolvePath(dest);
  let reader: ChunkReader | undefined;
  let root: Root | undefined;
  let sink: ExtractSink | undefined;
  const signal = opts.signal;
  // On abort, cancelling the input ends a pending read at once; the loop then sees the signal.
  const onAbort = () => void reader?.cancel(signal!.reason);
  try {
    signal?.throwIfAborted();
    signal?.addEventListener("abort", onAbort, { once: true });
    reader = new ChunkReader(tar);
    prepareDest(absDest, libc, opts);
    root = new Root(absDest, { libc, forceFallback: opts.forceFallback });
    sink = makeSink(root);
    const rec = opts.tarSplit;
    const parser = new TarParser(rec ? rec.wrap(sink) : sink);
    rec?.bind(parser);
    let bytes = 0;
    for (;;) {
      const chunk = await reader.next();
      if (signal?.aborted) throw signal.reason;
      if (chunk === null) break;
      if (rec) rec.push(chunk);
      else parser.push(chunk);
      reader.release(chunk);
      bytes += chunk.length;
      opts.onProgress?.(bytes, sink.entries);
    }
    parser.finish();
    rec?.finish();
    sink.complete();
    if (opts.sync) root.syncfs();
  } catch (e) {
    sink?.abort();
    await reader?.cancel(e);
    if (signal?.aborted) throw signal.reason;
    let entry = sink?.current;
    if (e instanceof TarFormatError) entry = e.entry;
    else if (e instanceof InvalidArchiveError) entry = e.entry;
    throw new ExtractError(op, absDest, entry, e);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    root?.close();
    reader?.releaseLock();
  }
}
