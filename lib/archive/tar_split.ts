/**
 * tar-split, containers/storage's record of a layer tar's non-file bytes
 * (vbatts/tar-split `tar/storage` and `tar/asm`), written while a tar is
 * extracted and read back to reassemble the original tar, byte for byte,
 * from the extracted files.
 *
 * The format: JSON objects, one a line (the layer store gzips the whole):
 *
 * - `{"type":2,"payload":"<base64>","position":N}`: a segment, raw bytes of
 *   the stream (headers, PAX and GNU long-name records, padding, the end
 *   blocks and whatever follows them);
 * - `{"type":1,"name":"<name>","size":S,"payload":"<base64>","position":N}`:
 *   an entry's file body, `S` bytes read back from the file `name` (relative
 *   to the layer root); the payload is the CRC-64/ISO of the content, 8 bytes
 *   big-endian (`null` when the body is empty). A name that is not valid
 *   UTF-8 is given as `"name_raw":"<base64>"` instead.
 *
 * `position` counts the objects from 0. Every entry of the tar gets a type-1
 * object (directories, links and empty files with size 0, which reassembly
 * skips); segments come before the entry whose header they end with. After
 * the last entry come the bytes up to the end of the end-of-archive marker,
 * then anything after it in pieces of at most 1 MiB, then an empty segment,
 * as Go's `asm.NewInputTarStream` writes them.
 *
 * Reassembly ({@linkcode assembleTar}) refuses what could make it read or
 * write what it should not: names that leave the layer, files that are not
 * regular or whose size disagrees with the record, a checksum that does not
 * match, unknown object types, positions out of order, malformed or
 * truncated JSON, a damaged gzip stream.
 *
 * @module
 */

import { AT, type Libc, O, RESOLVE, S, systemLibc } from "../../ffi/libc.ts";
import type { FileGetter } from "../driver.ts";
import { Crc64 } from "./crc64.ts";
import type { TarParser, TarSink } from "./tar_reader.ts";
import type { TarHeader } from "./tar_header.ts";

/**
 * Object type of a file entry.
 *
 * @example
 * ```ts
 * import { TAR_SPLIT_FILE, type TarSplitEntry } from "../../mod.ts";
 * const isFile = (e: TarSplitEntry) => e.type === TAR_SPLIT_FILE;
 * console.log(isFile({ type: 2, payload: new Uint8Array(0), position: 0 })); // false
 * ```
 */
export const TAR_SPLIT_FILE = 1;
/**
 * Object type of a raw segment.
 *
 * @example
 * ```ts
 * import { TAR_SPLIT_SEGMENT, TarSplitReader } from "../../mod.ts";
 * const text = '{"type":2,"payload":"","position":0}\n';
 * const r = new TarSplitReader(new Blob([text]).stream(), "example", { gzip: false });
 * console.log((await r.next())?.type === TAR_SPLIT_SEGMENT); // true
 * ```
 */
export const TAR_SPLIT_SEGMENT = 2;

/** Go's cap on one trailing-padding segment. */
const TRAILING_CHUNK = 1 << 20;
/** Longest JSON line accepted when reading (a 1 MiB PAX header in base64 is ~1.4 MB). */
const MAX_LINE = 16 << 20;
/** Output chunk of reassembly. */
const CHUNK_SIZE = 1 << 20;
/** Output buffer of the recorder before it is handed to the gzip stream. */
const OUT_BUFFER = 256 * 1024;

const EMPTY = new Uint8Array(0);
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const utf8 = new TextDecoder();

/**
 * A tar-split record that cannot be used: malformed, truncated, or naming
 * files that do not match the layer. `entry` is the file's name when one is
 * concerned, `position` the object's position (or line number when the
 * object could not be read).
 *
 * @example
 * ```ts
 * import { TarSplitError } from "./tar_split.ts";
 * const e = new TarSplitError("layer1.tar-split.gz", "checksum mismatch", { entry: "etc/passwd" });
 * console.log(e.message);
 * ```
 */
export class TarSplitError extends Error {
  /** What is wrong, without the location. */
  readonly reason: string;
  /** The record (a path or a label) the error is about. */
  readonly source: string;
  /** The file entry concerned, if any. */
  readonly entry?: string;
  /** Position of the object (or the line number for unreadable lines). */
  readonly position?: number;

  /** Builds the message from the source, reason, entry and position. */
  constructor(
    source: string,
    reason: string,
    opts: { entry?: string; position?: number; cause?: unknown } = {},
  ) {
    const where = [
      opts.entry !== undefined ? `file ${JSON.stringify(opts.entry)}` : "",
      opts.position !== undefined ? `position ${opts.position}` : "",
    ].filter((x) => x).join(", ");
    super(
      `tar-split ${source}: ${reason}${where ? ` (${where})` : ""}`,
      opts.cause === undefined ? undefined : { cause: opts.cause },
    );
    this.name = "TarSplitError";
    this.reason = reason;
    this.source = source;
    if (opts.entry !== undefined) this.entry = opts.entry;
    if (opts.position !== undefined) this.position = opts.position;
  }
}

