/**
 * Layer id validation, and the names the driver reserves for itself.
 *
 * containers/storage joined ids into paths verbatim; an id such as `../x`
 * escaped the driver root. Every id that reaches the file system goes through
 * {@linkcode validateLayerId} first.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { InvalidLayerIdError } from "./errors.ts";

const encoder = new TextEncoder();

/** Longest id, in UTF-8 bytes: one file name (`NAME_MAX`). */
export const MAX_ID_BYTES = 255;

/** Suffix of a directory being deleted (`diff/<id>-removing`). */
export const REMOVING_SUFFIX = "-removing";

/**
 * The name a directory called `name` is renamed to while it is deleted:
 * `<name>-removing` (containers/storage's, swept by Init) when that fits in one file
 * name, else `<sha256 of name, hex>-removing-removing`, which also ends in
 * `-removing` (so the same sweep finds it) and can be no other directory's
 * staging name (a name ending in `-removing` is never a layer id).
 *
 * @example
 * ```ts
 * import { removingName } from "./ids.ts";
 * console.log(removingName("abc")); // abc-removing
 * console.log(removingName("a".repeat(255)).length); // 82
 * ```
 */
export function removingName(name: string): string {
  const plain = name + REMOVING_SUFFIX;
  if (encoder.encode(plain).length <= MAX_ID_BYTES) return plain;
  const digest = createHash("sha256").update(name).digest("hex");
  return digest + REMOVING_SUFFIX + REMOVING_SUFFIX;
}

/** Suffix of the driver's temporary files (atomic writes); no id may end with it. */
export const TEMP_SUFFIX = ".tmp";

/**
 * Which forbidden character `id` holds, described with its position, or
 * `undefined`. Control characters (C0, DEL, C1) would break the one-id-a-line
 * chain files (a newline splits an id in two) and garble terminals; U+FFFD is
 * what invalid UTF-8 (from a command line or a file name) decodes to, so an id
 * holding it cannot be told apart from the bytes it replaced.
 */
function controlCharacter(id: string): string | undefined {
  let offset = 0;
  for (const ch of id) {
    const c = ch.codePointAt(0)!;
    const hex = c.toString(16).padStart(2, "0");
    if (c === 0) return `contains a NUL byte (0x00 at byte ${offset})`;
    if (c < 0x20 || c === 0x7f) return `contains control character 0x${hex} at byte ${offset}`;
    if (c >= 0x80 && c < 0xa0) return `contains control character U+00${hex} at byte ${offset}`;
    if (c === 0xfffd) {
      return `contains U+FFFD at byte ${offset} (the stand-in for invalid UTF-8: ids must be valid UTF-8)`;
    }
    offset += encoder.encode(ch).length;
  }
  return undefined;
}

/**
 * Why `id` cannot name a layer, or `undefined` when it can.
 *
 * @example
 * ```ts
 * import { layerIdProblem } from "./ids.ts";
 * console.log(layerIdProblem("a/b")); // contains '/'
 * console.log(layerIdProblem("abc")); // undefined
 * ```
 */
export function layerIdProblem(id: string): string | undefined {
  if (id === "") return "is empty";
  if (id === "." || id === "..") return "is a relative directory name";
  if (id.includes("/")) return "contains '/'";
  // Lone surrogates would be written as U+FFFD: two different ids, one file.
  if (!id.isWellFormed()) return "is not valid Unicode";
  const bad = controlCharacter(id);
  if (bad !== undefined) return bad;
  const bytes = encoder.encode(id).length;
  if (bytes > MAX_ID_BYTES) return `is ${bytes} bytes long (at most ${MAX_ID_BYTES})`;
  if (id.endsWith(REMOVING_SUFFIX)) return `ends with "${REMOVING_SUFFIX}" (reserved for removal)`;
  if (id.endsWith(TEMP_SUFFIX)) return `ends with "${TEMP_SUFFIX}" (reserved for temporary files)`;
  return undefined;
}

/**
 * Throw {@linkcode InvalidLayerIdError} unless `id` can name a layer: it must
 * be non-empty, at most 255 UTF-8 bytes, valid UTF-8, free of `/`, NUL and
 * other control characters (and of U+FFFD, invalid UTF-8's stand-in), not `.` or `..`,
 * and must not end with `-removing` or `.tmp` (names the driver uses itself).
 *
 * @example
 * ```ts
 * import { validateLayerId } from "./ids.ts";
 * validateLayerId("4f3c2a"); // fine
 * try { validateLayerId(".."); } catch (e) { console.log((e as Error).message); }
 * // invalid layer id "..": is a relative directory name
 * ```
 */
export function validateLayerId(id: string): void {
  const problem = layerIdProblem(id);
  if (problem !== undefined) throw new InvalidLayerIdError(id, problem);
}

/**
 * Order two strings by their UTF-8 bytes (containers/storage sorts names byte-wise).
 * Code point order is UTF-8 byte order; plain `<` on strings compares UTF-16
 * units, which differs for characters above U+FFFF.
 *
 * @example
 * ```ts
 * import { compareBytewise } from "./ids.ts";
 * console.log(["\u{1F600}", "\uFFFD"].sort(compareBytewise)); // ["\uFFFD", "\u{1F600}"]
 * ```
 */
export function compareBytewise(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i), y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff, ys = y >= 0xd800 && y <= 0xdfff;
    // A surrogate (part of a code point > U+FFFF) outranks every other BMP unit.
    if (xs !== ys) return xs ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}
