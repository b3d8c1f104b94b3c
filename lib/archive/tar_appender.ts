/**
 * The part of tar creation shared by `tarDirectory` and `exportChanges`: turn
 * one file into tar bytes the way containers/storage 1.43's `addTarFile` does,
 * and stream the result in chunks.
 *
 * Per entry (all synchronous system calls):
 * - `lstat` (statx, no follow) decides the type; sockets are skipped;
 * - the header: mode with the file-type bits, host uid/gid → user and group
 *   names, ids mapped host → container unless the base name starts with
 *   `.wh.`, mtime truncated to the second, device numbers in the legacy
 *   12/20-bit split, `security.capability`, `security.ima` and `user.*` xattrs;
 * - a non-directory with more than one link is written once, later paths to
 *   the same inode number become hard links to the first name written;
 * - a regular file is opened before its header is written, with `O_NOFOLLOW`,
 *   and `fstat` must show the inode `lstat` saw (CVE-2018-15664): a file
 *   swapped for a symlink is never read through. The body is read straight
 *   into the output chunk, across as many chunks as it takes, so memory stays
 *   flat for huge files.
 * - overlay whiteout format: a 0/0 character device becomes an empty regular
 *   `.wh.<name>` entry, a directory with `trusted.overlay.opaque=y` is followed
 *   by an empty `<dir>/.wh..wh..opq` entry.
 *
 * @module
 */

import { concatBytes, startsWithBytes } from "./bytes.ts";
import { AT, Errno, ErrnoError, type Libc, O, S, type Stat } from "../../ffi/libc.ts";
import type { IDMap } from "../driver.ts";
import { isIdentity, toContainer } from "./idmap.ts";
import { nameText, type TarHeader, TarType } from "./tar_header.ts";
import { encodeHeader, END_OF_ARCHIVE, padding } from "./tar_writer.ts";
import type { IdNames } from "./users.ts";
import {
  OVERLAY_OPAQUE_XATTR,
  WHITEOUT_OPAQUE_BYTES,
  WHITEOUT_PREFIX_BYTES,
  type WhiteoutFormat,
} from "./whiteouts.ts";

/** Size of the chunks a tar stream yields (the last one may be smaller). */
export const CHUNK_SIZE = 1 << 20;

/** Bodies at least this big are sent with sendfile(2) by `drainTo` (smaller ones are copied). */
export const DIRECT_BODY = 64 << 10;

const SLASH = 0x2f;
const EMPTY: Uint8Array = new Uint8Array(0);
const XATTRS_READ = new Set(["security.capability", "security.ima"]);

/** A file that could not be archived as it was when the walk saw it. */
export class TarSourceError extends Error {
  /** The file's path. */
  readonly path: string;
  /** `path` is the file, `what` says what went wrong. */
  constructor(path: string, what: string, options?: ErrorOptions) {
    super(`archiving ${path}: ${what}`, options);
    this.name = "TarSourceError";
    this.path = path;
  }
}

/** How the appender treats each file. */
export interface AppenderOptions {
  /** The system calls. */
  libc: Libc;
  /** uid/gid name lookups. */
  names: IdNames;
  /** Host → container uid ranges (absent or empty: identity). */
  uidMaps?: IDMap[];
  /** Host → container gid ranges (absent or empty: identity). */
  gidMaps?: IDMap[];
  /** How whiteouts are stored in the source tree (default "aufs": as they are). */
  whiteoutFormat?: WhiteoutFormat;
  /**
   * Called with every per-file error; the file is left out (or, if its body
   * fails half-way, completed with zeros) and the stream goes on. When absent
   * the error is thrown, which errors the stream.
   */
  onError?: (e: Error) => void;
}

/** A source of file bytes still to be copied into the tar. */
interface Body {
  fd: number;
  /** Bytes still to read from `fd`. */
  left: number;
  /** Zero bytes still owed after a short read. */
  zeros: number;
  pad: number;
  /** The file, for messages. */
  ref: FileRef;
}

/**
 * Where a file is: a directory descriptor plus its name there. Path-based
 * calls (xattrs of entries that are not opened) and messages use
 * `dirPath/name`.
 */