// ---------------------------------------------------------------- writing

const B64 = new TextEncoder().encode(
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
);
const HEX = new TextEncoder().encode("0123456789abcdef");
const enc = new TextEncoder();
const SEG_HEAD = enc.encode('{"type":2,"payload":"');
const POS_HEAD = enc.encode('","position":');
const FILE_HEAD = enc.encode('{"type":1,');
const NAME_KEY = enc.encode('"name":"');
const NAME_RAW_KEY = enc.encode('"name_raw":"');
const SIZE_KEY = enc.encode('","size":');
const PAYLOAD_KEY = enc.encode(',"payload":"');
const NULL_PAYLOAD = enc.encode('","payload":null,"position":');
const NULL_PAYLOAD_AFTER_SIZE = enc.encode(',"payload":null,"position":');
const POSITION_KEY = enc.encode(',"position":');

/**
 * Writes tar-split JSON lines into a reused buffer and hands full buffers
 * (copies) to `out`. Field order and escaping follow Go's `encoding/json`
 * (`<`, `>`, `&`, U+2028 and U+2029 escaped), so a record written here reads
 * the same as one from the Go code.
 */
class LineWriter {
  #buf = new Uint8Array(OUT_BUFFER);
  #n = 0;
  #pos = 0;
  #out: (bytes: Uint8Array) => void;

  constructor(out: (bytes: Uint8Array) => void) {
    this.#out = out;
  }

  /** Objects written so far. */
  get count(): number {
    return this.#pos;
  }

  segment(bytes: Uint8Array): void {
    this.#reserve(SEG_HEAD.length + base64Length(bytes.length) + 40);
    this.#put(SEG_HEAD);
    this.#base64(bytes);
    this.#put(POS_HEAD);
    this.#end();
  }

  /** A file entry; `crc` is 8 bytes, or null for an empty body. */
  file(name: Uint8Array, size: number, crc: Uint8Array | null): void {
    this.#reserve(name.length * 6 + 120);
    this.#put(FILE_HEAD);
    const valid = isUtf8(name);
    this.#put(valid ? NAME_KEY : NAME_RAW_KEY);
    if (valid) this.#jsonString(name);
    else this.#base64(name);
    if (size > 0) {
      this.#put(SIZE_KEY);
      this.#ascii(String(size));
      if (crc === null) {
        this.#put(NULL_PAYLOAD_AFTER_SIZE);
      } else {
        this.#put(PAYLOAD_KEY);
        this.#base64(crc);
        this.#byte(0x22);
        this.#put(POSITION_KEY);
      }
    } else {
      this.#put(NULL_PAYLOAD);
    }
    this.#ascii(String(this.#pos));
    this.#byte(0x7d);
    this.#byte(0x0a);
    this.#pos++;
  }

  /** Hand over what is buffered. */
  flush(): void {
    if (this.#n === 0) return;
    this.#out(this.#buf.slice(0, this.#n));
    this.#n = 0;
  }

  #end(): void {
    this.#ascii(String(this.#pos));
    this.#byte(0x7d);
    this.#byte(0x0a);
    this.#pos++;
  }

  #reserve(n: number): void {
    if (this.#n + n <= this.#buf.length) return;
    this.flush();
    if (n > this.#buf.length) this.#buf = new Uint8Array(n);
  }

  #byte(b: number): void {
    this.#buf[this.#n++] = b;
  }

  #put(b: Uint8Array): void {
    this.#buf.set(b, this.#n);
    this.#n += b.length;
  }

  #ascii(s: string): void {
    for (let i = 0; i < s.length; i++) this.#buf[this.#n++] = s.charCodeAt(i);
  }

  #base64(src: Uint8Array): void {
    const out = this.#buf;
    let o = this.#n;
    const n = src.length;
    const full = n - (n % 3);
    let i = 0;
    for (; i < full; i += 3) {
      const v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];
      out[o] = B64[v >>> 18];
      out[o + 1] = B64[(v >>> 12) & 63];
      out[o + 2] = B64[(v >>> 6) & 63];
      out[o + 3] = B64[v & 63];
      o += 4;
    }
    if (n - full === 1) {
      const v = src[i] << 16;
      out[o++] = B64[v >>> 18];
      out[o++] = B64[(v >>> 12) & 63];
      out[o++] = 0x3d;
      out[o++] = 0x3d;
    } else if (n - full === 2) {
      const v = (src[i] << 16) | (src[i + 1] << 8);
      out[o++] = B64[v >>> 18];
      out[o++] = B64[(v >>> 12) & 63];
      out[o++] = B64[(v >>> 6) & 63];
      out[o++] = 0x3d;
    }
    this.#n = o;
  }

  /** The body of a JSON string for valid UTF-8 `s`, escaped as Go escapes it. */
  #jsonString(s: Uint8Array): void {
    const out = this.#buf;
    let o = this.#n;
    for (let i = 0; i < s.length; i++) {
      const c = s[i];
      if (c === 0x22 || c === 0x5c) {
        out[o++] = 0x5c;
        out[o++] = c;
      } else if (c === 0x0a) {
        out[o++] = 0x5c;
        out[o++] = 0x6e;
      } else if (c === 0x0d) {
        out[o++] = 0x5c;
        out[o++] = 0x72;
      } else if (c === 0x09) {
        out[o++] = 0x5c;
        out[o++] = 0x74;
      } else if (c < 0x20 || c === 0x3c || c === 0x3e || c === 0x26) {
        out[o++] = 0x5c;
        out[o++] = 0x75;
        out[o++] = 0x30;
        out[o++] = 0x30;
        out[o++] = HEX[c >> 4];
        out[o++] = HEX[c & 15];
      } else if (c === 0xe2 && s[i + 1] === 0x80 && (s[i + 2] === 0xa8 || s[i + 2] === 0xa9)) {
        // U+2028 / U+2029
        out[o++] = 0x5c;
        out[o++] = 0x75;
        out[o++] = 0x32;
        out[o++] = 0x30;
        out[o++] = 0x32;
        out[o++] = s[i + 2] === 0xa8 ? 0x38 : 0x39;
        i += 2;
      } else {
        out[o++] = c;
      }
    }
    this.#n = o;
  }
}

