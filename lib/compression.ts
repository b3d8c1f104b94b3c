/**
 * Compressed layer tars: tell the format from the first bytes (never from a
 * file name) and undo gzip or zstd with `node:zlib`, either in the calling
 * thread ({@linkcode decompressed}, any stream) or on a second core
 * ({@linkcode decompressFd}: a worker reads a descriptor and inflates while
 * the caller extracts). xz and bzip2 are recognised and refused with an
 * error naming the tool that undoes them.
 *
 * @module
 */

import { Duplex } from "node:stream";
import zlib from "node:zlib";
import { type Libc, systemLibc } from "../ffi/libc.ts";

/**
 * Compression formats recognised by their magic bytes.
 *
 * @example
 * ```ts
 * import { type Compression, detectCompression } from "../mod.ts";
 * const format: Compression = detectCompression(new Uint8Array([0x1f, 0x8b, 8, 0]));
 * console.log(format); // gzip
 * ```
 */
export type Compression = "none" | "gzip" | "zstd" | "xz" | "bzip2";

/**
 * The formats strata decompresses itself.
 *
 * @example
 * ```ts
 * import { decompressor, type ReadableCompression } from "../mod.ts";
 * const format: ReadableCompression = "zstd";
 * const tar = (await Deno.open("layer.tar.zst")).readable.pipeThrough(decompressor(format));
 * console.log((await new Response(tar).arrayBuffer()).byteLength);
 * ```
 */
export type ReadableCompression = "gzip" | "zstd";

/**
 * The input is compressed in a format strata does not read (xz, bzip2).
 *
 * @example
 * ```ts
 * import { UnsupportedCompressionError } from "./compression.ts";
 * const e = new UnsupportedCompressionError("layer.tar.xz", "xz");
 * console.log(e.message.includes("xz -d")); // true
 * ```
 */
export class UnsupportedCompressionError extends Error {
  /** The recognised format. */
  readonly format: Compression;
  /** `source` names the input (a file, or `stdin`). */
  constructor(source: string, format: Compression) {
    super(
      `${source} is ${format}-compressed: strata reads plain, gzip or zstd tars; ` +
        `decompress it first (${TOOLS[format] ?? "the matching tool"})`,
    );
    this.name = "UnsupportedCompressionError";
    this.format = format;
  }
}

const TOOLS: Partial<Record<Compression, string>> = { xz: "xz -d", bzip2: "bunzip2" };

/** How many leading bytes {@linkcode detectCompression} wants (one tar block). */
export const SNIFF_BYTES = 512;

function startsWith(buf: Uint8Array, magic: readonly number[]): boolean {
  return buf.length >= magic.length && magic.every((b, i) => buf[i] === b);
}

/** True when the first 512 bytes are a tar header with a valid checksum. */
function isTarHeader(buf: Uint8Array): boolean {
  if (buf.length < SNIFF_BYTES) return false;
  let field = 0, digits = 0;
  for (let i = 148; i < 156; i++) {
    const c = buf[i];
    if (c >= 0x30 && c <= 0x37) {
      field = field * 8 + (c - 0x30);
      digits++;
    } else if (c === 0 || c === 0x20) {
      if (digits > 0) break;
    } else return false;
  }
  if (digits === 0) return false;
  let sum = 0;
  for (let i = 0; i < SNIFF_BYTES; i++) sum += i >= 148 && i < 156 ? 0x20 : buf[i];
  return sum === field;
}

/**
 * Tell the compression of a stream from its first bytes (up to
 * {@linkcode SNIFF_BYTES}). A valid tar header wins over any magic (a tar
 * may start with a file named `BZh...`).
 *
 * @example
 * ```ts
 * import { detectCompression } from "./compression.ts";
 * console.log(detectCompression(new Uint8Array([0x1f, 0x8b, 8, 0]))); // gzip
 * console.log(detectCompression(new Uint8Array([0x28, 0xb5, 0x2f, 0xfd]))); // zstd
 * ```
 */
export function detectCompression(head: Uint8Array): Compression {
  if (isTarHeader(head)) return "none";
  if (startsWith(head, [0x1f, 0x8b])) return "gzip";
  if (startsWith(head, [0x28, 0xb5, 0x2f, 0xfd])) return "zstd";
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return "xz";
  if (
    startsWith(head, [0x42, 0x5a, 0x68]) && head.length >= 4 && head[3] >= 0x31 && head[3] <= 0x39
  ) {
    return "bzip2";
  }
  return "none";
}

