/**
 * overlay mount data: `lowerdir=…,upperdir=…,workdir=…` for one layer's
 * union, kept within one page (the kernel copies one page of mount data and
 * silently cuts the rest: a cut `workdir` path fails with ENOENT, or worse,
 * names another directory).
 *
 * Two forms, tried in order (the way containers/storage's overlay driver does):
 *
 * 1. absolute paths of the ancestors' diff dirs, nearest first;
 * 2. when those do not fit, short names relative to the driver root
 *    (`l/<name>` symlinks to `../diff/<id>`, `diff/<id>`, `work/<id>`); the
 *    caller then mounts with the root as its working directory.
 *
 * Above overlay's own limit of lower layers (500 in Linux, `OVL_MAX_STACK`)
 * no data is made: the kernel would refuse the mount with a bare EINVAL.
 *
 * Pure functions: no file system access.
 *
 * @module
 */

import { relative } from "node:path";
import { formatMountLabel, utf8Length } from "../aufs/branches.ts";

/**
 * Most lower layers one overlay mount takes (the kernel's `OVL_MAX_STACK`).
 *
 * @example
 * ```ts
 * import { OVERLAY_MAX_LOWERS } from "../../mod.ts";
 * const fits = (chain: string[]) => chain.length <= OVERLAY_MAX_LOWERS;
 * console.log(fits(["base"])); // true
 * ```
 */
export const OVERLAY_MAX_LOWERS = 500;

/**
 * Options every union is mounted with, so the diff dirs stay what a layer tar
 * can express, whatever the kernel's defaults
 * (`/sys/module/overlay/parameters`):
 *
 * - `index=off`: no inode index (it ties an upper dir to the exact lowers it
 *   was first mounted with, and a layer is mounted over varying chains);
 * - `redirect_dir=nofollow`: renaming a lower directory copies it up instead
 *   of leaving a `trusted.overlay.redirect` xattr that a tar cannot carry, and
 *   redirect xattrs found in lower layers are not followed;
 * - `metacopy=off`: a chmod or chown copies the whole file up, never a
 *   data-less metadata copy.
 */
export const OVERLAY_MOUNT_OPTIONS: readonly string[] = Object.freeze([
  "index=off",
  "redirect_dir=nofollow",
  "metacopy=off",
]);

/**
 * The chain is deeper than one overlay mount can stack.
 *
 * @example
 * ```ts
 * import { OverlayDepthError } from "./lowers.ts";
 * console.log(new OverlayDepthError(501).message);
 * // overlay stacks at most 500 lower layers; this union needs 501
 * ```
 */
export class OverlayDepthError extends RangeError {
  /** How many lower layers were asked for. */
  readonly lowers: number;
  /** `lowers`: the number of ancestors of the layer to mount. */
  constructor(lowers: number) {
    super(`overlay stacks at most ${OVERLAY_MAX_LOWERS} lower layers; this union needs ${lowers}`);
    this.name = "OverlayDepthError";
    this.lowers = lowers;
  }
}

/**
 * Escape a path for overlay's option parser: `\`, `:` (the lowerdir
 * separator) and `,` (the option separator) get a backslash; the kernel
 * removes the backslashes again before looking the path up.
 *
 * @example
 * ```ts
 * import { escapeOverlayPath } from "./lowers.ts";
 * console.log(escapeOverlayPath("/r/diff/a:b,c")); // /r/diff/a\:b\,c
 * ```
 */
export function escapeOverlayPath(path: string): string {
  return path.replace(/[\\:,]/g, (c) => "\\" + c);
}

/**
 * What {@linkcode packOverlayMount} is given.
 *
 * @example
 * ```ts
 * import { type OverlayMountInput, packOverlayMount } from "../../mod.ts";
 * const input: OverlayMountInput = {
 *   root: "/r",
 *   upper: "/r/diff/app",
 *   work: "/r/work/app",
 *   lowers: ["/r/diff/mid", "/r/diff/base"],
 *   shortLowers: () => ["l/M", "l/B"],
 *   pageSize: 4096,
 * };
 * console.log(packOverlayMount(input).data);
 * ```
 */
export interface OverlayMountInput {
  /** The driver root (absolute). */
  root: string;
  /** The layer's own dir, `<root>/diff/<id>` (absolute). */
  upper: string;
  /** Its work dir, `<root>/work/<id>` (absolute). */
  work: string;
  /** The ancestors' diff dirs, nearest first (absolute). */
  lowers: readonly string[];
  /**
   * The ancestors' short names relative to the root (`l/<name>`), in the
   * order of `lowers`. Called only when the absolute form does not fit.
   */
  shortLowers: () => readonly string[];
  /** The system page size (`getpagesize()`). */
  pageSize: number;
  /** SELinux label, added as `context="<label>"`. */
  mountLabel?: string;
  /** Options after the three dirs (default {@linkcode OVERLAY_MOUNT_OPTIONS}). */
  options?: readonly string[];
}