export interface FileRef {
  /** A directory descriptor (`AT.FDCWD` when `name` is absolute). */
  dirFd: number;
  /** The name relative to `dirFd`. */
  name: Uint8Array;
  /** The path of the directory `dirFd` refers to ("" when `name` is absolute). */
  dirPath: Uint8Array;
  /** An open descriptor of the file itself, if the caller has one (a directory being walked). */
  fd?: number;
}

/** `dirPath/name` of a {@linkcode FileRef}. */
export function refPath(ref: FileRef): Uint8Array {
  const d = ref.dirPath, n = ref.name;
  if (d.length === 0) return n;
  const out = new Uint8Array(d.length + 1 + n.length);
  out.set(d);
  out[d.length] = SLASH;
  out.set(n, d.length + 1);
  return out;
}

/**
 * Writes entries into a queue of pending bytes and drains the queue into
 * caller-supplied chunks.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../../ffi/libc.ts";
 * import { TarAppender } from "./tar_appender.ts";
 * import { hostIdNames } from "./users.ts";
 * const app = new TarAppender({ libc: systemLibc(), names: hostIdNames() });
 * const enc = new TextEncoder();
 * const hostname = { dirFd: -100, name: enc.encode("/etc/hostname"), dirPath: new Uint8Array(0) };
 * app.addFile(hostname, enc.encode("etc/hostname"));
 * app.finish();
 * const chunk = new Uint8Array(1 << 20);
 * console.log(app.fill(chunk, 0) > 1024); // true
 * ```
 */
export class TarAppender {
  readonly #libc: Libc;
  readonly #names: IdNames;
  readonly #uidMaps?: IDMap[];
  readonly #gidMaps?: IDMap[];
  readonly #mapIds: boolean;
  readonly #overlay: boolean;
  readonly #onError?: (e: Error) => void;
  /** Inode number → name of the first entry written for it. */
  readonly #seen = new Map<number, Uint8Array>();
  /** Header blocks (and the end marker) waiting to be copied out, in order with bodies. */
  #queue: (Uint8Array | Body)[] = [];
  #queueHead = 0;
  /** Offset into the byte array at the head of the queue. */
  #headOff = 0;
  #entries = 0;
  /** Whether bodies may go out with sendfile(2) in {@linkcode TarAppender.drainTo}. */
  #sendfile = true;

  /** See {@linkcode AppenderOptions}. */
  constructor(opts: AppenderOptions) {
    this.#libc = opts.libc;
    this.#names = opts.names;
    this.#uidMaps = opts.uidMaps;
    this.#gidMaps = opts.gidMaps;
    this.#mapIds = !isIdentity(opts.uidMaps) || !isIdentity(opts.gidMaps);
    this.#overlay = opts.whiteoutFormat === "overlay";
    this.#onError = opts.onError;
  }

