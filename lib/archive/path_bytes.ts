/**
 * A lossless mapping between file-name bytes and JS strings, for the places
 * where a path has to be a `string` (a `Change`'s `path`) although
 * Linux names are arbitrary bytes.
 *
 * The scheme is Python's "surrogateescape": valid UTF-8 decodes as usual; each
 * byte of an invalid sequence becomes the lone surrogate `U+DC80 + (byte -
 * 0x80)`. Such lone surrogates never come out of decoding valid UTF-8, so
 * {@linkcode pathToBytes} gives back exactly the original bytes, and a UTF-8
 * name is the ordinary string one expects.
 *
 * @module
 */

const fatal = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** A lone low surrogate in the escape range (not the second half of a pair). */
const ESCAPED = /(?<![\uD800-\uDBFF])[\uDC80-\uDCFF]/;

/**
 * Bytes → string; valid UTF-8 as usual, other bytes escaped as lone surrogates.
 *
 * @example
 * ```ts
 * import { pathFromBytes, pathToBytes } from "./path_bytes.ts";
 * const s = pathFromBytes(new Uint8Array([0x61, 0xff]));
 * console.log(s.length, pathToBytes(s)); // 2 Uint8Array(2) [ 97, 255 ]
 * ```
 */
export function pathFromBytes(bytes: Uint8Array): string {
  try {
    return fatal.decode(bytes);
  } catch {
    return decodeEscaping(bytes);
  }
}

function decodeEscaping(b: Uint8Array): string {
  let out = "";
  let i = 0;
  const n = b.length;
  while (i < n) {
    const c = b[i];
    if (c < 0x80) {
      out += String.fromCharCode(c);
      i++;
      continue;
    }
    let need = 0, cp = 0, min = 0;
    if (c >= 0xc2 && c <= 0xdf) [need, cp, min] = [1, c & 0x1f, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [need, cp, min] = [2, c & 0x0f, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [need, cp, min] = [3, c & 0x07, 0x10000];
    let ok = need > 0 && i + need < n;
    for (let k = 1; ok && k <= need; k++) {
      const cc = b[i + k];
      if ((cc & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3f);
    }
    if (ok && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
    if (ok) {
      out += String.fromCodePoint(cp);
      i += need + 1;
    } else {
      out += String.fromCharCode(0xdc00 + c);
      i++;
    }
  }
  return out;
}

/**
 * String → bytes, the inverse of {@linkcode pathFromBytes} (other lone
 * surrogates are written as U+FFFD, as `TextEncoder` does).
 *
 * @example
 * ```ts
 * import { pathToBytes } from "./path_bytes.ts";
 * console.log(pathToBytes("/etc/passwd").length); // 11
 * ```
 */
export function pathToBytes(s: string): Uint8Array {
  if (!ESCAPED.test(s)) return encoder.encode(s);
  const parts: number[] = [];
  let run = "";
  const flush = () => {
    if (run) { for (const x of encoder.encode(run)) parts.push(x); }
    run = "";
  };
  for (let i = 0; i < s.length; i++) {
    const u = s.charCodeAt(i);
    if (u >= 0xd800 && u <= 0xdbff && i + 1 < s.length) {
      const v = s.charCodeAt(i + 1);
      if (v >= 0xdc00 && v <= 0xdfff) {
        run += s[i] + s[i + 1];
        i++;
        continue;
      }
    }
    if (u >= 0xdc80 && u <= 0xdcff) {
      flush();
      parts.push(u - 0xdc00);
    } else {
      run += s[i];
    }
  }
  flush();
  return Uint8Array.from(parts);
}
