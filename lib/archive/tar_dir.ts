/**
 * `tarDirectory`: a directory tree as a layer tar, byte-identical to what
 * containers/storage 1.43's `TarWithOptions` writes for the same tree (as the
 * aufs driver's `Diff` calls it), with one deliberate difference: errors are
 * not swallowed.
 *
 * @module
 */

import { compareBytes, joinBytes } from "./bytes.ts";
import { AT, Errno, ErrnoError, type Libc, O, S, systemLibc } from "../../ffi/libc.ts";
import type { IDMap } from "../driver.ts";
import { PatternMatcher } from "./patterns.ts";
import {
  type EntrySource,
  errorAt,
  type FileRef,
  refPath,
  TarAppender,
  tarStream,
} from "./tar_appender.ts";
import { hostIdNames } from "./users.ts";
import { type WhiteoutFormat } from "./whiteouts.ts";

/**
 * Options of {@linkcode tarDirectory}.
 *
 * @example
 * ```ts
 * import { tarDirectory, type TarDirectoryOptions } from "../../mod.ts";
 * const opts: TarDirectoryOptions = {
 *   excludePatterns: ["tmp", "!tmp/keep"],
 *   onError: (e) => console.warn(`left out: ${e.message}`),
 * };
 * await tarDirectory("/srv/rootfs", opts).pipeTo((await Deno.create("/tmp/rootfs.tar")).writable);
 * ```
 */
export interface TarDirectoryOptions {
  /**
   * Exclude patterns (see `PatternMatcher`), matched against each entry's
   * path relative to the directory. An excluded directory is skipped with its
   * subtree unless a `!` pattern names something inside it.
   */
  excludePatterns?: string[];
  /** Host → container uid ranges applied to every entry but `.wh.*` names. */
  uidMaps?: IDMap[];
  /** Host → container gid ranges applied to every entry but `.wh.*` names. */
  gidMaps?: IDMap[];
  /**
   * How deletions are stored in the tree. `"aufs"` (default): whiteout files
   * are archived as they are. `"overlay"`: a 0/0 character device becomes a
   * `.wh.<name>` entry and a directory with `trusted.overlay.opaque=y` is
   * followed by a `<dir>/.wh..wh..opq` entry.
   */
  whiteoutFormat?: WhiteoutFormat;
  /** System calls (default: the real libc). */
  libc?: Libc;
  /**
   * Receives each per-file error (unreadable file, unmappable id, a file
   * replaced or truncated while being read, an unreadable directory); the
   * entry is left out, or its body completed with zeros, and the walk goes on.
   * Without it the first such error errors the stream.
   */
  onError?: (e: Error) => void;
}

const encoder = new TextEncoder();

interface Frame {
  fd: number;
  /** Full path of the directory. */
  path: Uint8Array;
  /** Path relative to the root ("" for the root). */
  rel: Uint8Array;
  names: Uint8Array[];
  next: number;
}

/** Walks a tree in Go's `filepath.WalkDir` order, adding entries to a {@linkcode TarAppender}. */
class DirWalker implements EntrySource {
  readonly #libc: Libc;
  readonly #app: TarAppender;
  readonly #pm: PatternMatcher | null;
  readonly #stack: Frame[] = [];
  #started = false;
  readonly #root: Uint8Array;

  constructor(root: string, libc: Libc, app: TarAppender, pm: PatternMatcher | null) {
    this.#libc = libc;
    this.#app = app;
    this.#pm = pm;
    this.#root = encoder.encode(root);
  }

