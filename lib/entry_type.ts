/**
 * The driver's own entries under its root (`layers/<id>`, `locks/<id>`,
 * `diff/<id>`, `mnt/<id>`, ...) are looked at with `lstat`, never through a
 * symbolic link: a link planted there (by mistake or on purpose) would steer
 * reads, writes and mounts outside the root. A wrong type is an error that
 * names the path, what it is and what was expected.
 *
 * @module
 */

/** What an entry of the root should be. */
export type EntryKind = "file" | "directory";

/**
 * An entry under the driver root has the wrong type (a symbolic link, or a
 * file where a directory belongs, ...). strata does not follow or replace it.
 *
 * @example
 * ```ts
 * import { WrongEntryTypeError } from "./entry_type.ts";
 * const e = new WrongEntryTypeError("/r/locks/a", "symbolic link", "file");
 * console.log(e.message);
 * // /r/locks/a is a symbolic link, not a regular file (strata never follows links under its root)
 * ```
 */
export class WrongEntryTypeError extends Error {
  /** The offending path. */
  readonly path: string;
  /** What was found there. */
  readonly found: string;
  /** `found` (e.g. `"symbolic link"`) is at `path` where `wanted` belongs. */
  constructor(path: string, found: string, wanted: EntryKind) {
    const want = wanted === "file" ? "a regular file" : "a directory";
    const why = found === "symbolic link" ? " (strata never follows links under its root)" : "";
    super(`${path} is a ${found}, not ${want}${why}`);
    this.name = "WrongEntryTypeError";
    this.path = path;
    this.found = found;
  }
}

/** A word for the type of `st`. */
export function describeType(st: Deno.FileInfo): string {
  if (st.isSymlink) return "symbolic link";
  if (st.isDirectory) return "directory";
  if (st.isFile) return "regular file";
  if (st.isFifo) return "FIFO";
  if (st.isSocket) return "socket";
  if (st.isBlockDevice) return "block device";
  if (st.isCharDevice) return "character device";
  return "special file";
}

/**
 * `lstat(path)` (never following a link), checked to be of kind `want`;
 * `undefined` when nothing is there. Throws {@linkcode WrongEntryTypeError}
 * for any other type.
 *
 * @example
 * ```ts
 * import { lstatKind } from "./entry_type.ts";
 * const dir = await Deno.makeTempDir();
 * console.log(lstatKind(dir, "directory")?.isDirectory); // true
 * console.log(lstatKind(dir + "/missing", "file")); // undefined
 * ```
 */
export function lstatKind(path: string, want: EntryKind): Deno.FileInfo | undefined {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const ok = want === "file" ? st.isFile : st.isDirectory;
  if (!ok) throw new WrongEntryTypeError(path, describeType(st), want);
  return st;
}