/**
 * What {@linkcode packOverlayMount} decided.
 *
 * @example
 * ```ts
 * import { type OverlayMountData, packOverlayMount } from "../../mod.ts";
 * const m: OverlayMountData = packOverlayMount({
 *   root: "/r",
 *   upper: "/r/diff/app",
 *   work: "/r/work/app",
 *   lowers: ["/r/diff/base"],
 *   shortLowers: () => ["l/B"],
 *   pageSize: 4096,
 * });
 * console.log(m.form, m.bytes); // absolute, and its length
 * ```
 */
export interface OverlayMountData {
  /** Data for mount(2): at most `pageSize - 1` bytes. */
  data: string;
  /** `"absolute"`, or `"short"` (relative to the root, through `l/` links). */
  form: "absolute" | "short";
  /** Bytes of `data`. */
  bytes: number;
  /** The working directory the mount must be made from (`"short"` form only). */
  cwd?: string;
}

function render(
  lowers: readonly string[],
  upper: string,
  work: string,
  options: readonly string[],
  mountLabel: string | undefined,
): string {
  const dirs = `lowerdir=${lowers.map(escapeOverlayPath).join(":")},upperdir=${
    escapeOverlayPath(upper)
  },workdir=${escapeOverlayPath(work)}`;
  const all = options.length > 0 ? `${dirs},${options.join(",")}` : dirs;
  return formatMountLabel(all, mountLabel);
}

/**
 * The mount data of one union: absolute paths when the whole string fits in
 * `pageSize - 1` bytes (the page also holds the terminating NUL), otherwise
 * the short form, to be mounted from `cwd` (the root).
 *
 * Throws {@linkcode OverlayDepthError} above {@linkcode OVERLAY_MAX_LOWERS}
 * lower layers (before asking for short names), a `RangeError` for an empty
 * `lowers` (a base layer is never mounted) or when even the short form does
 * not fit (e.g. a huge label), and a `RangeError` when `shortLowers` gives a
 * list of the wrong length.
 *
 * @example
 * ```ts
 * import { packOverlayMount } from "./lowers.ts";
 * const m = packOverlayMount({
 *   root: "/r",
 *   upper: "/r/diff/c",
 *   work: "/r/work/c",
 *   lowers: ["/r/diff/b", "/r/diff/a"],
 *   shortLowers: () => ["l/1", "l/0"],
 *   pageSize: 4096,
 * });
 * console.log(m.form, m.data);
 * // absolute lowerdir=/r/diff/b:/r/diff/a,upperdir=/r/diff/c,workdir=/r/work/c,index=off,redirect_dir=nofollow,metacopy=off
 * ```
 */
export function packOverlayMount(input: OverlayMountInput): OverlayMountData {
  const { lowers, pageSize } = input;
  const options = input.options ?? OVERLAY_MOUNT_OPTIONS;
  if (lowers.length === 0) {
    throw new RangeError(
      `overlay mount of ${input.upper}: no lower layers (a base layer is not mounted)`,
    );
  }
  if (lowers.length > OVERLAY_MAX_LOWERS) throw new OverlayDepthError(lowers.length);
  const limit = pageSize - 1;

  // Each path is at least as many bytes as UTF-16 units: a sum above the
  // limit cannot fit, and rendering 500 absolute paths just to measure them
  // is skipped.
  let atLeast = 0;
  for (const l of lowers) atLeast += l.length + 1;
  let absBytes = atLeast;
  if (atLeast <= limit) {
    const absolute = render(lowers, input.upper, input.work, options, input.mountLabel);
    absBytes = utf8Length(absolute);
    if (absBytes <= limit) return { data: absolute, form: "absolute", bytes: absBytes };
  }

  const short = input.shortLowers();
  if (short.length !== lowers.length) {
    throw new RangeError(
      `overlay mount of ${input.upper}: ${short.length} short names for ${lowers.length} lower layers`,
    );
  }
  const data = render(
    short,
    relative(input.root, input.upper),
    relative(input.root, input.work),
    options,
    input.mountLabel,
  );
  const bytes = utf8Length(data);
  if (bytes > limit) {
    throw new RangeError(
      `overlay mount of ${input.upper}: ${lowers.length} lower layers need ${bytes} bytes of mount ` +
        `data even with short links (absolute paths: ${
          atLeast <= limit ? "" : "at least "
        }${absBytes}); ` +
        `one page holds ${limit}`,
    );
  }
  return { data, form: "short", bytes, cwd: input.root };
}
