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

/**
 * How a backend stores deletions in its diff directories.
 *
 * @example
 * ```ts
 * import { applyLayer, type WhiteoutFormat } from "../../mod.ts";
 * const format: WhiteoutFormat = "overlay"; // deletions as 0/0 character devices
 * await applyLayer((await Deno.open("layer.tar")).readable, "/tmp/upper", { whiteoutFormat: format });
 * ```
 */
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
