/**
 * The CLI's tar input: a file or stdin, plain, gzip or zstd (told by the
 * first bytes, see `lib/compression.ts`). A plain file is handed on as its
 * own byte stream, so extraction reads it with BYOB reads into reused
 * buffers; compressed input is inflated on the second core by a worker that
 * reads the descriptor itself. xz and bzip2 are refused with the tool that
 * undoes them.
 *
 * @module
 */

import { AT, type Libc, O, S, systemLibc } from "../ffi/libc.ts";
import {
  type Compression,
  decompressed,
  decompressFd,
  detectCompression,
  type ReadableCompression,
  SNIFF_BYTES,
  UnsupportedCompressionError,
} from "../lib/compression.ts";

export { type Compression, decompressed, detectCompression, UnsupportedCompressionError };

/** An opened tar input. */
export interface TarInput {
  /** The uncompressed tar (a byte stream). */
  stream: ReadableStream<Uint8Array>;
  /** How the input was compressed. */
  format: Compression;
}

/** Read up to `want` bytes from the current position of `fd`. */
function readHead(libc: Libc, fd: number, want: number): Uint8Array {
  const head = new Uint8Array(want);
  let have = 0;
  while (have < want) {
    const n = libc.read(fd, head.subarray(have));
    if (n === 0) break;
    have += n;
  }
  return head.subarray(0, have);
}

/**
 * A byte stream of `head` then what `read(2)` gives on `fd` (stdin, a
 * pipe): each BYOB read is filled straight from the descriptor.
 */
function fdBytes(libc: Libc, fd: number, head: Uint8Array): ReadableStream<Uint8Array> {
  let rest = head;
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: 1 << 20,
    pull(controller) {
      const req = controller.byobRequest!;
      const view = new Uint8Array(req.view!.buffer, req.view!.byteOffset, req.view!.byteLength);
      if (rest.length > 0) {
        const n = Math.min(rest.length, view.length);
        view.set(rest.subarray(0, n));
        rest = rest.subarray(n);
        req.respond(n);
        return;
      }
      const n = libc.read(fd, view);
      if (n === 0) {
        controller.close();
        req.respond(0);
        return;
      }
      req.respond(n);
    },
  });
}

/**
 * Open `source` (a path, or `-` for stdin) as an uncompressed tar stream.
 * Throws {@linkcode UnsupportedCompressionError} for xz and bzip2, and an
 * error naming the path when it cannot be opened.
 *
 * @example
 * ```ts
 * import { openTarInput } from "./decompress.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array(1024)); // an empty tar
 * const { stream, format } = await openTarInput(path);
 * console.log(format); // none
 * await stream.cancel();
 * ```
 */
export async function openTarInput(source: string, libc: Libc = systemLibc()): Promise<TarInput> {
  const name = source === "-" ? "stdin" : source;
  let fd = 0;
  if (source !== "-") {
    try {
      fd = libc.openat(AT.FDCWD, source, O.RDONLY | O.CLOEXEC);
    } catch (e) {
      throw new Error(`open ${source}: ${(e as Error).message}`, { cause: e });
    }
    if ((libc.fstat(fd).mode & S.IFMT) === S.IFDIR) {
      libc.close(fd);
      throw new Error(`open ${source}: is a directory, not a tar file`);
    }
  }
  let handedOn = false;
  try {
    let head: Uint8Array;
    try {
      head = readHead(libc, fd, SNIFF_BYTES);
    } catch (e) {
      throw new Error(`read ${name}: ${(e as Error).message}`, { cause: e });
    }
    const format = detectCompression(head);
    if (format === "xz" || format === "bzip2") throw new UnsupportedCompressionError(name, format);
    if (format === "gzip" || format === "zstd") {
      handedOn = true;
      const stream = decompressFd(fd, format as ReadableCompression, {
        head,
        closeFd: source !== "-",
        source: name,
        libc,
      });
      return { stream, format };
    }
    if (source === "-") {
      handedOn = true;
      return { stream: fdBytes(libc, fd, head), format };
    }
    // A plain file: Deno's own byte stream from the start (async reads, BYOB).
    const file = await Deno.open(source, { read: true });
    return { stream: file.readable, format };
  } finally {
    if (!handedOn && source !== "-") libc.close(fd);
  }
}