/**
 * A transform that undoes `format` in the calling thread (`node:zlib`).
 *
 * @example
 * ```ts
 * import { gzipSync } from "node:zlib";
 * import { decompressor } from "./compression.ts";
 * const packed = new Blob([new Uint8Array(gzipSync(new TextEncoder().encode("hi")))]).stream();
 * const text = await new Response(packed.pipeThrough(decompressor("gzip"))).text();
 * console.log(text); // hi
 * ```
 */
export function decompressor(
  format: ReadableCompression,
): { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> } {
  const z = format === "gzip" ? zlib.createGunzip() : zlib.createZstdDecompress();
  return Duplex.toWeb(z) as unknown as {
    readable: ReadableStream<Uint8Array>;
    writable: WritableStream<Uint8Array>;
  };
}

/** Throw {@linkcode UnsupportedCompressionError} unless strata reads `format`. */
function mustRead(format: Compression, source: string): void {
  if (format === "xz" || format === "bzip2") throw new UnsupportedCompressionError(source, format);
}

/**
 * A byte stream of `head` followed by what `reader` still gives. Reads of a
 * BYOB reader of the result go straight into the caller's buffer when
 * `reader` is itself a BYOB reader (no copy, no fresh chunk).
 */
function replayBytes(
  head: Uint8Array,
  reader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array>,
): ReadableStream<Uint8Array> {
  let rest = head;
  let carry: Uint8Array = new Uint8Array(0);
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: 1 << 20,
    async pull(controller) {
      const req = controller.byobRequest!;
      const view = new Uint8Array(req.view!.buffer, req.view!.byteOffset, req.view!.byteLength);
      const pending = rest.length > 0 ? rest : carry;
      if (pending.length > 0) {
        const n = Math.min(pending.length, view.length);
        view.set(pending.subarray(0, n));
        if (pending === rest) rest = rest.subarray(n);
        else carry = carry.subarray(n);
        req.respond(n);
        return;
      }
      if (reader instanceof ReadableStreamBYOBReader) {
        const { done, value } = await reader.read(view);
        if (done) {
          controller.close();
          if (value) req.respondWithNewView(value);
          else req.respond(0);
          return;
        }
        req.respondWithNewView(value);
        return;
      }
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        req.respond(0);
        return;
      }
      const n = Math.min(value.length, view.length);
      view.set(value.subarray(0, n));
      carry = value.subarray(n);
      req.respond(n);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

/** Read up to `want` bytes from the start of `reader` (fewer at end of stream). */
async function sniff(
  reader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array>,
  want: number,
): Promise<{ head: Uint8Array; carry: Uint8Array }> {
  if (reader instanceof ReadableStreamBYOBReader) {
    let buf = new Uint8Array(want), have = 0;
    while (have < want) {
      const { done, value } = await reader.read(buf.subarray(have));
      if (!value) break;
      buf = new Uint8Array(value.buffer);
      have += value.length;
      if (done) break;
    }
    return { head: buf.subarray(0, have), carry: new Uint8Array(0) };
  }
  const chunks: Uint8Array[] = [];
  let have = 0;
  while (have < want) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    have += value.length;
  }
  const all = new Uint8Array(have);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return { head: all, carry: new Uint8Array(0) };
}

/**
 * The uncompressed tar of `input`, decompressed in this thread: a plain tar
 * is passed through as a byte stream (BYOB reads reach `input`'s own reader
 * when it is a byte stream, e.g. a file's `readable`), gzip and zstd are
 * undone with `node:zlib`; xz and bzip2 throw
 * {@linkcode UnsupportedCompressionError}. `source` names the input in
 * messages.
 *
 * @example
 * ```ts
 * import { decompressed } from "./compression.ts";
 * import { gzipSync } from "node:zlib";
 * const gz = gzipSync(new Uint8Array(1024));
 * const { stream, format } = await decompressed(new Blob([new Uint8Array(gz)]).stream(), "t.tar.gz");
 * console.log(format, (await new Response(stream).arrayBuffer()).byteLength); // gzip 1024
 * ```
 */
export async function decompressed(
  input: ReadableStream<Uint8Array>,
  source: string,
): Promise<{ stream: ReadableStream<Uint8Array>; format: Compression }> {
  let reader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array>;
  try {
    reader = input.getReader({ mode: "byob" });
  } catch {
    reader = input.getReader();
  }
  let head: Uint8Array;
  try {
    head = (await sniff(reader, SNIFF_BYTES)).head;
  } catch (e) {
    reader.releaseLock();
    throw e;
  }
  const format = detectCompression(head);
  try {
    mustRead(format, source);
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw e;
  }
  const plain = replayBytes(head, reader);
  if (format === "none") return { stream: plain, format };
  return { stream: plain.pipeThrough(decompressor(format as ReadableCompression)), format };
}