function base64Length(n: number): number {
  return Math.ceil(n / 3) * 4;
}

function isUtf8(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) {
    if (b[i] >= 0x80) {
      try {
        strictUtf8.decode(b);
        return true;
      } catch {
        return false;
      }
    }
  }
  return true;
}

/**
 * Records a tar's tar-split while the tar is parsed for extraction, in the
 * same pass: give it the parser and the extraction's sink with
 * {@linkcode TarSplitRecorder.wrap}, feed every chunk through
 * {@linkcode TarSplitRecorder.push} instead of the parser's `push`, and call
 * {@linkcode TarSplitRecorder.finish} after the parser's `finish`. The JSON
 * lines go to `out` in pieces of about 256 KiB (gzip them on the way out).
 * Nothing is read twice; the per-entry work is a checksum over the body and
 * a few bytes of JSON.
 *
 * A tar that names the same path twice (after cleaning) cannot be described
 * by tar-split (Go's packer refuses it with `duplicates of file paths not
 * supported`): the recorder then stops and `usable` is false, and the
 * caller keeps no record.
 *
 * @example
 * ```ts
 * import { TarParser } from "./tar_reader.ts";
 * import { TarSplitRecorder } from "./tar_split.ts";
 * import { encodeHeader, END_OF_ARCHIVE } from "./tar_writer.ts";
 * import { makeHeader } from "./tar_header.ts";
 * const lines: Uint8Array[] = [];
 * const rec = new TarSplitRecorder((b) => lines.push(b));
 * const parser = new TarParser(rec.wrap({ entry() {}, data() {}, end() {} }));
 * rec.bind(parser);
 * rec.push(new Uint8Array([...encodeHeader(makeHeader({ name: "d/", type: 0x35 })), ...END_OF_ARCHIVE]));
 * parser.finish();
 * rec.finish();
 * console.log(new TextDecoder().decode(lines[0]).split("\n")[1]); // {"type":1,"name":"d/","payload":null,"position":1}
 * ```
 */
export class TarSplitRecorder {
  #parser: TarParser | null = null;
  #lines: LineWriter;
  #usable = true;
  #seen = new Set<string>();
  #crc = new Crc64();
  #crcOut = new Uint8Array(8);
  // The chunk being parsed and how far its bytes are accounted for.
  #chunk: Uint8Array = EMPTY;
  #chunkBase = 0;
  #cursor = 0;
  // Raw bytes not yet written as a segment.
  #pending = new Uint8Array(4096);
  #pendingLen = 0;
  // The entry whose body is being read.
  #inBody = false;
  #name: Uint8Array = EMPTY;
  #size = 0;
  #ended = false;
  #checkName = false;

  #whiteoutsConverted: boolean;

  /**
   * `out` receives the JSON lines (each piece is the caller's to keep).
   * With `whiteoutsConverted` (an extraction that turns `.wh.` entries into
   * something else, as the overlay format does), a body under a `.wh.` name
   * is not on disk under that name, so such a tar is not describable.
   */
  constructor(out: (bytes: Uint8Array) => void, opts: { whiteoutsConverted?: boolean } = {}) {
    this.#lines = new LineWriter(out);
    this.#whiteoutsConverted = opts.whiteoutsConverted ?? false;
  }

  /**
   * False once the tar turned out not to be describable: a path given twice,
   * a body under a name outside the root (extracted elsewhere, so it cannot
   * be read back by that name), or one the extraction converts.
   */
  get usable(): boolean {
    return this.#usable;
  }

  /** The parser whose offsets locate the headers; it must parse through {@linkcode push}. */
  bind(parser: TarParser): void {
    this.#parser = parser;
  }

