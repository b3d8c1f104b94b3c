/**
 * `exportChanges`: a list of changes as a layer tar, read from the layer's
 * view, like containers/storage 1.43's `ExportChanges` (the naive diff path).
 *
 * @module
 */

import { AT, Errno, ErrnoError, type Libc, O, RESOLVE, systemLibc } from "../../ffi/libc.ts";
import type { Change, IDMap } from "../driver.ts";
import { sortChanges } from "./changes.ts";
import { pathToBytes } from "./path_bytes.ts";
import { type EntrySource, TarAppender, tarStream } from "./tar_appender.ts";
import { hostIdNames } from "./users.ts";
import { WHITEOUT_PREFIX_BYTES } from "./whiteouts.ts";

/**
 * Options of {@linkcode exportChanges}.
 *
 * @example
 * ```ts
 * import { changesDirs, exportChanges, type ExportChangesOptions } from "../../mod.ts";
 * const changes = changesDirs("/srv/new", "/srv/old");
 * const opts: ExportChangesOptions = { onError: (e) => console.warn(e.message) };
 * await exportChanges("/srv/new", changes, opts).pipeTo((await Deno.create("/tmp/c.tar")).writable);
 * ```
 */
export interface ExportChangesOptions {
  /** Host → container uid ranges applied to every entry but `.wh.*` names. */
  uidMaps?: IDMap[];
  /** Host → container gid ranges applied to every entry but `.wh.*` names. */
  gidMaps?: IDMap[];
  /** System calls (default: the real libc). */
  libc?: Libc;
  /**
   * Receives each per-file error; the entry is left out (or its body
   * completed with zeros) and the export goes on. Without it the first error
   * errors the stream.
   */
  onError?: (e: Error) => void;
}

const SLASH = 0x2f;
const encoder = new TextEncoder();

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Adds one change per step; parent directories are opened without following symlinks. */
class ChangeSource implements EntrySource {
  readonly #libc: Libc;
  readonly #app: TarAppender;
  readonly #root: Uint8Array;
  readonly #changes: Change[];
  #next = 0;
  #rootFd = -1;
  /** The last parent directory opened, relative to the root, and its descriptor. */
  #parentRel: Uint8Array | null = null;
  #parentFd = -1;
  #noOpenat2 = false;

  constructor(dir: string, changes: Change[], libc: Libc, app: TarAppender) {
    this.#libc = libc;
    this.#app = app;
    this.#root = encoder.encode(dir);
    this.#changes = sortChanges([...changes]);
  }

  /** A descriptor of directory `rel` under the root (cached), or -1 when it is gone. */
  #parent(rel: Uint8Array): number {
    const libc = this.#libc;
    if (this.#rootFd < 0) this.#rootFd = libc.openat(AT.FDCWD, this.#root, O.PATH | O.DIRECTORY);
    if (rel.length === 0) return this.#rootFd;
    if (this.#parentRel && bytesEqual(this.#parentRel, rel)) return this.#parentFd;
    this.#dropParent();
    let fd: number;
    try {
      fd = this.#openBeneath(rel);
    } catch (e) {
      if (
        e instanceof ErrnoError &&
        (e.errno === Errno.ENOENT || e.errno === Errno.ENOTDIR || e.errno === Errno.ELOOP)
      ) {
        return -1;
      }
      throw e;
    }
    this.#parentRel = rel;
    this.#parentFd = fd;
    return fd;
  }

  #openBeneath(rel: Uint8Array): number {
    const libc = this.#libc;
    const flags = O.PATH | O.DIRECTORY;
    if (!this.#noOpenat2) {
      try {
        return libc.openat2(
          this.#rootFd,
          rel,
          flags,
          0,
          RESOLVE.BENEATH | RESOLVE.NO_SYMLINKS,
        );
      } catch (e) {
        if (!(e instanceof ErrnoError && e.errno === Errno.ENOSYS)) throw e;
        this.#noOpenat2 = true;
      }
    }
    // Kernels before 5.6: an ordinary lookup, as Go does.
    return libc.openat(this.#rootFd, rel, flags);
  }

  #dropParent(): void {
    if (this.#parentFd >= 0) this.#libc.close(this.#parentFd);
    this.#parentFd = -1;
    this.#parentRel = null;
  }

  step(): boolean {
    if (this.#next >= this.#changes.length) return false;
    const c = this.#changes[this.#next++];
    const abs = pathToBytes(c.path);
    let rel = abs;
    while (rel.length > 0 && rel[0] === SLASH) rel = rel.subarray(1);
    const cut = rel.lastIndexOf(SLASH);
    const parentRel = cut < 0 ? rel.subarray(0, 0) : rel.subarray(0, cut);
    const base = rel.subarray(cut + 1);
    if (c.kind === "delete") {
      const name = new Uint8Array(rel.length + WHITEOUT_PREFIX_BYTES.length);
      name.set(rel.subarray(0, cut + 1));
      name.set(WHITEOUT_PREFIX_BYTES, cut + 1);
      name.set(base, cut + 1 + WHITEOUT_PREFIX_BYTES.length);
      this.#app.addWhiteout(name, Math.round(Date.now() / 1000));
      return true;
    }
    let dirFd: number;
    try {
      dirFd = this.#parent(parentRel);
    } catch (e) {
      this.#app.report(e as Error);
      return true;
    }
    if (dirFd < 0) return true; // the path is gone
    let dirPath = this.#root;
    if (parentRel.length > 0) {
      dirPath = new Uint8Array(this.#root.length + 1 + parentRel.length);
      dirPath.set(this.#root);
      dirPath[this.#root.length] = SLASH;
      dirPath.set(parentRel, this.#root.length + 1);
    }
    this.#app.addFile({ dirFd, name: base, dirPath }, rel);
    return true;
  }

  close(): void {
    this.#dropParent();
    if (this.#rootFd >= 0) this.#libc.close(this.#rootFd);
    this.#rootFd = -1;
  }
}

/**
 * The changes as an uncompressed layer tar read from `dir`, like Go's
 * `ExportChanges`: changes sorted by path; a `delete` becomes an empty
 * whiteout entry `<dir>/.wh.<name>` (mode 0, ids 0, mtime now); an `add` or
 * `modify` becomes the file's entry with the header rules of `tarDirectory`
 * (hard links are tracked across the whole export). A changed path that no
 * longer exists is left out.
 *
 * Parent directories are opened with `openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS)`, so a path whose directories were swapped for
 * symlinks is not read outside `dir` (a plain lookup on kernels without
 * openat2). Errors go to `onError` or error the stream, as in `tarDirectory`.
 *
 * @example
 * ```ts
 * import { exportChanges } from "./export.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "abc");
 * const tar = exportChanges(dir, [{ path: "/a", kind: "add" }, { path: "/b", kind: "delete" }]);
 * console.log((await new Response(tar).arrayBuffer()).byteLength); // 2560
 * ```
 */
export function exportChanges(
  dir: string,
  changes: Change[],
  opts: ExportChangesOptions = {},
): ReadableStream<Uint8Array> {
  const libc = opts.libc ?? systemLibc();
  const app = new TarAppender({
    libc,
    names: hostIdNames(),
    uidMaps: opts.uidMaps,
    gidMaps: opts.gidMaps,
    onError: opts.onError,
  });
  return tarStream(app, new ChangeSource(dir, changes, libc, app));
}
