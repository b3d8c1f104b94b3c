/**
 * Literal, confined extraction of a tar stream: containers/storage's
 * `chrootarchive.UntarUncompressed` → `Unpack`, which is what
 * the aufs driver's native `ApplyDiff` does with a layer.
 *
 * - Literal: whiteout files and opaque markers land as the files they are
 *   in the tar; nothing is deleted (that is aufs's own on-disk format).
 * - Confined: names resolve as if `dest` were `/` (see {@linkcode Root}):
 *   `../x` lands in `dest/x`, symlinks created by the tar resolve inside
 *   `dest` when later entries go through them, hard-link sources are looked
 *   up inside `dest`. Nothing outside `dest` is created, changed or read.
 * - Entries whose name cleans to the root itself (`.`, `./`, `..`, `/`) are
 *   skipped: the root's own metadata is never applied.
 *
 * @module
 */

import { nameText, type TarHeader } from "./tar_header.ts";
import { EntryWriter, type ExtractSink, extractStream, type UntarOptions } from "./extract.ts";
import { cleanInRoot, type Root } from "./root.ts";

export {
  ExtractError,
  type IDMap,
  InvalidArchiveError,
  type Libc,
  type UntarOptions,
} from "./extract.ts";

/** The sink of a literal extraction: every entry goes to the writer. */
class UntarSink implements ExtractSink {
  #w: EntryWriter;
  #warn: ((message: string) => void) | undefined;
  #current: TarHeader | null = null;
  entries = 0;

  constructor(root: Root, opts: UntarOptions) {
    this.#w = new EntryWriter(root, opts);
    this.#warn = opts.onWarning;
  }

  get current(): string | undefined {
    return this.#current ? nameText(this.#current.name) : undefined;
  }

  entry(h: TarHeader): void {
    this.entries++;
    this.#current = h;
    const path = cleanInRoot(h.name);
    if (path.length === 0) return; // the root itself: skipped
    this.#w.begin(h, path);
  }

  data(chunk: Uint8Array): void {
    this.#w.data(chunk);
  }

  end(): void {
    this.#w.end();
    this.#current = null;
  }

  complete(): void {
    this.#w.finishDirs();
    if (this.#w.ignoredXattrs > 0) {
      this.#warn?.(
        `untar: ${this.#w.ignoredXattrs} xattrs ignored: the filesystem does not support them`,
      );
    }
  }

  abort(): void {
    this.#w.abort();
  }
}

/**
 * Extract `tar` literally into `dest` (created 0755, owned by the root
 * pair, if missing), confined to `dest`.
 *
 * Ownership is set to the header ids mapped container→host; modes are
 * exact (setuid/setgid/sticky included); xattrs are applied (ENOTSUP
 * tolerated); times with nanoseconds when the tar has them, atime never
 * before mtime, pre-1970 times clamped to the epoch, directories' times
 * set after their contents. Device nodes are skipped in a user namespace.
 *
 * @throws {ExtractError} naming the entry and the failing call; its
 * `cause` is the `ErrnoError`, `TarFormatError`, `InvalidArchiveError` or
 * id-map error.
 *
 * @example
 * ```ts
 * import { untar } from "./untar.ts";
 * import { encodeHeader, END_OF_ARCHIVE } from "./tar_writer.ts";
 * import { makeHeader, TarType } from "./tar_header.ts";
 * const tar = ReadableStream.from([
 *   encodeHeader(makeHeader({ name: "etc/", type: TarType.DIR, mode: 0o755 })),
 *   encodeHeader(makeHeader({ name: "../../etc/motd", mode: 0o644 })), // lands in dest/etc
 *   END_OF_ARCHIVE,
 * ]);
 * const dest = await Deno.makeTempDir();
 * await untar(tar, dest);
 * console.log(Deno.statSync(`${dest}/etc/motd`).isFile); // true
 * ```
 */
export function untar(
  tar: ReadableStream<Uint8Array>,
  dest: string,
  opts: UntarOptions = {},
): Promise<void> {
  return extractStream(tar, dest, opts, "untar", (root) => new UntarSink(root, opts));
}