  /** Open a directory for walking; reports and returns -1 when it cannot be opened. */
  #open(dirFd: number, name: Uint8Array, path: Uint8Array): number {
    try {
      return this.#libc.openat(dirFd, name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
    } catch (e) {
      this.#app.report(errorAt(e, path) as Error);
      return -1;
    }
  }

  /** List the open directory `fd` and make it the current frame (takes ownership of `fd`). */
  #enter(fd: number, path: Uint8Array, rel: Uint8Array): void {
    const libc = this.#libc;
    let names: Uint8Array[];
    try {
      names = libc.readdir(fd).map((d) => d.name);
    } catch (e) {
      libc.close(fd);
      this.#app.report(errorAt(e, path) as Error);
      return;
    }
    names.sort(compareBytes);
    this.#stack.push({ fd, path, rel, names, next: 0 });
  }

  step(): boolean {
    if (!this.#started) {
      this.#started = true;
      this.#start();
      return true;
    }
    const stack = this.#stack;
    const top = stack[stack.length - 1];
    if (!top) return false;
    if (top.next >= top.names.length) {
      stack.pop();
      this.#libc.close(top.fd);
      return true;
    }
    const name = top.names[top.next++];
    const rel = joinBytes(top.rel, name);
    const ref: FileRef = { dirFd: top.fd, name, dirPath: top.path };
    let st;
    try {
      st = this.#libc.fstatat(top.fd, name, AT.SYMLINK_NOFOLLOW);
    } catch (e) {
      if (!(e instanceof ErrnoError && e.errno === Errno.ENOENT)) {
        this.#app.report(errorAt(e, refPath(ref)) as Error);
      }
      return true;
    }
    if ((st.mode & S.IFMT) !== S.IFDIR) {
      if (!this.#pm?.matches(rel)) this.#app.addFile(ref, rel, st);
      return true;
    }
    if (this.#pm && this.#pm.matches(rel)) {
      if (!this.#pm.mustEnter(rel)) return true;
      const path = refPath(ref);
      const fd = this.#open(top.fd, name, path);
      if (fd >= 0) this.#enter(fd, path, rel);
      return true;
    }
    // Opened before its header is written: its xattrs are read through the descriptor.
    const path = refPath(ref);
    const fd = this.#open(top.fd, name, path);
    if (fd < 0) return true;
    ref.fd = fd;
    try {
      this.#app.addFile(ref, rel, st);
    } catch (e) {
      this.#libc.close(fd);
      throw e;
    }
    // Like Go's walk, the contents are archived even when the directory's own entry failed.
    this.#enter(fd, path, rel);
    return true;
  }

  #start(): void {
    const libc = this.#libc;
    let st;
    try {
      st = libc.fstatat(AT.FDCWD, this.#root, AT.SYMLINK_NOFOLLOW);
    } catch (e) {
      // Like Go, a missing directory gives an empty archive.
      if (e instanceof ErrnoError && e.errno === Errno.ENOENT) return;
      throw e;
    }
    if ((st.mode & S.IFMT) !== S.IFDIR) {
      throw new ErrnoError(Errno.ENOTDIR, "tarDirectory", new TextDecoder().decode(this.#root));
    }
    const fd = this.#open(AT.FDCWD, this.#root, this.#root);
    if (fd >= 0) this.#enter(fd, this.#root, new Uint8Array(0));
  }

  close(): void {
    while (this.#stack.length > 0) this.#libc.close(this.#stack.pop()!.fd);
  }
}

/**
 * The tree under `dir` as an uncompressed tar stream, produced lazily in
 * chunks of about 1 MiB (one per pull); cancelling the stream stops the walk
 * and closes every descriptor.
 *
 * Output is byte-identical to containers/storage 1.43's `TarWithOptions` for
 * the same options: pre-order walk in byte order of names, no entry for
 * `dir` itself, directory names ending in `/`, the header rules of
 * `TarAppender` (type bits in the mode, user/group names from the host,
 * whole-second mtimes, hard links to the first path written, sockets
 * skipped). A missing `dir` gives an empty archive (the 1024-byte end marker).
 *
 * Unlike Go, errors are never swallowed: see
 * {@linkcode TarDirectoryOptions.onError}. (A file deleted between the
 * directory listing and its `lstat` is simply not there: no error.) Without `onError`, a failed read
 * rejects with the error (an `ErrnoError` naming the call and path, or a
 * `TarSourceError`).
 *
 * @example
 * ```ts
 * import { tarDirectory } from "./tar_dir.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/hello.txt`, "hi\n");
 * const tar = await new Response(tarDirectory(dir)).arrayBuffer();
 * console.log(tar.byteLength); // 2048: header, one data block, end marker
 * ```
 */
export function tarDirectory(
  dir: string,
  opts: TarDirectoryOptions = {},
): ReadableStream<Uint8Array> {
  const libc = opts.libc ?? systemLibc();
  const pm = opts.excludePatterns && opts.excludePatterns.length > 0
    ? new PatternMatcher(opts.excludePatterns)
    : null;
  const app = new TarAppender({
    libc,
    names: hostIdNames(),
    uidMaps: opts.uidMaps,
    gidMaps: opts.gidMaps,
    whiteoutFormat: opts.whiteoutFormat,
    onError: opts.onError,
  });
  return tarStream(app, new DirWalker(dir, libc, app, pm));
}
