/**
 * A synchronous push parser for tar streams, reading what Go 1.19's
 * `archive/tar` Reader reads: ustar, old GNU, v7 and star headers, PAX
 * extended headers (`x`), GNU long names (`L`/`K`) and base-256 numbers.
 * Feed it chunks of any size with {@linkcode TarParser.push}; it calls a
 * {@linkcode TarSink} for each entry, so the consumer's per-entry work stays
 * synchronous. {@linkcode readTar} drives it from a `ReadableStream`.
 *
 * @module
 */

import { nameText, type TarHeader, TarType } from "./tar_header.ts";

/**
 * Receives the entries of a tar stream, in order: for every entry one
 * `entry`, then its body as zero or more `data` calls, then `end`.
 *
 * @example
 * ```ts
 * import { readTar, type TarSink } from "../../mod.ts";
 * const names: string[] = [];
 * const sink: TarSink = { entry: (h) => names.push(new TextDecoder().decode(h.name)), data: () => {}, end: () => {} };
 * await readTar((await Deno.open("layer.tar")).readable, sink);
 * console.log(names);
 * ```
 */
export interface TarSink {
  /** A complete header (PAX `x` records and GNU `L`/`K` names already merged). */
  entry(h: TarHeader): void;
  /**
   * Body bytes of the current entry, in order. The chunk is a view into the
   * pushed buffer: it is only valid during the call (copy what you keep).
   */
  data(chunk: Uint8Array): void;
  /** The current entry's body is complete. */
  end(): void;
}

/**
 * A malformed or truncated tar stream. `reason` is one of the fixed phrases
 * (`invalid tar header…`, `unexpected end of tar…`, `sparse entries are not
 * supported…`, `invalid PAX record…`), possibly followed by a detail;
 * `offset` is the stream byte offset of the offending header (or where the
 * stream ended); `entry` names the entry when it is known.
 *
 * @example
 * ```ts
 * import { TarFormatError, TarParser } from "./tar_reader.ts";
 * const parser = new TarParser({ entry() {}, data() {}, end() {} });
 * try {
 *   parser.push(new Uint8Array(512).fill(0x41));
 * } catch (e) {
 *   console.log(e instanceof TarFormatError && e.offset); // 0
 * }
 * ```
 */
export class TarFormatError extends Error {
  /** What is wrong, without the location. */
  readonly reason: string;
  /** The entry's name as text, when known. */
  readonly entry?: string;
  /** Byte offset in the stream. */
  readonly offset: number;
  /** Builds the message from the reason, offset and entry. */
  constructor(reason: string, offset: number, entry?: string) {
    super(
      `tar: ${reason} at byte offset ${offset}` +
        (entry === undefined ? "" : ` (entry ${JSON.stringify(entry)})`),
    );
    this.name = "TarFormatError";
    this.reason = reason;
    this.offset = offset;
    if (entry !== undefined) this.entry = entry;
  }
}

const BLOCK = 512;
/** Go's limit on PAX and GNU long-name bodies. */
const MAX_SPECIAL_FILE = 1 << 20;

// Header layout.
const NAME = 0, NAME_LEN = 100;
const MODE = 100, UID = 108, GID = 116, SIZE = 124, MTIME = 136;
const CHKSUM = 148, TYPEFLAG = 156;
const LINKNAME = 157, LINKNAME_LEN = 100;
const MAGIC = 257;
const UNAME = 265, GNAME = 297, OWNER_LEN = 32;
const DEVMAJOR = 329, DEVMINOR = 337;
const PREFIX = 345, PREFIX_LEN = 155, STAR_PREFIX_LEN = 131;
const GNU_ATIME = 345, STAR_ATIME = 476, STAR_TRAILER = 508;

const enum Format {
  V7,
  USTAR,
  GNU,
  STAR,
}

const enum State {
  /** Reading a header block. */
  Header,
  /** One zero block seen: reading the block that must end the archive. */
  SecondZero,
  /** Passing an entry's body to the sink. */
  Body,
  /** Collecting the body of a PAX / GNU long-name pseudo file. */
  Meta,
  /** Skipping the padding after a body. */
  Padding,
  /** End-of-archive marker seen: the rest is ignored. */
  Done,
  /** A previous call threw: the parser is unusable. */
  Failed,
}