  /** A sink that records each entry and passes it on to `sink`. */
  wrap(sink: TarSink): TarSink {
    return {
      entry: (h) => {
        this.#entry(h);
        sink.entry(h);
      },
      data: (chunk) => {
        this.#data(chunk);
        sink.data(chunk);
      },
      end: () => {
        this.#endEntry();
        sink.end();
      },
    };
  }

  /** Parse the next chunk (through the bound parser), recording as it goes. */
  push(chunk: Uint8Array): void {
    const parser = this.#parser;
    if (parser === null) throw new Error("TarSplitRecorder.push before bind");
    this.#chunk = chunk;
    this.#cursor = 0;
    try {
      parser.push(chunk);
      if (this.#usable) this.#tail(parser);
    } finally {
      this.#chunkBase += chunk.length;
      this.#chunk = EMPTY;
    }
  }

  /** The stream has ended (after the parser's `finish`): write the last segments. */
  finish(): void {
    if (!this.#usable) return;
    this.#flushPending();
    // Go always ends with the (empty) result of the read that hit EOF.
    this.#lines.segment(EMPTY);
    this.#lines.flush();
  }

  /** Bytes of the current chunk from the cursor to the end: headers, padding, trailing data. */
  #tail(parser: TarParser): void {
    const chunk = this.#chunk;
    if (this.#cursor >= chunk.length) return;
    if (!this.#ended && parser.endOffset >= 0) {
      // The end-of-archive marker is in this chunk: it closes the last segment.
      this.#ended = true;
      const end = parser.endOffset - this.#chunkBase;
      this.#append(chunk, this.#cursor, end);
      this.#cursor = end;
      this.#flushPending();
    }
    if (this.#ended) {
      // After the marker: Go writes what each read returned, at most 1 MiB at a time.
      for (let at = this.#cursor; at < chunk.length; at += TRAILING_CHUNK) {
        this.#append(chunk, at, Math.min(chunk.length, at + TRAILING_CHUNK));
        if (this.#pendingLen >= TRAILING_CHUNK) this.#flushPending();
      }
    } else {
      this.#append(chunk, this.#cursor, chunk.length);
    }
    this.#cursor = chunk.length;
  }

  #entry(h: TarHeader): void {
    if (!this.#usable) return;
    const parser = this.#parser!;
    const end = parser.offset - this.#chunkBase;
    // The header may have begun in an earlier chunk (its start is pending already).
    this.#append(this.#chunk, this.#cursor, end);
    this.#cursor = end;
    this.#flushPending();
    const key = cleanKey(h.name);
    if (this.#seen.has(key)) {
      this.#usable = false;
      return;
    }
    this.#seen.add(key);
    this.#name = h.name;
    this.#size = 0;
    this.#checkName = true;
    this.#inBody = false;
    this.#crc.reset();
  }

  #data(chunk: Uint8Array): void {
    if (!this.#usable) return;
    if (this.#checkName) {
      // A body must be readable back by its name, from inside the root.
      this.#checkName = false;
      if (
        confinedName(this.#name) === null ||
        (this.#whiteoutsConverted && hasWhiteoutComponent(this.#name))
      ) {
        this.#usable = false;
        return;
      }
    }
    // A view into the pushed chunk: its offset says where the body bytes are.
    const at = chunk.byteOffset - this.#chunk.byteOffset;
    if (chunk.buffer !== this.#chunk.buffer || at < this.#cursor || at > this.#chunk.length) {
      throw new Error("tar-split: body chunk is not a view of the pushed chunk");
    }
    this.#append(this.#chunk, this.#cursor, at);
    if (this.#pendingLen > 0) this.#flushPending();
    this.#inBody = true;
    this.#crc.update(chunk);
    this.#size += chunk.length;
    this.#cursor = at + chunk.length;
  }

  #endEntry(): void {
    if (!this.#usable) return;
    if (this.#inBody) {
      this.#crc.sumInto(this.#crcOut);
      this.#lines.file(this.#name, this.#size, this.#crcOut);
    } else {
      this.#lines.file(this.#name, 0, null);
    }
    this.#inBody = false;
    this.#name = EMPTY;
  }

  #append(src: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n <= 0) return;
    if (this.#pendingLen + n > this.#pending.length) {
      const bigger = new Uint8Array(Math.max(this.#pending.length * 2, this.#pendingLen + n));
      bigger.set(this.#pending.subarray(0, this.#pendingLen));
      this.#pending = bigger;
    }
    this.#pending.set(src.subarray(start, end), this.#pendingLen);
    this.#pendingLen += n;
  }

  #flushPending(): void {
    if (this.#pendingLen === 0) return;
    this.#lines.segment(this.#pending.subarray(0, this.#pendingLen));
    this.#pendingLen = 0;
    if (this.#pending.length > 64 * 1024) this.#pending = new Uint8Array(4096);
  }
}

/** Whether a component of `name` starts with `.wh.`. */
function hasWhiteoutComponent(name: Uint8Array): boolean {
  for (let i = 0; i + 3 < name.length; i++) {
    if (
      (i === 0 || name[i - 1] === 0x2f) && name[i] === 0x2e && name[i + 1] === 0x77 &&
      name[i + 2] === 0x68 && name[i + 3] === 0x2e
    ) return true;
  }
  return false;
}

/** Go's `filepath.Clean` of a name, as the key of the duplicate check. */
function cleanKey(name: Uint8Array): string {
  let s = "";
  for (let i = 0; i < name.length; i++) s += String.fromCharCode(name[i]);
  return cleanPath(s);
}

/** Go's `path.Clean` (lexical: `.` and `..` resolved, slashes collapsed). */
function cleanPath(p: string): string {
  if (p === "") return ".";
  const rooted = p[0] === "/";
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
    } else out.push(part);
  }
  const joined = out.join("/");
  if (rooted) return "/" + joined;
  return joined === "" ? "." : joined;
}

// ---------------------------------------------------------------- reading

/**
 * One object of a tar-split record, checked.
 *
 * @example
 * ```ts
 * import { TarSplitReader, type TarSplitEntry } from "../../mod.ts";
 * const r = new TarSplitReader(new Blob(['{"type":2,"payload":"","position":0}\n']).stream(), "x", {
 *   gzip: false,
 * });
 * const first: TarSplitEntry | null = await r.next();
 * console.log(first?.type); // 2
 * ```
 */
export type TarSplitEntry =
  | {
    /** A raw segment. */
    type: 2;
    /** Its bytes. */
    payload: Uint8Array;
    /** Its position. */
    position: number;
  }
  | {
    /** A file entry. */
    type: 1;
    /** The entry's name as the tar has it (bytes). */
    name: Uint8Array;
    /** Body size (0 for everything without a body). */
    size: number;
    /** CRC-64/ISO of the content, 8 bytes; null when the size is 0. */
    crc: Uint8Array | null;
    /** Its position. */
    position: number;
  };

/**
 * Reads a tar-split record: gzip'd JSON lines (or plain ones with
 * `{ gzip: false }`), checked object by object. Throws
 * {@linkcode TarSplitError} for a damaged gzip stream, a line that is not a
 * JSON object, an unknown type, a position out of order, a bad base64
 * payload, a negative or non-integer size, a checksum that is not 8 bytes,
 * a line over 16 MiB, the same file name twice (as Go refuses it), and a
 * record cut short inside a line.
 *
 * @example
 * ```ts
 * import { TarSplitReader } from "./tar_split.ts";
 * const text = '{"type":2,"payload":"","position":0}\n';
 * const r = new TarSplitReader(new Blob([text]).stream(), "example", { gzip: false });
 * console.log((await r.next())?.type, await r.next()); // 2 null
 * ```
 */
export class TarSplitReader {
  #source: string;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #carry: Uint8Array = EMPTY;
  #queue: TarSplitEntry[] = [];
  #qHead = 0;
  #done = false;
  #line = 0;
  #position = 0;
  #seen = new Set<string>();

  /** `source` names the record in errors (e.g. its path). */
  constructor(
    stream: ReadableStream<Uint8Array>,
    source: string,
    opts: { gzip?: boolean } = {},
  ) {
    this.#source = source;
    const plain = opts.gzip === false ? stream : stream.pipeThrough(
      new DecompressionStream("gzip") as TransformStream<Uint8Array, Uint8Array>,
    );
    this.#reader = plain.getReader();
  }

  /** The next object, or null at the end of the record. */
  async next(): Promise<TarSplitEntry | null> {
    while (this.#qHead >= this.#queue.length) {
      if (this.#done) return null;
      this.#queue = [];
      this.#qHead = 0;
      await this.#fill();
    }
    return this.#queue[this.#qHead++];
  }

  /** Stop reading (releases the underlying stream). */
  async cancel(reason?: unknown): Promise<void> {
    this.#done = true;
    await this.#reader.cancel(reason).catch(() => {});
  }

  async #fill(): Promise<void> {
    let chunk: Uint8Array | undefined;
    try {
      const r = await this.#reader.read();
      if (r.done) chunk = undefined;
      else chunk = r.value;
    } catch (e) {
      this.#done = true;
      throw new TarSplitError(this.#source, `unreadable (damaged gzip stream?): ${message(e)}`, {
        cause: e,
      });
    }
    if (chunk === undefined) {
      this.#done = true;
      if (this.#carry.length > 0 && !isBlank(this.#carry)) {
        // Go's decoder accepts a last object without a newline; a cut one is an error.
        this.#parseLine(this.#carry);
      }
      this.#carry = EMPTY;
      return;
    }
    let start = 0;
    let data = chunk;
    if (this.#carry.length > 0) {
      const nl = chunk.indexOf(0x0a);
      if (nl < 0) {
        this.#carry = concat(this.#carry, chunk);
        this.#checkCarry();
        return;
      }
      this.#parseLine(concat(this.#carry, chunk.subarray(0, nl)));
      this.#carry = EMPTY;
      start = nl + 1;
      data = chunk;
    }
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      if (nl < 0) break;
      if (nl > start) this.#parseLine(data.subarray(start, nl));
      else this.#line++;
      start = nl + 1;
    }
    if (start < data.length) {
      this.#carry = data.slice(start);
      this.#checkCarry();
    }
  }

  #checkCarry(): void {
    if (this.#carry.length > MAX_LINE) {
      throw new TarSplitError(this.#source, `line ${this.#line + 1} longer than ${MAX_LINE} bytes`);
    }
  }

  #parseLine(bytes: Uint8Array): void {
    this.#line++;
    if (isBlank(bytes)) return;
    const line = this.#line;
    const fail = (why: string, extra: { entry?: string; cause?: unknown } = {}): never => {
      throw new TarSplitError(this.#source, `line ${line}: ${why}`, {
        position: this.#position,
        ...extra,
      });
    };
    let obj: unknown;
    try {
      obj = JSON.parse(utf8.decode(bytes));
    } catch (e) {
      fail(`not a JSON object (truncated or malformed): ${message(e)}`, { cause: e });
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) fail("not a JSON object");
    const o = obj as Record<string, unknown>;
    const position = o.position ?? 0;
    if (position !== this.#position) {
      fail(`position ${JSON.stringify(o.position)} out of order (expected ${this.#position})`);
    }
    const type = o.type;
    if (type === TAR_SPLIT_SEGMENT) {
      const payload = o.payload === null || o.payload === undefined
        ? EMPTY
        : decodeBase64(o.payload) ?? fail("segment payload is not base64");
      this.#queue.push({ type: 2, payload, position: this.#position });
    } else if (type === TAR_SPLIT_FILE) {
      let name: Uint8Array;
      if (typeof o.name_raw === "string" && o.name_raw !== "") {
        name = decodeBase64(o.name_raw) ?? fail("name_raw is not base64");
      } else if (typeof o.name === "string") {
        name = enc.encode(o.name);
      } else if (o.name === undefined || o.name === null) {
        name = EMPTY;
      } else {
        return fail("name is not a string");
      }
      const size = o.size ?? 0;
      if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
        fail(`size ${JSON.stringify(o.size)} is not a non-negative integer`, {
          entry: utf8.decode(name),
        });
      }
      let crc: Uint8Array | null = null;
      if ((size as number) > 0) {
        crc = o.payload === null || o.payload === undefined
          ? null
          : decodeBase64(o.payload) ?? null;
        if (crc === null || crc.length !== 8) {
          fail("file payload is not an 8-byte CRC-64 in base64", { entry: utf8.decode(name) });
        }
      }
      const key = cleanKey(name);
      if (this.#seen.has(key)) {
        fail("the same file twice (duplicates of file paths not supported)", {
          entry: utf8.decode(name),
        });
      }
      this.#seen.add(key);
      this.#queue.push({ type: 1, name, size: size as number, crc, position: this.#position });
    } else {
      fail(`unknown entry type ${JSON.stringify(type)}`);
    }
    this.#position++;
  }
}

function decodeBase64(v: unknown): Uint8Array | null {
  if (typeof v !== "string") return null;
  try {
    return Uint8Array.fromBase64(v);
  } catch {
    return null;
  }
}

function isBlank(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d && c !== 0x0a) return false;
  }
  return true;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------- files

/**
 * The files of one directory, opened by tar entry name and confined to it:
 * the kernel resolves names inside the directory (`openat2` with
 * `RESOLVE_IN_ROOT`, no magic links), so neither `..` nor an absolute
 * symlink reaches a file outside. The last component is never followed.
 * (Reassembly refuses names that climb above the root before opening.)
 *
 * @example
 * ```ts
 * import { DirFiles } from "./tar_split.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "x");
 * const files = new DirFiles(dir);
 * try {
 *   const fd = files.open("./a");
 *   files.libc.close(fd);
 * } finally {
 *   files.close();
 * }
 * ```
 */
export class DirFiles {
  /** The system calls used. */
  readonly libc: Libc;
  /** The directory. */
  readonly dir: string;
  #fd: number;

