/**
 * Deleting layer directories safely: rename out of the way first
 * ({@linkcode atomicRemove}), unmount everything below before deleting
 * ({@linkcode ensureRemoveAll}), and sweep `*-removing` leftovers of an
 * interrupted removal ({@linkcode sweepRemoving}, Init step 10).
 *
 * Unlike containers/storage, deletion never descends into a mount: if something below
 * the directory stays mounted, the removal stops with an error instead of
 * deleting the mounted filesystem's files.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { Errno, ErrnoError, errnoOf, type Libc } from "../ffi/libc.ts";
import { compareBytewise, REMOVING_SUFFIX, removingName } from "./ids.ts";
import { mountpointsUnder, recursiveUnmount } from "./mounts.ts";

/** EBUSY retries of the delete loop, and the pause between them (containers/storage's values). */
const BUSY_RETRIES = 5;
const BUSY_DELAY_MS = 100;

function lstatOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Rename like Go's `os.Rename`: refuse (EEXIST) to replace an existing
 * directory, which rename(2) would silently do when it is empty.
 */
function renameNoDirReplace(libc: Libc, source: string, target: string): void {
  const t = lstatOrUndefined(target);
  if (t?.isDirectory) {
    const s = lstatOrUndefined(source);
    if (s === undefined) throw new ErrnoError(Errno.ENOENT, "rename", source);
    if (s.ino !== t.ino || s.dev !== t.dev) throw new ErrnoError(Errno.EEXIST, "rename", target);
  }
  libc.rename(source, target);
}

/**
 * Remove `source` by renaming it to `source + "-removing"` (or, when that
 * name would be too long, the shorter staging name of
 * {@linkcode removingName}) and deleting that,
 * so a crash midway leaves a name the next Init sweeps, never a half-deleted
 * layer under its real name. A missing `source` is fine (a stale `-removing`
 * twin is still deleted). Fails when `source` cannot be renamed (e.g. EBUSY:
 * it is a live mountpoint) or when both names exist.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../ffi/libc.ts";
 * import { atomicRemove } from "./remove.ts";
 * const dir = await Deno.makeTempDir();
 * await atomicRemove(systemLibc(), dir);
 * ```
 */
export async function atomicRemove(
  libc: Libc,
  source: string,
  procRoot = "/proc",
): Promise<void> {
  const target = join(dirname(source), removingName(basename(source)));
  try {
    renameNoDirReplace(libc, source, target);
  } catch (e) {
    const n = errnoOf(e);
    if (n === Errno.EEXIST || n === Errno.ENOTEMPTY) {
      if (lstatOrUndefined(source) !== undefined) {
        throw new Error(
          `target rename dir '${target}' exists but should not, ` +
            `this needs to be manually cleaned up: ${message(e)}`,
          { cause: e },
        );
      }
    } else if (n !== Errno.ENOENT) {
      throw new Error(`error preparing atomic delete: ${message(e)}`, { cause: e });
    }
  }
  await ensureRemoveAll(libc, target, procRoot);
}

/**
 * Delete `dir` and everything below it; a missing `dir` is success. Mounts
 * at or below `dir` are unmounted first (deepest first, busy ones detached);
 * if any remains mounted nothing is deleted. EBUSY while deleting is retried
 * 5 times, 100 ms apart. Errors read `error while removing <dir>: ...`.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../ffi/libc.ts";
 * import { ensureRemoveAll } from "./remove.ts";
 * await ensureRemoveAll(systemLibc(), "/var/lib/strata/diff/abc-removing");
 * ```
 */
export async function ensureRemoveAll(
  libc: Libc,
  dir: string,
  procRoot = "/proc",
): Promise<void> {
  const fail = (e: unknown): Error =>
    new Error(`error while removing ${dir}: ${message(e)}`, { cause: e });
  let st: Deno.FileInfo | undefined;
  try {
    st = lstatOrUndefined(dir);
  } catch (e) {
    throw fail(e);
  }
  if (st === undefined) return;
  if (!st.isDirectory) {
    // A file or a symlink: delete the entry itself; never follow a link to unmount its target.
    try {
      Deno.removeSync(dir);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw fail(e);
    }
    return;
  }
  let sawNotFound = false;
  for (let busy = 0;;) {
    let unmountError: unknown;
    let left: string[] = [];
    try {
      // Returns only once its own read of the mount table shows nothing below
      // `dir`: no second read (mountinfo is slow to read where mounts are many).
      recursiveUnmount(libc, dir, procRoot);
    } catch (e) {
      unmountError = e;
      left = mountpointsUnder(dir, procRoot);
    }
    if (left.length > 0) {
      const why = unmountError ? `: ${message(unmountError)}` : "";
      throw new Error(
        `error while removing ${dir}: still mounted: ${left.join(", ")}${why}`,
        { cause: unmountError },
      );
    }
    try {
      Deno.removeSync(dir, { recursive: true });
      return;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        if (lstatOrUndefined(dir) === undefined) return;
        if (sawNotFound) throw fail(e); // the same vanishing entry twice: give up
        sawNotFound = true;
        continue;
      }
      if (errnoOf(e) === Errno.EBUSY && busy < BUSY_RETRIES) {
        busy++;
        await new Promise((r) => setTimeout(r, BUSY_DELAY_MS));
        continue;
      }
      throw fail(e);
    }
  }
}

/**
 * Delete every directory directly in `parentDir` whose name ends with
 * `-removing` (leftovers of interrupted removals); return the paths removed,
 * sorted. A failure is handed to `onError` (default: ignored) and
 * the sweep goes on, as containers/storage's Init did. A missing `parentDir` sweeps
 * nothing.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../ffi/libc.ts";
 * import { sweepRemoving } from "./remove.ts";
 * const removed = await sweepRemoving(systemLibc(), "/var/lib/strata/diff");
 * console.log(removed); // e.g. ["/var/lib/strata/diff/abc-removing"]
 * ```
 */
export async function sweepRemoving(
  libc: Libc,
  parentDir: string,
  procRoot = "/proc",
  onError: (path: string, err: unknown) => void = warn,
): Promise<string[]> {
  let names: string[];
  try {
    names = [...Deno.readDirSync(parentDir)]
      .filter((e) => e.isDirectory && e.name.endsWith(REMOVING_SUFFIX))
      .map((e) => e.name)
      .sort(compareBytewise);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) onError(parentDir, e);
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const path = join(parentDir, name);
    try {
      await ensureRemoveAll(libc, path, procRoot);
      removed.push(path);
    } catch (e) {
      onError(path, e);
    }
  }
  return removed;
}

function warn(_path: string, _err: unknown): void {}