const SLASH = 0x2f;
const utf8 = new TextDecoder();

/**
 * The push parser. Not reusable across archives; after an error every call
 * rethrows it.
 *
 * Behaviour follows Go's Reader: two zero blocks end the archive and
 * anything after them is ignored; a stream ending cleanly on a header
 * boundary is accepted without them; a zero block followed by a non-zero one
 * is an invalid header; the checksum may be the unsigned or the signed byte
 * sum; typeflag `'\0'` reads as `'5'` for names ending in `/`, else `'0'`;
 * header-only types (links, devices, directories, FIFOs) have no body
 * whatever their size field says. PAX records with an empty value are
 * ignored (so an empty xattr value is dropped, as Go drops it); a PAX global
 * header (`g`) is validated and skipped, not applied (as Go's Reader, which
 * hands it to the caller, and containers/storage, which ignores it); GNU
 * `L`/`K` names win over PAX `path`/`linkpath`. PAX `ctime` is validated and
 * dropped; `atime` comes from PAX, GNU or star headers.
 *
 * @example
 * ```ts
 * import { TarParser } from "./tar_reader.ts";
 * import { encodeHeader, END_OF_ARCHIVE, padding } from "./tar_writer.ts";
 * import { makeHeader, nameText } from "./tar_header.ts";
 * const body = new TextEncoder().encode("hello");
 * const tar = new Uint8Array([
 *   ...encodeHeader(makeHeader({ name: "greeting", size: body.length })),
 *   ...body,
 *   ...new Uint8Array(padding(body.length)),
 *   ...END_OF_ARCHIVE,
 * ]);
 * const parser = new TarParser({
 *   entry: (h) => console.log(nameText(h.name), h.size), // greeting 5
 *   data: (chunk) => console.log(new TextDecoder().decode(chunk)), // hello
 *   end: () => {},
 * });
 * for (let i = 0; i < tar.length; i += 100) parser.push(tar.subarray(i, i + 100));
 * parser.finish();
 * ```
 */
export class TarParser {
  #sink: TarSink;
  #state = State.Header;
  #failure: unknown = undefined;
  /** Stream offset of the first byte of the chunk being pushed. */
  #base = 0;
  /** A header block being assembled across chunks. */
  #block = new Uint8Array(BLOCK);
  #blockFill = 0;
  /** Stream offset of the current header block. */
  #headerOffset = 0;
  /** Stream offset just past the last header block handed over (see `offset`). */
  #at = 0;
  /** Stream offset just past the end-of-archive marker, -1 before it is read. */
  #endAt = -1;
  /** Body bytes left (Body state), or padding bytes left (Padding state). */
  #left = 0;
  #padAfter = 0;
  /** The current entry's name, decoded only when an error reports it. */
  #entryName: Uint8Array | undefined = undefined;
  /** Decodes header blocks, reusing buffers and owner names across entries. */
  #fields = new HeaderFields();
  // Pseudo-file collection (Meta state).
  #metaType = 0;
  #meta: Uint8Array = EMPTY;
  #metaFill = 0;
  // Pending metadata for the next entry.
  #pax: Map<string, Uint8Array> | null = null;
  #paxOffset = 0;
  #longName: Uint8Array | null = null;
  #longLink: Uint8Array | null = null;

  /** The sink receives every entry of the archive. */
  constructor(sink: TarSink) {
    this.#sink = sink;
  }

  /** Whether the end-of-archive marker has been read (later bytes are ignored). */
  get done(): boolean {
    return this.#state === State.Done;
  }

  /**
   * During the sink's `entry` call: the stream offset just past the entry's
   * header block, i.e. where its body (if any) starts. Together with the
   * positions of the `data` chunks this tells a caller which bytes of the
   * stream are headers and padding (what tar-split records).
   */
  get offset(): number {
    return this.#at;
  }

  /** Stream offset just past the end-of-archive marker; -1 until it has been read. */
  get endOffset(): number {
    return this.#endAt;
  }

