/**
 * Counts the entries of a tar stream as its bytes go by, for the progress
 * line. It reads only what it must: each 512-byte header's size and type, and
 * the `size=` record of PAX headers (which override the header size of the
 * next entry). Metadata headers (PAX, GNU long names) are not counted.
 *
 * @module
 */

const BLOCK = 512;
const decoder = new TextDecoder();

const PAX = 0x78, PAX_GLOBAL = 0x67, GNU_LONGNAME = 0x4c, GNU_LONGLINK = 0x4b;

/** Types whose body is empty whatever the size field says (as Go's reader does): '1'..'6'. */
function headerOnly(type: number): boolean {
  return type >= 0x31 && type <= 0x36;
}

/** Largest PAX body kept to look for `size=` (bigger ones are skipped, not parsed). */
const MAX_PAX = 1 << 20;

function parseNumeric(field: Uint8Array): number {
  if (field[0] & 0x80) {
    // base-256: big-endian, first byte's top bit is the marker
    let v = field[0] & 0x7f;
    for (let i = 1; i < field.length; i++) v = v * 256 + field[i];
    return v;
  }
  // octal digits, maybe after spaces, ended by NUL or space
  let v = 0, i = 0;
  while (i < field.length && field[i] === 0x20) i++;
  for (; i < field.length; i++) {
    const c = field[i];
    if (c < 0x30 || c > 0x37) break;
    v = v * 8 + (c - 0x30);
  }
  return v;
}

/** True for an all-zero block (the end-of-archive marker). */
function isZeroBlock(h: Uint8Array): boolean {
  // A real header has a name or at least a checksum: test those bytes first.
  if (h[0] !== 0 || h[148] !== 0) return false;
  for (let i = 0; i < BLOCK; i++) if (h[i] !== 0) return false;
  return true;
}

function paxSize(body: Uint8Array): number | undefined {
  const text = decoder.decode(body);
  const m = /(?:^|\n)\d+ size=(\d+)\n/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * Feed it the bytes of a tar; `entries` is the number of entries seen so far.
 *
 * @example
 * ```ts
 * import { TarEntryCounter } from "./tar_count.ts";
 * const c = new TarEntryCounter();
 * c.push(new Uint8Array(1024)); // just an end marker
 * console.log(c.entries); // 0
 * ```
 */
export class TarEntryCounter {
  /** Entries seen so far. */
  entries = 0;
  #header = new Uint8Array(BLOCK);
  #headerFill = 0;
  /** Bytes of body (and padding) still to skip. */
  #skip = 0;
  /** Collecting a PAX body of this many bytes (then `#skip` its padding). */
  #pax: Uint8Array | undefined;
  #paxFill = 0;
  #paxPad = 0;
  #nextSize: number | undefined;

  /** Account for the next bytes of the stream. */
  push(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - off);
        this.#skip -= n;
        off += n;
        continue;
      }
      if (this.#pax) {
        const n = Math.min(this.#pax.length - this.#paxFill, chunk.length - off);
        this.#pax.set(chunk.subarray(off, off + n), this.#paxFill);
        this.#paxFill += n;
        off += n;
        if (this.#paxFill === this.#pax.length) {
          this.#nextSize = paxSize(this.#pax) ?? this.#nextSize;
          this.#pax = undefined;
          this.#skip = this.#paxPad;
        }
        continue;
      }
      const n = Math.min(BLOCK - this.#headerFill, chunk.length - off);
      this.#header.set(chunk.subarray(off, off + n), this.#headerFill);
      this.#headerFill += n;
      off += n;
      if (this.#headerFill === BLOCK) {
        this.#headerFill = 0;
        this.#onHeader(this.#header);
      }
    }
  }

  #onHeader(h: Uint8Array): void {
    if (isZeroBlock(h)) return; // end-of-archive block
    const type = h[156] || 0x30;
    let size = parseNumeric(h.subarray(124, 136));
    const padded = (s: number) => Math.ceil(s / BLOCK) * BLOCK;
    if (type === PAX || type === PAX_GLOBAL) {
      if (size <= MAX_PAX) {
        this.#pax = new Uint8Array(size);
        this.#paxFill = 0;
        this.#paxPad = padded(size) - size;
        if (size === 0) this.#pax = undefined;
      } else {
        this.#skip = padded(size);
      }
      return;
    }
    if (type === GNU_LONGNAME || type === GNU_LONGLINK) {
      this.#skip = padded(size);
      return;
    }
    if (this.#nextSize !== undefined) {
      size = this.#nextSize;
      this.#nextSize = undefined;
    }
    this.entries++;
    // links, directories, devices and fifos carry no body whatever the size says
    this.#skip = headerOnly(type) ? 0 : padded(size);
  }
}
