/**
 * Small helpers for names and paths kept as bytes (tar names and on-disk
 * names need not be UTF-8).
 *
 * @module
 */

const SLASH = 0x2f;

/**
 * Whether `bytes` starts with `prefix`.
 *
 * @example
 * ```ts
 * import { startsWithBytes } from "./bytes.ts";
 * const e = new TextEncoder();
 * console.log(startsWithBytes(e.encode(".wh.foo"), e.encode(".wh."))); // true
 * ```
 */
export function startsWithBytes(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/**
 * Whether two byte strings are equal.
 *
 * @example
 * ```ts
 * import { bytesEqual } from "./bytes.ts";
 * console.log(bytesEqual(new Uint8Array([1]), new Uint8Array([1]))); // true
 * ```
 */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Byte-wise comparison of two names (the order Go's sort gives on UTF-8).
 *
 * @example
 * ```ts
 * import { compareBytes } from "./bytes.ts";
 * const e = new TextEncoder();
 * console.log(compareBytes(e.encode("B"), e.encode("a")) < 0); // true
 * ```
 */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * The concatenation of `parts`.
 *
 * @example
 * ```ts
 * import { concatBytes } from "./bytes.ts";
 * console.log(concatBytes(new Uint8Array([1]), new Uint8Array([2, 3]))); // Uint8Array [1, 2, 3]
 * ```
 */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * `dir/name` as bytes; just `name` when `dir` is empty.
 *
 * @example
 * ```ts
 * import { joinBytes } from "./bytes.ts";
 * const e = new TextEncoder();
 * console.log(new TextDecoder().decode(joinBytes(e.encode("a"), e.encode("b")))); // a/b
 * ```
 */
export function joinBytes(dir: Uint8Array, name: Uint8Array): Uint8Array {
  if (dir.length === 0) return name;
  const out = new Uint8Array(dir.length + 1 + name.length);
  out.set(dir);
  out[dir.length] = SLASH;
  out.set(name, dir.length + 1);
  return out;
}