  /** Opens `dir` (a directory) once; every file is opened relative to it. */
  constructor(dir: string, libc: Libc = systemLibc()) {
    this.libc = libc;
    this.dir = dir;
    this.#fd = libc.openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  }

  /**
   * An fd of the file `name`, read-only, resolved by the kernel as if the
   * directory were `/` (a leading `/` and any `..` stay inside it). Throws
   * `ErrnoError` when the open fails (ELOOP when the last component is a
   * symlink).
   */
  open(name: string | Uint8Array): number {
    if (this.#fd < 0) throw new Error(`files of ${this.dir}: closed`);
    return this.libc.openat2(
      this.#fd,
      name,
      O.RDONLY | O.NOFOLLOW | O.CLOEXEC,
      0,
      RESOLVE.IN_ROOT | RESOLVE.NO_MAGICLINKS,
    );
  }

  /** Close the directory. */
  close(): void {
    if (this.#fd >= 0) {
      this.libc.close(this.#fd);
      this.#fd = -1;
    }
  }
}

/**
 * A tar entry name (bytes) as a path relative to the layer root, or null
 * when it climbs above the root (`..`, `a/../../b`), names the root itself
 * or holds a NUL. A leading `/` counts as the root, as in Go's
 * `filepath.Join(root, name)`.
 */
function confinedName(name: Uint8Array): Uint8Array | null {
  if (name.indexOf(0) >= 0) return null;
  let s = "";
  for (let i = 0; i < name.length; i++) s += String.fromCharCode(name[i]);
  const clean = cleanPath(s.replace(/^\/+/, ""));
  if (clean === "." || clean === ".." || clean.startsWith("../")) return null;
  const out = new Uint8Array(clean.length);
  for (let i = 0; i < clean.length; i++) out[i] = clean.charCodeAt(i);
  return out;
}

/**
 * A `FileGetter` over a directory that also offers its {@linkcode DirFiles} for fast reads.
 *
 * @example
 * ```ts
 * import { type DirFileGetter, dirFileGetter } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "hi");
 * const g: DirFileGetter = dirFileGetter(dir);
 * console.log(await new Response(await g.get("a")).text()); // hi
 * await g.close();
 * ```
 */
export interface DirFileGetter extends FileGetter {
  /** Synchronous, confined access to the same files. */
  readonly files: DirFiles;
}

/**
 * A {@linkcode DirFileGetter} for `dir`: tar-split's `NewPathFileGetter`,
 * confined to the directory (see {@linkcode DirFiles}).
 *
 * @example
 * ```ts
 * import { dirFileGetter } from "./tar_split.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "hi");
 * const g = dirFileGetter(dir);
 * console.log(await new Response(await g.get("a")).text()); // hi
 * await g.close();
 * ```
 */
export function dirFileGetter(dir: string, libc: Libc = systemLibc()): DirFileGetter {
  const files = new DirFiles(dir, libc);
  return {
    files,
    get(path: string): Promise<ReadableStream<Uint8Array>> {
      try {
        const fd = files.open(path);
        let open = true;
        const close = () => {
          if (open) {
            open = false;
            libc.close(fd);
          }
        };
        return Promise.resolve(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              try {
                const buf = new Uint8Array(256 * 1024);
                const n = libc.read(fd, buf);
                if (n === 0) {
                  close();
                  controller.close();
                } else controller.enqueue(buf.subarray(0, n));
              } catch (e) {
                close();
                controller.error(e);
              }
            },
            cancel() {
              close();
            },
          }),
        );
      } catch (e) {
        return Promise.reject(e);
      }
    },
    close() {
      files.close();
      return Promise.resolve();
    },
  };
}

// ---------------------------------------------------------------- assembly

/**
 * Options of {@linkcode assembleTar}.
 *
 * @example
 * ```ts
 * import { type AssembleOptions, assembleTar, dirFileGetter } from "../../mod.ts";
 * const opts: AssembleOptions = { source: "example record", gzip: false };
 * const record = new Blob(['{"type":2,"payload":"","position":0}\n']).stream();
 * const tar = assembleTar(record, dirFileGetter(await Deno.makeTempDir()), opts);
 * console.log((await new Response(tar).arrayBuffer()).byteLength); // 0
 * ```
 */
export interface AssembleOptions {
  /** Names the record in errors (default `"record"`). */
  source?: string;
  /** The record is plain JSON lines, not gzip'd (default: gzip'd). */
  gzip?: boolean;
  /** Close the getter when the stream ends, fails or is cancelled (default true). */
  closeGetter?: boolean;
}

/**
 * Reassemble the original tar from a tar-split record and the files it
 * names: Go's `asm.NewOutputTarStream`. Segments are copied; each file entry
 * with a body is read through `getter` and must be a regular file of exactly
 * the recorded size whose CRC-64 matches, else the stream errors with a
 * {@linkcode TarSplitError} naming the file. With a
 * {@linkcode DirFileGetter} the files are read synchronously into the
 * output chunks (about 1 MiB each); any other `FileGetter` is read through
 * its streams.
 *
 * @example
 * ```ts
 * import { assembleTar, dirFileGetter } from "./tar_split.ts";
 * const dir = await Deno.makeTempDir();
 * const record = '{"type":2,"payload":"","position":0}\n';
 * const tar = assembleTar(new Blob([record]).stream(), dirFileGetter(dir), { gzip: false });
 * console.log((await new Response(tar).arrayBuffer()).byteLength); // 0
 * ```
 */
export function assembleTar(
  tarSplit: ReadableStream<Uint8Array>,
  getter: FileGetter,
  opts: AssembleOptions = {},
): ReadableStream<Uint8Array> {
  const source = opts.source ?? "record";
  const reader = new TarSplitReader(tarSplit, source, { gzip: opts.gzip });
  const files = (getter as Partial<DirFileGetter>).files instanceof DirFiles
    ? (getter as DirFileGetter).files
    : null;
  const libc = files?.libc;
  const crc = new Crc64();
  const sum = new Uint8Array(8);
  // The entry in progress.
  let seg: Uint8Array | null = null;
  let segAt = 0;
  let file: Extract<TarSplitEntry, { type: 1 }> | null = null;
  let fd = -1;
  let fileLeft = 0;
  let fileStream: ReadableStreamDefaultReader<Uint8Array> | null = null;
  let streamRest: Uint8Array = EMPTY;
  let closed = false;

  const fail = (why: string, entry: Extract<TarSplitEntry, { type: 1 }>, cause?: unknown) =>
    new TarSplitError(source, why, {
      entry: utf8.decode(entry.name),
      position: entry.position,
      cause,
    });

  const shut = async (reason?: unknown) => {
    if (closed) return;
    closed = true;
    if (fd >= 0) libc!.close(fd);
    fd = -1;
    await fileStream?.cancel(reason).catch(() => {});
    await reader.cancel(reason);
    if (opts.closeGetter !== false) await getter.close();
  };

  /** Open the entry's file and check it against the record. */
  const openFile = async (e: Extract<TarSplitEntry, { type: 1 }>) => {
    const name = confinedName(e.name);
    if (name === null) throw fail("path outside the layer", e);
    crc.reset();
    fileLeft = e.size;
    if (files) {
      let opened: number;
      try {
        opened = files.open(name);
      } catch (err) {
        if (err instanceof TarSplitError) throw fail(err.reason, e);
        throw fail(`open: ${message(err)}`, e, err);
      }
      fd = opened;
      const st = libc!.fstat(fd);
      if ((st.mode & S.IFMT) !== S.IFREG) throw fail("not a regular file in the layer", e);
      if (st.size !== e.size) {
        throw fail(`size ${st.size} in the layer, ${e.size} in the record`, e);
      }
    } else {
      let s: ReadableStream<Uint8Array>;
      try {
        s = await getter.get(utf8.decode(e.name));
      } catch (err) {
        throw fail(`get: ${message(err)}`, e, err);
      }
      fileStream = s.getReader();
      streamRest = EMPTY;
    }
  };

  const endFile = async (e: Extract<TarSplitEntry, { type: 1 }>) => {
    if (fd >= 0) {
      libc!.close(fd);
      fd = -1;
    }
    if (fileStream) {
      const extra = streamRest.length > 0 || !(await fileStream.read()).done;
      fileStream.releaseLock();
      fileStream = null;
      if (extra) throw fail(`larger than the ${e.size} bytes in the record`, e);
    }
    crc.sumInto(sum);
    for (let i = 0; i < 8; i++) {
      if (sum[i] !== e.crc![i]) throw fail("file integrity checksum failed (CRC-64 mismatch)", e);
    }
  };

  // A byte stream: a BYOB reader's own buffer is filled (no fresh memory per
  // chunk when it recycles one); a default reader gets fresh 1 MiB chunks.
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: CHUNK_SIZE,
    async pull(controller) {
      const req = controller.byobRequest!;
      const v = req.view!;
      const chunk = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      const size = chunk.length;
      let pos = 0;
      let finished = false;
      try {
        while (pos < size) {
          if (seg !== null) {
            const n = Math.min(seg.length - segAt, size - pos);
            chunk.set(seg.subarray(segAt, segAt + n), pos);
            pos += n;
            segAt += n;
            if (segAt === seg.length) seg = null;
            continue;
          }
          if (file !== null) {
            const want = Math.min(fileLeft, size - pos);
            if (want > 0) {
              let got: number;
              if (fd >= 0) {
                got = libc!.read(fd, chunk.subarray(pos, pos + want));
              } else {
                while (streamRest.length === 0) {
                  const r = await fileStream!.read();
                  if (r.done) break;
                  streamRest = r.value;
                }
                got = Math.min(want, streamRest.length);
                chunk.set(streamRest.subarray(0, got), pos);
                streamRest = streamRest.subarray(got);
              }
              if (got === 0) {
                throw fail(`shorter than the ${file.size} bytes in the record`, file);
              }
              crc.update(chunk.subarray(pos, pos + got));
              pos += got;
              fileLeft -= got;
              continue;
            }
            await endFile(file);
            file = null;
            continue;
          }
          const e = await reader.next();
          if (e === null) {
            finished = true;
            break;
          }
          if (e.type === TAR_SPLIT_SEGMENT) {
            if (e.payload.length > 0) {
              seg = e.payload;
              segAt = 0;
            }
          } else if (e.size > 0) {
            file = e;
            await openFile(e);
          }
        }
      } catch (err) {
        await shut(err);
        throw err;
      }
      if (pos > 0) req.respond(pos);
      if (finished) {
        await shut();
        controller.close();
        // A BYOB read still waiting (made while shut was awaited, or this one
        // when nothing was filled) ends with 0 bytes.
        controller.byobRequest?.respond(0);
      }
    },
    async cancel(reason) {
      await shut(reason);
    },
  }, { highWaterMark: 0 });
}
