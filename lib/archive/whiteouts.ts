/**
 * Whiteout names of the layer tar format (the OCI/aufs `.wh.` convention) and
 * the on-disk formats of the two backends.
 *
 * - aufs keeps whiteouts on disk exactly as the tar has them: `.wh.<name>`
 *   files, and `.wh..wh..opq` inside an opaque directory.
 * - overlay marks a deleted name with a character device 0/0 and an opaque
 *   directory with the xattr `trusted.overlay.opaque=y`.
 *
 * @module
 */

/** `.wh.<name>` deletes `<name>` from lower layers. */
export const WHITEOUT_PREFIX = ".wh.";
/** Prefix of aufs-internal names (`.wh..wh.aufs`, `.wh..wh.plnk`, `.wh..wh.orph`). */
export const WHITEOUT_META_PREFIX = ".wh..wh.";
/** aufs pseudo-link directory (hard-link targets of copied-up files). */
export const WHITEOUT_LINK_DIR = ".wh..wh.plnk";
/** Opaque-directory marker. */
export const WHITEOUT_OPAQUE_DIR = ".wh..wh..opq";
/** overlay's xattr marking an opaque directory. */
export const OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque";

/** How a backend stores deletions in its diff directories. */
export type WhiteoutFormat = "aufs" | "overlay";

/** The exclude patterns native aufs Diff passes to the tar writer. */
export const AUFS_DIFF_EXCLUDES: readonly string[] = [
  WHITEOUT_META_PREFIX + "*",
  "!" + WHITEOUT_OPAQUE_DIR,
];

const enc = new TextEncoder();
/** `.wh.` as bytes. */
export const WHITEOUT_PREFIX_BYTES: Uint8Array = enc.encode(WHITEOUT_PREFIX);
/** `.wh..wh.` as bytes. */
export const WHITEOUT_META_PREFIX_BYTES: Uint8Array = enc.encode(WHITEOUT_META_PREFIX);
/** `.wh..wh..opq` as bytes. */
export const WHITEOUT_OPAQUE_BYTES: Uint8Array = enc.encode(WHITEOUT_OPAQUE_DIR);
/** `.wh..wh.plnk` as bytes. */
export const WHITEOUT_LINK_DIR_BYTES: Uint8Array = enc.encode(WHITEOUT_LINK_DIR);

/**
 * Whether `bytes` starts with `prefix`.
 *
 * @example
 * ```ts
 * import { startsWithBytes, WHITEOUT_PREFIX_BYTES } from "./whiteouts.ts";
 * console.log(startsWithBytes(new TextEncoder().encode(".wh.foo"), WHITEOUT_PREFIX_BYTES)); // true
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
 * import { bytesEqual } from "./whiteouts.ts";
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
 * import { compareBytes } from "./whiteouts.ts";
 * const e = new TextEncoder();
 * console.log(compareBytes(e.encode("B"), e.encode("a")) < 0); // true
 * ```
 */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}