  /** Report a per-file error: to `onError`, or by throwing. */
  report(e: Error): void {
    if (!this.#onError) throw e;
    this.#onError(e);
  }

  /** The system calls this appender makes. */
  get libc(): Libc {
    return this.#libc;
  }

  /** Entries queued so far (headers of files, links, whiteouts; not PAX records). */
  get entries(): number {
    return this.#entries;
  }

  /** Whether bytes are waiting to be drained by {@linkcode TarAppender.fill}. */
  get pending(): boolean {
    return this.#queueHead < this.#queue.length;
  }

  /**
   * Add the file at `ref` as entry `tarName` (relative, no trailing slash; a
   * directory gets one). `st` is its lstat when the caller already has it.
   * Returns the lstat used, or null when nothing was added (a socket, a file
   * that vanished, or an error that was reported).
   */
  addFile(ref: FileRef, tarName: Uint8Array, st?: Stat): Stat | null {
    try {
      st ??= this.#libc.fstatat(ref.dirFd, ref.name, AT.SYMLINK_NOFOLLOW);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.ENOENT) return null;
      this.report(errorAt(e, refPath(ref)) as Error);
      return null;
    }
    try {
      return this.#add(ref, tarName, st) ? st : null;
    } catch (e) {
      this.report(errorAt(e, refPath(ref)) as Error);
      return null;
    }
  }

  #add(ref: FileRef, tarName: Uint8Array, st: Stat): boolean {
    const libc = this.#libc;
    const fmt = st.mode & S.IFMT;
    let type: number;
    let name: Uint8Array = tarName;
    let linkname: Uint8Array = EMPTY;
    switch (fmt) {
      case S.IFREG:
        type = TarType.REG;
        break;
      case S.IFDIR:
        type = TarType.DIR;
        name = withSlash(tarName);
        break;
      case S.IFLNK:
        type = TarType.SYMLINK;
        linkname = libc.readlinkat(ref.dirFd, ref.name);
        break;
      case S.IFCHR:
        type = TarType.CHR;
        break;
      case S.IFBLK:
        type = TarType.BLK;
        break;
      case S.IFIFO:
        type = TarType.FIFO;
        break;
      default:
        return false; // sockets (and anything else tar cannot hold) are skipped
    }
    const h: TarHeader = {
      name,
      linkname,
      type,
      mode: st.mode & 0o177777,
      uid: st.uid,
      gid: st.gid,
      uname: this.#names.userName(st.uid),
      gname: this.#names.groupName(st.gid),
      size: type === TarType.REG ? st.size : 0,
      mtimeSec: st.mtimeSec,
      mtimeNsec: 0,
      // The legacy split containers/storage uses (the kernel's own is wider).
      devmajor: st.rdevMajor & 0xfff,
      devminor: st.rdevMinor & 0xfffff,
    };

    // The first path written for a multiply-linked inode owns it; later ones link to it.
    let claim = false;
    if (type !== TarType.DIR && st.nlink > 1) {
      const first = this.#seen.get(st.ino);
      if (first) {
        h.type = TarType.LINK;
        h.linkname = first;
        h.size = 0;
      } else {
        claim = true;
      }
    }

    let body: Body | null = null;
    if (h.type === TarType.REG && h.size > 0) body = this.#open(ref, st, h.size);
    try {
      const fd = body ? body.fd : ref.fd;
      const xattrs = fd !== undefined ? this.#fdXattrs(fd) : this.#pathXattrs(refPath(ref));
      if (xattrs) h.xattrs = xattrs;

      if (this.#mapIds && !startsWithBytes(baseName(name), WHITEOUT_PREFIX_BYTES)) {
        h.uid = toContainer(st.uid, this.#uidMaps);
        h.gid = toContainer(st.gid, this.#gidMaps);
      }

      let blocks: Uint8Array | null = null;
      if (this.#overlay) blocks = this.#overlayWhiteout(ref, h, fmt);
      blocks ??= encodeHeader(h);
      this.#queue.push(blocks);
      this.#entries++;
    } catch (e) {
      if (body) libc.close(body.fd);
      throw e;
    }
    if (body) this.#queue.push(body);
    if (claim) this.#seen.set(st.ino, name);
    return true;
  }

  /**
   * The overlay-to-layer-tar conversion of Go's ConvertWrite: turns a 0/0
   * character device into a `.wh.` entry (in `h`), or returns the blocks of
   * an opaque directory followed by its `.wh..wh..opq` entry; null when `h`
   * is to be written as it is.
   */
  #overlayWhiteout(ref: FileRef, h: TarHeader, fmt: number): Uint8Array | null {
    if (fmt === S.IFCHR && h.devmajor === 0 && h.devminor === 0) {
      h.name = whiteoutName(h.name);
      h.mode = 0;
      h.type = TarType.REG;
      h.size = 0;
      return null;
    }
    if (fmt !== S.IFDIR) return null;
    const v = ref.fd !== undefined
      ? this.#libc.fgetxattr(ref.fd, OVERLAY_OPAQUE_XATTR)
      : this.#libc.lgetxattr(refPath(ref), OVERLAY_OPAQUE_XATTR);
    if (!v || v.length !== 1 || v[0] !== 0x79) return null;
    h.xattrs?.delete(OVERLAY_OPAQUE_XATTR);
    const opaque: TarHeader = {
      name: concatBytes(h.name, WHITEOUT_OPAQUE_BYTES),
      linkname: EMPTY,
      type: TarType.REG,
      mode: h.mode & 0o777,
      uid: h.uid,
      gid: h.gid,
      uname: h.uname,
      gname: h.gname,
      size: 0,
      mtimeSec: 0,
      mtimeNsec: 0,
      devmajor: 0,
      devminor: 0,
    };
    this.#entries++; // the `.wh..wh..opq` entry after the directory's
    return concatBytes(encodeHeader(h), encodeHeader(opaque));
  }

  /** Open a regular file for its body, refusing anything but the inode lstat saw. */
  #open(ref: FileRef, st: Stat, size: number): Body {
    const libc = this.#libc;
    const fd = libc.openat(ref.dirFd, ref.name, O.RDONLY | O.NOFOLLOW | O.NONBLOCK | O.NOCTTY);
    try {
      const now = libc.fstat(fd);
      if (
        now.ino !== st.ino || now.devMajor !== st.devMajor || now.devMinor !== st.devMinor ||
        (now.mode & S.IFMT) !== S.IFREG
      ) {
        throw new TarSourceError(
          nameText(refPath(ref)),
          "replaced by another file between lstat and open",
        );
      }
    } catch (e) {
      libc.close(fd);
      throw e;
    }
    return { fd, left: size, zeros: 0, pad: padding(size), ref };
  }

  /** The xattrs Go's addTarFile copies, read through an open descriptor. */
  #fdXattrs(fd: number): Map<string, Uint8Array> | undefined {
    const libc = this.#libc;
    let names: string[];
    try {
      names = libc.flistxattr(fd);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP) return undefined;
      throw e;
    }
    if (names.length === 0) return undefined;
    return this.#pick(names, (k) => libc.fgetxattr(fd, k));
  }

  /** The xattrs Go's addTarFile copies, read by path (entries that are not opened). */
  #pathXattrs(path: Uint8Array): Map<string, Uint8Array> | undefined {
    const libc = this.#libc;
    let names: string[];
    try {
      names = libc.llistxattr(path);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP) return undefined;
      throw e;
    }
    if (names.length === 0) return undefined;
    return this.#pick(names, (k) => libc.lgetxattr(path, k));
  }

  /** `security.capability`, `security.ima` and `user.*`, in name order. */
  #pick(
    names: string[],
    get: (name: string) => Uint8Array | null,
  ): Map<string, Uint8Array> | undefined {
    let out: Map<string, Uint8Array> | undefined;
    for (const k of names.sort()) {
      if (!XATTRS_READ.has(k) && !k.startsWith("user.")) continue;
      const v = get(k);
      if (v === null) continue; // removed since the listing
      (out ??= new Map()).set(k, v);
    }
    return out;
  }

  /**
   * Queue a whiteout for `tarName` the way Go's ExportChanges writes one: an
   * empty regular entry, mode 0, ids 0, no names, mtime `mtimeSec`.
   */
  addWhiteout(tarName: Uint8Array, mtimeSec: number): void {
    this.#entries++;
    this.#queue.push(encodeHeader({
      name: tarName,
      linkname: EMPTY,
      type: TarType.REG,
      mode: 0,
      uid: 0,
      gid: 0,
      uname: "",
      gname: "",
      size: 0,
      mtimeSec,
      mtimeNsec: 0,
      devmajor: 0,
      devminor: 0,
    }));
  }

  /** Queue the end-of-archive marker. */
  finish(): void {
    this.#queue.push(END_OF_ARCHIVE);
  }

  /**
   * Copy pending bytes into `chunk` from `pos` on; returns the new position.
   * Padding and owed zeros are written too, so `chunk` may hold old bytes (a
   * reused buffer).
   */
  fill(chunk: Uint8Array, pos: number): number {
    while (pos < chunk.length && this.#queueHead < this.#queue.length) {
      pos = this.#fillOne(chunk, pos);
    }
    return pos;
  }

  /** Copy (part of) the item at the head of the queue into `chunk` at `pos`. */
  #fillOne(chunk: Uint8Array, pos: number): number {
    const item = this.#queue[this.#queueHead];
    if (item instanceof Uint8Array) {
      const n = Math.min(item.length - this.#headOff, chunk.length - pos);
      chunk.set(item.subarray(this.#headOff, this.#headOff + n), pos);
      pos += n;
      this.#headOff += n;
      if (this.#headOff === item.length) this.#advance();
      return pos;
    }
    pos = this.#fillBody(item, chunk, pos);
    if (item.left === 0 && item.zeros === 0 && item.pad === 0) this.#advance();
    return pos;
  }

  /**
   * Write every pending byte to the descriptor `out`: headers and small
   * bodies are gathered in `buf` (written whenever it fills), bodies of at
   * least {@linkcode DIRECT_BODY} bytes go from file to `out` in the kernel
   * with sendfile(2) when the libc offers it (no copy through this process).
   * `pos` is how much of `buf` is already filled; returns the new fill (not
   * yet written: the caller flushes it at the end). `onWrite` hears every
   * write's byte count.
   */
  drainTo(out: number, buf: Uint8Array, pos: number, onWrite: (n: number) => void): number {
    const libc = this.#libc;
    while (this.#queueHead < this.#queue.length) {
      const item = this.#queue[this.#queueHead];
      if (
        !(item instanceof Uint8Array) && this.#sendfile && libc.sendfile !== undefined &&
        item.left >= DIRECT_BODY
      ) {
        if (pos > 0) {
          libc.writeAll(out, buf, pos);
          onWrite(pos);
          pos = 0;
        }
        this.#sendBody(item, out, onWrite);
      }
      if (pos === buf.length) {
        libc.writeAll(out, buf, pos);
        onWrite(pos);
        pos = 0;
      }
      pos = this.#fillOne(buf, pos);
    }
    return pos;
  }

  /**
   * Send what is left of `b`'s file to `out` with sendfile(2). When sendfile
   * cannot serve this pair of descriptors (EINVAL, ENOSYS, ...) before any
   * byte moved, it is not used again and the body is read as usual; errors of
   * the output side are thrown.
   */
  #sendBody(b: Body, out: number, onWrite: (n: number) => void): void {
    const libc = this.#libc;
    while (b.left > 0) {
      let n: number;
      try {
        n = libc.sendfile!(out, b.fd, Math.min(b.left, 0x7ffff000));
      } catch (e) {
        const errno = e instanceof ErrnoError ? e.errno : undefined;
        if (errno === Errno.EINVAL || errno === Errno.ENOSYS || errno === Errno.EOPNOTSUPP) {
          this.#sendfile = false;
          return;
        }
        if (errno === Errno.EIO) {
          // the file's read failed: let the read path report it for this file
          return;
        }
        throw e;
      }
      if (n === 0) {
        this.#endBody(b);
        this.report(
          new TarSourceError(
            nameText(refPath(b.ref)),
            `file shrank while archiving (${b.zeros} bytes missing, written as zeros)`,
          ),
        );
        return;
      }
      b.left -= n;
      onWrite(n);
      if (b.left === 0) this.#closeBody(b);
    }
  }

  #advance(): void {
    this.#queue[this.#queueHead++] = EMPTY;
    this.#headOff = 0;
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    }
  }

  #fillBody(b: Body, chunk: Uint8Array, pos: number): number {
    while (b.left > 0 && pos < chunk.length) {
      const want = Math.min(b.left, chunk.length - pos);
      let n: number;
      try {
        n = this.#libc.read(b.fd, chunk.subarray(pos, pos + want), want);
      } catch (e) {
        this.#endBody(b);
        this.report(
          new TarSourceError(nameText(refPath(b.ref)), `read failed: ${(e as Error).message}`, {
            cause: e,
          }),
        );
        return pos;
      }
      if (n === 0) {
        this.#endBody(b);
        this.report(
          new TarSourceError(
            nameText(refPath(b.ref)),
            `file shrank while archiving (${b.zeros} bytes missing, written as zeros)`,
          ),
        );
        return pos;
      }
      pos += n;
      b.left -= n;
      if (b.left === 0) this.#closeBody(b);
    }
    const z = Math.min(b.zeros, chunk.length - pos);
    if (z > 0) chunk.fill(0, pos, pos + z);
    pos += z;
    b.zeros -= z;
    if (b.left === 0 && b.zeros === 0) {
      const p = Math.min(b.pad, chunk.length - pos);
      if (p > 0) chunk.fill(0, pos, pos + p);
      pos += p;
      b.pad -= p;
    }
    return pos;
  }

  /** Stop reading `b`: what was not read becomes zeros. */
  #endBody(b: Body): void {
    b.zeros += b.left;
    b.left = 0;
    this.#closeBody(b);
  }

  #closeBody(b: Body): void {
    if (b.fd >= 0) {
      const fd = b.fd;
      b.fd = -1;
      this.#libc.close(fd);
    }
  }

  /** Close every descriptor still held (cancellation or failure). */
  close(): void {
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      const item = this.#queue[i];
      if (!(item instanceof Uint8Array)) this.#closeBody(item);
    }
    this.#queue = [];
    this.#queueHead = 0;
  }
}