  /**
   * Parse the next bytes of the stream. The chunk is only read during the
   * call. Throws {@linkcode TarFormatError} on malformed input, or whatever
   * the sink throws.
   */
  push(chunk: Uint8Array): void {
    if (this.#state === State.Failed) throw this.#failure;
    try {
      this.#consume(chunk);
    } catch (err) {
      this.#state = State.Failed;
      this.#failure = err;
      throw err;
    }
    this.#base += chunk.length;
  }

  /**
   * The stream has ended. Throws {@linkcode TarFormatError}
   * (`unexpected end of tar`) if it ended inside a header, body or padding.
   */
  finish(): void {
    if (this.#state === State.Failed) throw this.#failure;
    const s = this.#state;
    const clean = s === State.Done ||
      ((s === State.Header || s === State.SecondZero) && this.#blockFill === 0);
    if (clean) return;
    const where = s === State.Body
      ? "inside an entry's body"
      : s === State.Padding
      ? "inside the padding after a body"
      : s === State.Meta
      ? "inside a PAX or GNU long-name header"
      : "inside a header block";
    this.#state = State.Failed;
    this.#failure = new TarFormatError(
      `unexpected end of tar ${where}`,
      this.#base,
      s === State.Body || s === State.Padding ? entryText(this.#entryName) : undefined,
    );
    throw this.#failure;
  }

  #consume(chunk: Uint8Array): void {
    const len = chunk.length;
    let pos = 0;
    while (pos < len) {
      switch (this.#state) {
        case State.Header:
        case State.SecondZero: {
          if (this.#blockFill === 0 && len - pos >= BLOCK) {
            this.#headerOffset = this.#base + pos;
            pos += BLOCK;
            this.#at = this.#base + pos;
            this.#onBlock(chunk, pos - BLOCK);
          } else {
            if (this.#blockFill === 0) this.#headerOffset = this.#base + pos;
            const n = Math.min(BLOCK - this.#blockFill, len - pos);
            this.#block.set(chunk.subarray(pos, pos + n), this.#blockFill);
            this.#blockFill += n;
            pos += n;
            if (this.#blockFill === BLOCK) {
              this.#blockFill = 0;
              this.#at = this.#base + pos;
              this.#onBlock(this.#block, 0);
            }
          }
          break;
        }
        case State.Body: {
          const n = Math.min(this.#left, len - pos);
          this.#left -= n;
          pos += n;
          this.#sink.data(chunk.subarray(pos - n, pos));
          if (this.#left === 0) this.#endBody();
          break;
        }
        case State.Padding: {
          const n = Math.min(this.#left, len - pos);
          this.#left -= n;
          pos += n;
          if (this.#left === 0) this.#state = State.Header;
          break;
        }
        case State.Meta: {
          const n = Math.min(this.#meta.length - this.#metaFill, len - pos);
          this.#meta.set(chunk.subarray(pos, pos + n), this.#metaFill);
          this.#metaFill += n;
          pos += n;
          if (this.#metaFill === this.#meta.length) this.#onMeta();
          break;
        }
        case State.Done:
          return;
        default:
          throw this.#failure;
      }
    }
  }

  #endBody(): void {
    this.#sink.end();
    this.#afterBody(this.#padAfter);
  }

  #afterBody(pad: number): void {
    if (pad > 0) {
      this.#left = pad;
      this.#state = State.Padding;
    } else {
      this.#state = State.Header;
    }
  }

  /** A full block at `b[at..at+512]`, at stream offset `#headerOffset`. */
  #onBlock(b: Uint8Array, at: number): void {
    const offset = this.#headerOffset;
    if (isZeroBlock(b, at)) {
      if (this.#state === State.SecondZero) {
        this.#state = State.Done;
        this.#endAt = this.#at;
      } else this.#state = State.SecondZero;
      return;
    }
    if (this.#state === State.SecondZero) {
      throw new TarFormatError("invalid tar header: zero block followed by data", offset);
    }
    const h = this.#fields.parse(b, at, offset);
    const type = h.type;
    if (
      type === TarType.PAX || type === TarType.PAX_GLOBAL ||
      type === TarType.GNU_LONGNAME || type === TarType.GNU_LONGLINK
    ) {
      const what = type === TarType.PAX || type === TarType.PAX_GLOBAL
        ? "PAX header"
        : "GNU long name";
      if (h.size < 0) {
        throw new TarFormatError(`invalid tar header: negative ${what} size`, offset);
      }
      if (h.size > MAX_SPECIAL_FILE) {
        throw new TarFormatError(
          `invalid tar header: ${what} of ${h.size} bytes exceeds the 1 MiB limit`,
          offset,
        );
      }
      this.#entryName = undefined;
      this.#metaType = type;
      this.#meta = new Uint8Array(h.size);
      this.#metaFill = 0;
      this.#padAfter = pad(h.size);
      this.#state = State.Meta;
      if (h.size === 0) this.#onMeta();
      return;
    }
    this.#onEntry(h, offset);
  }

  /** A PAX or GNU long-name body is complete. */
  #onMeta(): void {
    const data = this.#meta;
    const offset = this.#headerOffset;
    switch (this.#metaType) {
      case TarType.PAX:
        this.#pax = parsePaxRecords(data, offset);
        this.#paxOffset = offset;
        break;
      case TarType.PAX_GLOBAL: {
        // Validated like Go does, then dropped with whatever was pending.
        const global = parsePaxRecords(data, offset);
        applyPax(blankHeader(), global, offset, this.#fields);
        this.#pax = null;
        this.#longName = null;
        this.#longLink = null;
        break;
      }
      case TarType.GNU_LONGNAME:
        this.#longName = data.subarray(0, fieldEnd(data, 0, data.length));
        break;
      case TarType.GNU_LONGLINK:
        this.#longLink = data.subarray(0, fieldEnd(data, 0, data.length));
        break;
    }
    this.#meta = EMPTY;
    this.#afterBody(this.#padAfter);
  }

  #onEntry(h: TarHeader, offset: number): void {
    this.#entryName = undefined;
    if (this.#pax) applyPax(h, this.#pax, this.#paxOffset, this.#fields);
    // Go ignores empty long names.
    if (this.#longName && this.#longName.length > 0) h.name = this.#longName;
    if (this.#longLink && this.#longLink.length > 0) h.linkname = this.#longLink;
    this.#pax = this.#longName = this.#longLink = null;
    if (h.type === 0) {
      const n = h.name;
      h.type = n.length > 0 && n[n.length - 1] === SLASH ? TarType.DIR : TarType.REG;
    }
    if (h.type === TarType.GNU_SPARSE) {
      throw new TarFormatError(
        "sparse entries are not supported (GNU typeflag 'S')",
        offset,
        nameText(h.name),
      );
    }
    const size = isHeaderOnly(h.type) ? 0 : h.size;
    if (size < 0) {
      throw new TarFormatError(
        `invalid tar header: negative size ${size}`,
        offset,
        nameText(h.name),
      );
    }
    this.#entryName = h.name;
    this.#sink.entry(h);
    if (size === 0) {
      this.#sink.end();
      this.#state = State.Header;
      return;
    }
    this.#left = size;
    this.#padAfter = pad(size);
    this.#state = State.Body;
  }
}

/**
 * Parse a whole tar stream into `sink`. Resolves when the stream has ended
 * (bytes after the end-of-archive marker are read and ignored); rejects with
 * {@linkcode TarFormatError} on malformed input or with the sink's error, in
 * which case the stream is cancelled.
 *
 * @example
 * ```ts
 * import { readTar } from "./tar_reader.ts";
 * import { nameText } from "./tar_header.ts";
 * const names: string[] = [];
 * const stream = new Blob([new Uint8Array(1024)]).stream(); // an empty archive
 * await readTar(stream, { entry: (h) => names.push(nameText(h.name)), data() {}, end() {} });
 * console.log(names.length); // 0
 * ```
 */
export async function readTar(
  stream: ReadableStream<Uint8Array>,
  sink: TarSink,
): Promise<void> {
  const parser = new TarParser(sink);
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.push(value);
    }
    parser.finish();
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
  }
}

const EMPTY: Uint8Array = new Uint8Array(0);

/** An entry name for an error message (undefined when there is none). */
function entryText(name: Uint8Array | undefined): string | undefined {
  return name === undefined ? undefined : nameText(name);
}

function blankHeader(): TarHeader {
  return {
    name: EMPTY,
    linkname: EMPTY,
    type: 0,
    mode: 0,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    devmajor: 0,
    devminor: 0,
  };
}

/** Slab size for the name bytes of headers; longer pieces get their own buffer. */
const SLAB = 8192;
const SLAB_PIECE_MAX = 1024;

/**
 * Go's `readHeader` after the zero-block test (checksum, format, fields),
 * allocating little per header: the bytes kept from a block (name, link
 * name, PAX values) are copied into views of a shared slab instead of one
 * buffer each, and an owner name whose bytes repeat the previous header's
 * reuses its string.
 */
class HeaderFields {
  #slab: Uint8Array = EMPTY;
  #slabUsed = 0;
  #uname = new OwnerName();
  #gname = new OwnerName();

  /** A copy of `b[start..end)` that the caller owns (it shares a slab, never its bytes). */
  copy(b: Uint8Array, start: number, end: number): Uint8Array {
    const n = end - start;
    if (n === 0) return EMPTY;
    const out = this.#alloc(n);
    if (n <= 32) {
      for (let i = 0; i < n; i++) out[i] = b[start + i];
    } else {
      out.set(b.subarray(start, end));
    }
    return out;
  }

  #alloc(n: number): Uint8Array {
    if (n > SLAB_PIECE_MAX) return new Uint8Array(n);
    if (this.#slabUsed + n > this.#slab.length) {
      this.#slab = new Uint8Array(SLAB);
      this.#slabUsed = 0;
    }
    const at = this.#slabUsed;
    this.#slabUsed = at + n;
    return this.#slab.subarray(at, at + n);
  }

  /** `prefix + "/" + name` for the ranges `b[ps..pe)` and `b[ns..ne)`. */
  #joined(b: Uint8Array, ps: number, pe: number, ns: number, ne: number): Uint8Array {
    const pn = pe - ps;
    const out = this.#alloc(pn + 1 + ne - ns);
    out.set(b.subarray(ps, pe), 0);
    out[pn] = SLASH;
    out.set(b.subarray(ns, ne), pn + 1);
    return out;
  }

  /** The header in the block `b[at..at+512]`, at stream offset `offset`. */
  parse(b: Uint8Array, at: number, offset: number): TarHeader {
    const sum = parseOctal(b, at + CHKSUM, 8);
    if (Number.isNaN(sum) || !checksumMatches(b, at, sum)) {
      throw new TarFormatError(
        "invalid tar header: checksum mismatch or not a tar header",
        offset,
      );
    }
    const format = detectFormat(b, at);
    const nameEnd = fieldEnd(b, at + NAME, NAME_LEN);
    const h: TarHeader = {
      name: EMPTY,
      linkname: this.copy(b, at + LINKNAME, fieldEnd(b, at + LINKNAME, LINKNAME_LEN)),
      type: b[at + TYPEFLAG],
      size: numField(b, at + SIZE, 12, "size", offset),
      mode: numField(b, at + MODE, 8, "mode", offset),
      uid: numField(b, at + UID, 8, "uid", offset),
      gid: numField(b, at + GID, 8, "gid", offset),
      mtimeSec: numField(b, at + MTIME, 12, "mtime", offset),
      mtimeNsec: 0,
      uname: "",
      gname: "",
      devmajor: 0,
      devminor: 0,
    };
    let prefixEnd = at + PREFIX;
    if (format !== Format.V7) {
      h.uname = this.#uname.read(b, at + UNAME);
      h.gname = this.#gname.read(b, at + GNAME);
      h.devmajor = numField(b, at + DEVMAJOR, 8, "devmajor", offset);
      h.devminor = numField(b, at + DEVMINOR, 8, "devminor", offset);
      if (format === Format.USTAR) {
        prefixEnd = fieldEnd(b, at + PREFIX, PREFIX_LEN);
      } else if (format === Format.STAR) {
        prefixEnd = fieldEnd(b, at + PREFIX, STAR_PREFIX_LEN);
        h.atimeSec = numField(b, at + STAR_ATIME, 12, "atime", offset);
        h.atimeNsec = 0;
        // ctime (at 488) is parsed for validity only.
        numField(b, at + STAR_ATIME + 12, 12, "ctime", offset);
      } else {
        // GNU: atime/ctime where ustar has its prefix. Files from Go before 1.8
        // put a prefix there; Go falls back to that when the times do not parse.
        const atime = b[at + GNU_ATIME] !== 0 ? parseNumeric(b, at + GNU_ATIME, 12) : 0;
        const ctime = b[at + GNU_ATIME + 12] !== 0 ? parseNumeric(b, at + GNU_ATIME + 12, 12) : 0;
        if (Number.isNaN(atime) || Number.isNaN(ctime)) {
          const end = fieldEnd(b, at + PREFIX, PREFIX_LEN);
          if (isAscii(b, at + PREFIX, end)) prefixEnd = end;
        } else if (b[at + GNU_ATIME] !== 0) {
          h.atimeSec = atime;
          h.atimeNsec = 0;
        }
      }
    }
    h.name = prefixEnd > at + PREFIX
      ? this.#joined(b, at + PREFIX, prefixEnd, at + NAME, nameEnd)
      : this.copy(b, at + NAME, nameEnd);
    return h;
  }
}

/**
 * An owner name field (`uname` or `gname`) as text, remembering the last
 * one: archives mostly repeat the same few names, so the common case is a
 * byte comparison instead of a decode.
 */
class OwnerName {
  #bytes = new Uint8Array(OWNER_LEN);
  #len = 0;
  #text = "";

  read(b: Uint8Array, off: number): string {
    const end = fieldEnd(b, off, OWNER_LEN);
    const n = end - off;
    const last = this.#bytes;
    if (n === this.#len) {
      let i = 0;
      while (i < n && b[off + i] === last[i]) i++;
      if (i === n) return this.#text;
    }
    for (let i = 0; i < n; i++) last[i] = b[off + i];
    this.#len = n;
    this.#text = text(b.subarray(off, end));
    return this.#text;
  }
}

/** A numeric header field; a malformed one is an invalid header. */
function numField(b: Uint8Array, off: number, len: number, field: string, offset: number): number {
  const v = parseNumeric(b, off, len);
  if (Number.isNaN(v)) {
    throw new TarFormatError(`invalid tar header: malformed ${field} field`, offset);
  }
  return v;
}

function detectFormat(b: Uint8Array, at: number): Format {
  const m = at + MAGIC;
  if (
    b[m] !== 0x75 || b[m + 1] !== 0x73 || b[m + 2] !== 0x74 || b[m + 3] !== 0x61 ||
    b[m + 4] !== 0x72
  ) {
    return Format.V7;
  }
  if (b[m + 5] === 0) {
    const t = at + STAR_TRAILER;
    const star = b[t] === 0x74 && b[t + 1] === 0x61 && b[t + 2] === 0x72 && b[t + 3] === 0;
    return star ? Format.STAR : Format.USTAR;
  }
  // "ustar " + " \0"
  if (b[m + 5] === 0x20 && b[m + 6] === 0x20 && b[m + 7] === 0) return Format.GNU;
  return Format.V7;
}

/**
 * Whether `want` is the unsigned or the signed byte sum of the block, with
 * the checksum field counted as spaces. Each byte >= 0x80 counts 256 less
 * in the signed sum, so one pass gives both: the sum and that count.
 */
function checksumMatches(b: Uint8Array, at: number, want: number): boolean {
  let sum = 0;
  let high = 0;
  const end = at + BLOCK;
  for (let i = at; i < end; i++) {
    const c = b[i];
    sum += c;
    high += c >> 7;
  }
  for (let i = at + CHKSUM; i < at + CHKSUM + 8; i++) {
    const c = b[i];
    sum -= c;
    high -= c >> 7;
  }
  const unsigned = sum + 8 * 0x20;
  return want === unsigned || want === unsigned - 256 * high;
}

function isZeroBlock(b: Uint8Array, at: number): boolean {
  for (let i = at; i < at + BLOCK; i++) {
    if (b[i] !== 0) return false;
  }
  return true;
}

/**
 * Go's `parseNumeric`: base-256 when the high bit of the first byte is set
 * (two's complement), else octal. NaN when malformed or beyond 2^53.
 */
function parseNumeric(b: Uint8Array, off: number, len: number): number {
  const first = b[off];
  if ((first & 0x80) === 0) return parseOctal(b, off, len);
  const inv = (first & 0x40) !== 0 ? 0xff : 0;
  let x = 0;
  for (let i = 0; i < len; i++) {
    let c = b[off + i] ^ inv;
    if (i === 0) c &= 0x7f;
    x = x * 256 + c;
    if (x > Number.MAX_SAFE_INTEGER) return NaN;
  }
  return inv ? -x - 1 : x;
}

/**
 * Go's `parseOctal`: trim spaces and NULs at both ends, read up to the first
 * NUL, octal digits only. Empty is 0. NaN when malformed or beyond 2^53.
 */
function parseOctal(b: Uint8Array, off: number, len: number): number {
  let start = off;
  let end = off + len;
  while (start < end && (b[start] === 0x20 || b[start] === 0)) start++;
  while (end > start && (b[end - 1] === 0x20 || b[end - 1] === 0)) end--;
  if (start === end) return 0;
  let x = 0;
  for (let i = start; i < end; i++) {
    const c = b[i];
    if (c === 0) {
      if (i === start) return NaN;
      break;
    }
    if (c < 0x30 || c > 0x37) return NaN;
    x = x * 8 + (c - 0x30);
  }
  return x > Number.MAX_SAFE_INTEGER ? NaN : x;
}

/** Where the NUL-terminated field at `b[off..off+len)` ends (`off+len` when there is no NUL). */
function fieldEnd(b: Uint8Array, off: number, len: number): number {
  let end = off;
  const limit = off + len;
  while (end < limit && b[end] !== 0) end++;
  return end;
}

/** Short ASCII text is built by hand: cheaper than TextDecoder for a few bytes. */
const SHORT_TEXT = 12;

/** Bytes as text: UTF-8, with ASCII taken as it is. */
function text(bytes: Uint8Array): string {
  if (bytes.length <= SHORT_TEXT) {
    let s = "";
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i];
      if (c >= 0x80) return utf8.decode(bytes);
      s += String.fromCharCode(c);
    }
    return s;
  }
  return utf8.decode(bytes);
}

/** Whether `b[start..end)` is ASCII without NULs. */
function isAscii(b: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    if (b[i] === 0 || b[i] >= 0x80) return false;
  }
  return true;
}

function isHeaderOnly(type: number): boolean {
  return type >= TarType.LINK && type <= TarType.FIFO;
}

function pad(size: number): number {
  const rest = size % BLOCK;
  return rest === 0 ? 0 : BLOCK - rest;
}

/**
 * Go's `parsePAX` + `parsePAXRecord`: `"<len> <key>=<value>\n"` records,
 * later keys replacing earlier ones. Values are views into `data`.
 */
function parsePaxRecords(data: Uint8Array, offset: number): Map<string, Uint8Array> {
  const records = new Map<string, Uint8Array>();
  const fail = (why: string): never => {
    throw new TarFormatError(`invalid PAX record: ${why}`, offset);
  };
  let pos = 0;
  while (pos < data.length) {
    const rest = data.length - pos;
    let sp = pos;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    if (sp === data.length) fail("no length field");
    let n = 0;
    if (sp === pos) fail("empty length field");
    for (let i = pos; i < sp; i++) {
      const c = data[i];
      if (c < 0x30 || c > 0x39) fail("length field is not a decimal number");
      n = n * 10 + (c - 0x30);
      if (n > rest) fail("length beyond the header's data");
    }
    if (n < 5 || n <= sp - pos + 1) fail(`record length ${n} too small`);
    const end = pos + n;
    if (data[end - 1] !== 0x0a) fail("record does not end in a newline");
    let eq = sp + 1;
    while (eq < end - 1 && data[eq] !== 0x3d) eq++;
    if (eq === end - 1) fail("record has no '='");
    const keyBytes = data.subarray(sp + 1, eq);
    const value = data.subarray(eq + 1, end - 1);
    const key = text(keyBytes);
    if (key === "") fail("empty key");
    const nulChecked = key === "path" || key === "linkpath" || key === "uname" ||
        key === "gname"
      ? value
      : keyBytes;
    if (nulChecked.indexOf(0) >= 0) fail(`NUL in record ${JSON.stringify(key)}`);
    records.set(key, value);
    pos = end;
  }
  return records;
}

const XATTR_PREFIX = "SCHILY.xattr.";

/** Go's `mergePAX`, with GNU sparse records refused. */
function applyPax(
  h: TarHeader,
  records: Map<string, Uint8Array>,
  offset: number,
  fields: HeaderFields,
): void {
  const fail = (key: string): never => {
    throw new TarFormatError(`invalid PAX record: bad value for ${JSON.stringify(key)}`, offset);
  };
  for (const [key, value] of records) {
    if (key.startsWith("GNU.sparse.")) {
      const name = records.get("GNU.sparse.name") ?? records.get("path") ?? h.name;
      throw new TarFormatError(
        `sparse entries are not supported (PAX record ${key})`,
        offset,
        nameText(name),
      );
    }
    if (value.length === 0) continue; // keep the header block's value, as Go does
    switch (key) {
      case "path":
        h.name = fields.copy(value, 0, value.length);
        break;
      case "linkpath":
        h.linkname = fields.copy(value, 0, value.length);
        break;
      case "uname":
        h.uname = text(value);
        break;
      case "gname":
        h.gname = text(value);
        break;
      case "uid":
        h.uid = parseDecimal(value) ?? fail(key);
        break;
      case "gid":
        h.gid = parseDecimal(value) ?? fail(key);
        break;
      case "size":
        h.size = parseDecimal(value) ?? fail(key);
        break;
      case "mtime": {
        const t = parsePaxTime(value) ?? fail(key);
        h.mtimeSec = t[0];
        h.mtimeNsec = t[1];
        break;
      }
      case "atime": {
        const t = parsePaxTime(value) ?? fail(key);
        h.atimeSec = t[0];
        h.atimeNsec = t[1];
        break;
      }
      case "ctime":
        parsePaxTime(value) ?? fail(key);
        break;
      default:
        if (key.startsWith(XATTR_PREFIX)) {
          h.xattrs ??= new Map();
          h.xattrs.set(key.slice(XATTR_PREFIX.length), fields.copy(value, 0, value.length));
        }
    }
  }
}

/** A signed decimal integer (Go's `ParseInt(v, 10, 64)`), null if malformed or unsafe. */
function parseDecimal(v: Uint8Array): number | null {
  let i = 0;
  let neg = false;
  if (v[0] === 0x2b || v[0] === 0x2d) {
    neg = v[0] === 0x2d;
    i = 1;
  }
  if (i === v.length) return null;
  let x = 0;
  for (; i < v.length; i++) {
    const c = v[i];
    if (c < 0x30 || c > 0x39) return null;
    x = x * 10 + (c - 0x30);
    if (x > Number.MAX_SAFE_INTEGER) return null;
  }
  return neg && x !== 0 ? -x : x;
}

/**
 * Go's `parsePAXTime`: `sec[.frac]`, fraction cut or padded to 9 digits;
 * a negative time counts its fraction backwards. Returns [sec, nsec] with
 * 0 <= nsec < 1e9, or null if malformed.
 */
function parsePaxTime(v: Uint8Array): [number, number] | null {
  let dot = v.indexOf(0x2e);
  if (dot < 0) dot = v.length;
  const sec = parseDecimal(v.subarray(0, dot));
  if (sec === null) return null;
  if (dot + 1 >= v.length) return [sec, 0];
  let nsec = 0;
  for (let i = dot + 1, k = 0; i < v.length; i++, k++) {
    const c = v[i];
    if (c < 0x30 || c > 0x39) return null;
    if (k < 9) nsec = nsec * 10 + (c - 0x30);
  }
  for (let k = v.length - dot - 1; k < 9; k++) nsec *= 10;
  if (v[0] === 0x2d && nsec > 0) return [sec - 1, 1e9 - nsec];
  return [sec, nsec];
}
