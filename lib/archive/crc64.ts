/**
 * CRC-64 with the ISO 3309 polynomial, as Go's `hash/crc64` computes it with
 * `crc64.MakeTable(crc64.ISO)` (reflected, initial value and final XOR all
 * ones). tar-split stores this checksum of every file's content.
 *
 * The 64-bit state is kept as two 32-bit halves; bytes are folded eight at a
 * time through eight tables (slicing-by-8), which is what makes it fast
 * enough to run over every byte of a layer while it is extracted.
 *
 * @module
 */

/** Go's `crc64.ISO`, reflected: only the top byte is set. */
const POLY_HI = 0xd8000000;

function makeTables(): { lo: Int32Array; hi: Int32Array } {
  const lo = new Int32Array(8 * 256);
  const hi = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let l = i;
    let h = 0;
    for (let k = 0; k < 8; k++) {
      const odd = l & 1;
      l = (l >>> 1) | (h << 31);
      h = h >>> 1;
      if (odd) h = h ^ POLY_HI;
    }
    lo[i] = l;
    hi[i] = h;
  }
  for (let t = 1; t < 8; t++) {
    for (let i = 0; i < 256; i++) {
      const pl = lo[(t - 1) * 256 + i];
      const ph = hi[(t - 1) * 256 + i];
      const idx = pl & 0xff;
      lo[t * 256 + i] = ((pl >>> 8) | (ph << 24)) ^ lo[idx];
      hi[t * 256 + i] = (ph >>> 8) ^ hi[idx];
    }
  }
  return { lo, hi };
}

const TABLES = makeTables();

/**
 * A running CRC-64/ISO (Go's `crc64.New(crc64.MakeTable(crc64.ISO))`).
 *
 * @example
 * ```ts
 * import { Crc64 } from "./crc64.ts";
 * const c = new Crc64();
 * c.update(new TextEncoder().encode("hello\n"));
 * console.log(c.hex()); // 614c3eeee2d81000
 * ```
 */
export class Crc64 {
  #lo = -1;
  #hi = -1;

  /** Start again from the empty input. */
  reset(): void {
    this.#lo = -1;
    this.#hi = -1;
  }

  /** Fold `b` into the checksum. */
  update(b: Uint8Array): void {
    const tl = TABLES.lo;
    const th = TABLES.hi;
    let lo = this.#lo;
    let hi = this.#hi;
    let i = 0;
    const n = b.length;
    const end8 = n - (n & 7);
    for (; i < end8; i += 8) {
      const l = lo ^ (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24));
      const h = hi ^ (b[i + 4] | (b[i + 5] << 8) | (b[i + 6] << 16) | (b[i + 7] << 24));
      const i7 = l & 0xff, i6 = (l >>> 8) & 0xff, i5 = (l >>> 16) & 0xff, i4 = l >>> 24;
      const i3 = h & 0xff, i2 = (h >>> 8) & 0xff, i1 = (h >>> 16) & 0xff, i0 = h >>> 24;
      lo = tl[1792 + i7] ^ tl[1536 + i6] ^ tl[1280 + i5] ^ tl[1024 + i4] ^
        tl[768 + i3] ^ tl[512 + i2] ^ tl[256 + i1] ^ tl[i0];
      hi = th[1792 + i7] ^ th[1536 + i6] ^ th[1280 + i5] ^ th[1024 + i4] ^
        th[768 + i3] ^ th[512 + i2] ^ th[256 + i1] ^ th[i0];
    }
    for (; i < n; i++) {
      const idx = (lo ^ b[i]) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ tl[idx];
      hi = (hi >>> 8) ^ th[idx];
    }
    this.#lo = lo | 0;
    this.#hi = hi | 0;
  }

  /** The checksum so far as Go's `Sum(nil)` gives it: 8 bytes, big-endian, into `out` at `at`. */
  sumInto(out: Uint8Array, at = 0): void {
    const lo = ~this.#lo >>> 0;
    const hi = ~this.#hi >>> 0;
    out[at] = hi >>> 24;
    out[at + 1] = (hi >>> 16) & 0xff;
    out[at + 2] = (hi >>> 8) & 0xff;
    out[at + 3] = hi & 0xff;
    out[at + 4] = lo >>> 24;
    out[at + 5] = (lo >>> 16) & 0xff;
    out[at + 6] = (lo >>> 8) & 0xff;
    out[at + 7] = lo & 0xff;
  }

  /** The checksum so far: 8 bytes, big-endian (Go's `Sum(nil)`). */
  sum(): Uint8Array {
    const out = new Uint8Array(8);
    this.sumInto(out);
    return out;
  }

  /** The checksum so far as 16 hex digits. */
  hex(): string {
    return Array.from(this.sum(), (x) => x.toString(16).padStart(2, "0")).join("");
  }
}