/** Something that adds entries to an appender on demand. */
export interface EntrySource {
  /** Add at least one more entry (or finish). Returns false when there is nothing more to add. */
  step(): boolean;
  /** Release descriptors (called on cancel, error and completion). */
  close(): void;
}

/** Options of {@linkcode TarStream.writeToFd}. */
export interface WriteTarOptions {
  /** Hears the bytes written and entries added so far, after every write. */
  onProgress?: (bytes: number, entries: number) => void;
}

/** The walk and the appender behind one {@linkcode TarStream}. */
class TarRun {
  readonly #app: TarAppender;
  readonly #source: EntrySource;
  #finished = false;
  #closed = false;

  constructor(app: TarAppender, source: EntrySource) {
    this.#app = app;
    this.#source = source;
  }

  /** Release every descriptor (once). */
  shut(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#app.close();
    } finally {
      this.#source.close();
    }
  }

  /** Let the source add entries until the appender has bytes, or the end. Returns false at the end. */
  #more(): boolean {
    while (!this.#app.pending) {
      if (this.#finished) return false;
      if (!this.#source.step()) {
        this.#app.finish();
        this.#finished = true;
      }
    }
    return true;
  }

  /** Fill `chunk`; returns the bytes filled and whether the tar is complete. */
  fill(chunk: Uint8Array): { pos: number; done: boolean } {
    let pos = 0;
    try {
      while (pos < chunk.length && this.#more()) pos = this.#app.fill(chunk, pos);
    } catch (e) {
      this.shut();
      throw e;
    }
    return { pos, done: this.#finished && !this.#app.pending };
  }

  /** Write the rest of the tar to `fd`, synchronously. */
  writeTo(fd: number, libc: Libc, opts: WriteTarOptions): void {
    const buf = new Uint8Array(CHUNK_SIZE);
    let pos = 0, bytes = 0;
    const app = this.#app;
    const onWrite = (n: number) => {
      bytes += n;
      opts.onProgress?.(bytes, app.entries);
    };
    try {
      while (this.#more()) pos = app.drainTo(fd, buf, pos, onWrite);
      if (pos > 0) {
        libc.writeAll(fd, buf, pos);
        onWrite(pos);
      }
    } finally {
      this.shut();
    }
  }
}

/**
 * A byte stream of a tar being made (what {@linkcode tarStream} returns).
 * Each pull fills the reader's buffer: a BYOB reader's own, reusable buffer
 * (a consumer that recycles one buffer causes no fresh memory at all), or,
 * for a default reader, fresh chunks of {@linkcode CHUNK_SIZE}. File bodies
 * are read straight into that buffer. {@linkcode TarStream.writeToFd} skips
 * the stream machinery for a caller that has a descriptor to write to.
 */
export class TarStream extends ReadableStream<Uint8Array> {
  readonly #run: TarRun;
  readonly #libc: Libc;

  /** The tar `app` produces as `source` adds entries. */
  constructor(app: TarAppender, source: EntrySource, libc: Libc) {
    const run = new TarRun(app, source);
    const byteSource: UnderlyingByteSource = {
      type: "bytes",
      autoAllocateChunkSize: CHUNK_SIZE,
      pull(controller: ReadableByteStreamController) {
        const req = controller.byobRequest!;
        const v = req.view!;
        const { pos, done } = run.fill(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
        if (pos > 0) req.respond(pos);
        if (done) {
          run.shut();
          controller.close();
          if (pos === 0) req.respond(0);
        }
      },
      cancel() {
        run.shut();
      },
    };
    // A byte source (TypeScript's lib offers that overload only to a plain `new ReadableStream`).
    super(byteSource as unknown as UnderlyingDefaultSource<Uint8Array>, { highWaterMark: 0 });
    this.#run = run;
    this.#libc = libc;
  }

  /**
   * Write the (rest of the) tar to the open descriptor `fd` synchronously,
   * through one reused buffer, bodies of 64 KiB and more with sendfile(2)
   * (kernel to kernel) when the libc offers it. The stream is not read; it
   * must not be locked, and is empty afterwards. Errors of the output (a
   * full disk, a closed pipe) are thrown as `ErrnoError`s of `write` or
   * `sendfile`; file errors as the stream would report them.
   */
  writeToFd(fd: number, opts: WriteTarOptions = {}): void {
    if (this.locked) throw new TypeError("writeToFd: the tar stream is locked by a reader");
    const reader = this.getReader();
    try {
      this.#run.writeTo(fd, this.#libc, opts);
    } finally {
      reader.releaseLock();
    }
  }
}

/**
 * A byte stream of the tar `app` produces as `source` adds entries (see
 * {@linkcode TarStream}). Errors thrown by the source or the appender error
 * the stream; cancelling it closes the source.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../../ffi/libc.ts";
 * import { TarAppender, tarStream } from "./tar_appender.ts";
 * import { hostIdNames } from "./users.ts";
 * const app = new TarAppender({ libc: systemLibc(), names: hostIdNames() });
 * let done = false;
 * const s = tarStream(app, { step: () => (done ? false : (done = true)), close() {} });
 * console.log((await new Response(s).arrayBuffer()).byteLength); // 1024
 * ```
 */
export function tarStream(app: TarAppender, source: EntrySource, libc?: Libc): TarStream {
  return new TarStream(app, source, libc ?? app.libc);
}

/**
 * A system-call error of a descriptor-relative call, re-made with the full
 * path of the file (the call itself only knew a name, or nothing). Other
 * errors are returned as they are.
 *
 * @example
 * ```ts
 * import { Errno, ErrnoError } from "../../ffi/libc.ts";
 * import { errorAt } from "./tar_appender.ts";
 * const e = errorAt(new ErrnoError(Errno.EACCES, "openat", "f"), new TextEncoder().encode("/d/f"));
 * console.log((e as Error).message.includes("/d/f")); // true
 * ```
 */
export function errorAt(e: unknown, path: Uint8Array): unknown {
  if (e instanceof ErrnoError) {
    return new ErrnoError(e.errno, e.syscall, nameText(path), { cause: e });
  }
  return e;
}

function withSlash(name: Uint8Array): Uint8Array {
  if (name.length > 0 && name[name.length - 1] === SLASH) return name;
  const out = new Uint8Array(name.length + 1);
  out.set(name);
  out[name.length] = SLASH;
  return out;
}

/** The last component (trailing slashes ignored). */
function baseName(name: Uint8Array): Uint8Array {
  let end = name.length;
  while (end > 1 && name[end - 1] === SLASH) end--;
  let i = end - 1;
  while (i >= 0 && name[i] !== SLASH) i--;
  return name.subarray(i + 1, end);
}

/** `dir/name` → `dir/.wh.name`. */
function whiteoutName(name: Uint8Array): Uint8Array {
  const base = baseName(name);
  const dir = name.subarray(0, base.byteOffset - name.byteOffset);
  return concatBytes(dir, WHITEOUT_PREFIX_BYTES, base);
}