/**
 * Options of {@linkcode decompressFd}.
 *
 * @example
 * ```ts
 * import { AT, decompressFd, type DecompressFdOptions, O, systemLibc } from "../mod.ts";
 * const libc = systemLibc();
 * const fd = libc.openat(AT.FDCWD, "layer.tar.gz", O.RDONLY | O.CLOEXEC);
 * const opts: DecompressFdOptions = { source: "layer.tar.gz", closeFd: true };
 * const tar = decompressFd(fd, "gzip", opts);
 * console.log((await new Response(tar).arrayBuffer()).byteLength);
 * ```
 */
export interface DecompressFdOptions {
  /** Bytes already read from `fd` (its first bytes, e.g. the sniffed head). */
  head?: Uint8Array;
  /** Close `fd` when the stream ends, fails or is cancelled (default true). */
  closeFd?: boolean;
  /** Names the input in error messages (default `fd N`). */
  source?: string;
  /** System calls (default: the real libc). */
  libc?: Libc;
}

/** Size of the buffers passed between the worker and the reader. */
const OUT_CHUNK = 1 << 20;

/**
 * Decompress what `fd` holds (after `opts.head`) on another thread: a
 * worker reads the descriptor and inflates `format` with `node:zlib` into a
 * few 1 MiB buffers that travel back and forth (no fresh memory per chunk),
 * while the caller consumes the returned byte stream. At most four buffers
 * are in flight, so memory stays flat however large the input.
 *
 * @example
 * ```ts
 * import { decompressFd } from "./compression.ts";
 * import { gzipSync } from "node:zlib";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, gzipSync(new Uint8Array(4096)));
 * const f = await Deno.open(path);
 * const fd = (await import("../ffi/libc.ts")).systemLibc().openat(-100, path, 0);
 * f.close();
 * const out = await new Response(decompressFd(fd, "gzip")).arrayBuffer();
 * console.log(out.byteLength); // 4096
 * ```
 */
export function decompressFd(
  fd: number,
  format: ReadableCompression,
  opts: DecompressFdOptions = {},
): ReadableStream<Uint8Array> {
  const libc = opts.libc ?? systemLibc();
  const source = opts.source ?? `fd ${fd}`;
  const worker = new Worker(new URL("./decompress_worker.ts", import.meta.url), {
    type: "module",
  });
  const chunks: Uint8Array[] = [];
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    worker.terminate();
    if (opts.closeFd ?? true) {
      try {
        libc.close(fd);
      } catch {
        // already reported through the stream, or closed by its owner
      }
    }
  };
  worker.onmessage = (e: MessageEvent) => {
    const m = e.data as { type: string; buffer?: ArrayBuffer; length?: number; message?: string };
    if (m.type === "chunk") chunks.push(new Uint8Array(m.buffer!, 0, m.length!));
    else if (m.type === "end") ended = true;
    else if (m.type === "error") {
      failure = new Error(`${source}: ${format} decompression failed: ${m.message}`);
    }
    wake?.();
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    failure = new Error(`${source}: ${format} decompression worker failed: ${e.message}`);
    wake?.();
  };
  const head = opts.head ?? new Uint8Array(0);
  worker.postMessage({ type: "start", fd, format, head, buffers: 4, size: OUT_CHUNK });
  let current: Uint8Array | undefined;
  let offset = 0;
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: OUT_CHUNK,
    async pull(controller) {
      const req = controller.byobRequest!;
      const view = new Uint8Array(req.view!.buffer, req.view!.byteOffset, req.view!.byteLength);
      let filled = 0;
      while (filled < view.length) {
        if (current === undefined) {
          while (chunks.length === 0 && !ended && failure === undefined) {
            if (filled > 0) break;
            await new Promise<void>((resolve) => wake = resolve);
            wake = undefined;
          }
          if (failure !== undefined) {
            finish();
            throw failure;
          }
          const next = chunks.shift();
          if (next === undefined) break;
          current = next;
          offset = 0;
        }
        const n = Math.min(current.length - offset, view.length - filled);
        view.set(current.subarray(offset, offset + n), filled);
        filled += n;
        offset += n;
        if (offset === current.length) {
          const buffer = current.buffer as ArrayBuffer;
          current = undefined;
          worker.postMessage({ type: "buffer", buffer }, [buffer]);
        }
      }
      if (filled > 0) {
        req.respond(filled);
        return;
      }
      finish();
      controller.close();
      req.respond(0);
    },
    cancel() {
      finish();
    },
  });
}
