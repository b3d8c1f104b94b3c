/**
 * Layer tars arrive plain or gzip-compressed; the format is told by the first
 * bytes, not by a file name. gzip is undone with the built-in
 * `DecompressionStream`; zstd, xz and bzip2 are recognised and refused with an
 * error that names the format and the command that undoes it.
 *
 * @module
 */

/** Compression formats recognised by their magic bytes. */
export type Compression = "none" | "gzip" | "zstd" | "xz" | "bzip2";

/** The input is compressed in a format strata does not read. */
export class UnsupportedCompressionError extends Error {
  /** The recognised format. */
  readonly format: Compression;
  /** `source` names the input (a file, or `stdin`). */
  constructor(source: string, format: Compression, tool: string) {
    super(
      `${source} is ${format}-compressed: strata reads plain or gzip tars; ` +
        `decompress it first (${tool})`,
    );
    this.name = "UnsupportedCompressionError";
    this.format = format;
  }
}

const BLOCK = 512;

function startsWith(buf: Uint8Array, magic: readonly number[]): boolean {
  return buf.length >= magic.length && magic.every((b, i) => buf[i] === b);
}

/** True when the first 512 bytes are a tar header with a valid checksum. */
function isTarHeader(buf: Uint8Array): boolean {
  if (buf.length < BLOCK) return false;
  const field = new TextDecoder().decode(buf.subarray(148, 156)).replace(/\0.*$/s, "").trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : buf[i];
  return sum === parseInt(field, 8);
}

/**
 * Tell the compression of a stream from its first bytes (up to 512). A valid
 * tar header wins over any magic (a tar may start with a file named `BZh...`).
 *
 * @example
 * ```ts
 * import { detectCompression } from "./decompress.ts";
 * console.log(detectCompression(new Uint8Array([0x1f, 0x8b, 8, 0]))); // gzip
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

const TOOLS: Record<string, string> = { zstd: "zstd -d", xz: "xz -d", bzip2: "bunzip2" };

/** Read up to `want` bytes from `reader` (fewer at end of stream). */
async function peek(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  want: number,
): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  let have = 0;
  while (have < want) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    have += value.length;
  }
  return chunks;
}

function concat(chunks: Uint8Array[], limit: number): Uint8Array {
  const total = Math.min(limit, chunks.reduce((n, c) => n + c.length, 0));
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    if (off >= total) break;
    const part = c.subarray(0, total - off);
    out.set(part, off);
    off += part.length;
  }
  return out;
}

/**
 * The uncompressed tar of `input`: passed through when plain, gunzipped when
 * gzip; throws {@linkcode UnsupportedCompressionError} for zstd, xz, bzip2.
 * `source` names the input in messages.
 *
 * @example
 * ```ts
 * import { decompressed } from "./decompress.ts";
 * const file = await Deno.open("layer.tar.gz");
 * const { stream, format } = await decompressed(file.readable, "layer.tar.gz");
 * console.log(format); // gzip
 * await stream.cancel();
 * ```
 */
export async function decompressed(
  input: ReadableStream<Uint8Array>,
  source: string,
): Promise<{ stream: ReadableStream<Uint8Array>; format: Compression }> {
  const reader = input.getReader();
  let chunks: Uint8Array[];
  try {
    chunks = await peek(reader, BLOCK);
  } catch (e) {
    reader.releaseLock();
    throw e;
  }
  const format = detectCompression(concat(chunks, BLOCK));
  if (format !== "none" && format !== "gzip") {
    await reader.cancel().catch(() => {});
    throw new UnsupportedCompressionError(source, format, TOOLS[format]);
  }
  const replay = new ReadableStream<Uint8Array>({
    pull: async (controller) => {
      const next = chunks.shift();
      if (next) {
        controller.enqueue(next);
        return;
      }
      const { value, done } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  if (format === "gzip") {
    return {
      stream: replay.pipeThrough(
        new DecompressionStream("gzip") as TransformStream<Uint8Array, Uint8Array>,
      ),
      format,
    };
  }
  return { stream: replay, format };
}
