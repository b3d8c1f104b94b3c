/**
 * Whole-file replacement that a crash cannot tear: write a temporary file in
 * the same directory, optionally fsync it, rename it over the target, and
 * fsync the directory. Readers see the old content or the new, never a mix or
 * an empty file (containers/storage truncated in place).
 *
 * @module
 */

import { join } from "node:path";
import { TEMP_SUFFIX } from "./ids.ts";

/** Options of {@linkcode writeFileAtomic}. */
export interface AtomicWriteOptions {
  /** fsync the data and the directory so the file survives power loss (default true). */
  durable?: boolean;
  /** Permission bits of the new file, before umask (default 0o644). */
  mode?: number;
}

/**
 * A fresh temporary file name, `.<16 hex digits>.tmp`: short whatever the
 * target's length, and ending in the suffix that no layer id may have.
 *
 * @example
 * ```ts
 * import { tempName } from "./atomic_write.ts";
 * console.log(tempName()); // e.g. .9f86d081884c7d65.tmp
 * ```
 */
export function tempName(): string {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return "." + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("") + TEMP_SUFFIX;
}

/**
 * True for names {@linkcode tempName} makes (and any other name ending in `.tmp`).
 *
 * @example
 * ```ts
 * import { isTempName } from "./atomic_write.ts";
 * console.log(isTempName(".0011223344556677.tmp")); // true
 * ```
 */
export function isTempName(name: string): boolean {
  return name.endsWith(TEMP_SUFFIX);
}

/**
 * fsync a directory, making renames and unlinks inside it durable.
 *
 * @example
 * ```ts
 * import { syncDir } from "./atomic_write.ts";
 * await syncDir(await Deno.makeTempDir());
 * ```
 */
export async function syncDir(dir: string): Promise<void> {
  const f = await Deno.open(dir, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
}

function lstatOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch {
    return undefined;
  }
}

function sameFile(a: Deno.FileInfo, b: Deno.FileInfo | undefined): boolean {
  return b !== undefined && a.ino === b.ino && a.dev === b.dev;
}

/**
 * Temp files of {@linkcode writeFileAtomic} in `dir` that no writer holds
 * any more (left by a killed process): each is a regular file with a
 * {@linkcode tempName} name whose `flock` can be taken (a live writer holds
 * it until its rename). With `remove`, they are deleted too. Returns their
 * paths, sorted; a missing `dir` has none. Never follows a link.
 *
 * @example
 * ```ts
 * import { staleTempFiles } from "./atomic_write.ts";
 * console.log(staleTempFiles(await Deno.makeTempDir(), { remove: true })); // []
 * ```
 */
export function staleTempFiles(dir: string, opts: { remove?: boolean } = {}): string[] {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.isFile && TEMP_NAME.test(e.name))
      .map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return [];
    throw new Error(`list ${dir}: ${(e as Error).message}`, { cause: e });
  }
  const stale: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    let f: Deno.FsFile;
    try {
      f = Deno.openSync(path, { read: true });
    } catch {
      continue; // renamed or removed meanwhile
    }
    try {
      if (!f.tryLockSync(true)) continue; // a live writer
      if (!sameFile(f.statSync(), lstatOrUndefined(path))) continue; // renamed meanwhile
      if (opts.remove) Deno.removeSync(path);
      stale.push(path);
    } catch {
      // vanished between the checks: nothing to do
    } finally {
      f.close();
    }
  }
  return stale;
}

/** The names {@linkcode tempName} makes. */
const TEMP_NAME = /^\.[0-9a-f]{16}\.tmp$/;

/**
 * Replace `dir/name` with `data` atomically (temp file in `dir`, rename).
 * `dir` is created (0700) when missing. The temp file is `flock`ed until it
 * is renamed, so {@linkcode staleTempFiles} can tell a killed writer's
 * leftover from a live one. On failure the temporary file is removed and the
 * error names the target.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic_write.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(dir, "C", new TextEncoder().encode("B\nA\n"));
 * ```
 */
export async function writeFileAtomic(
  dir: string,
  name: string,
  data: Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const durable = opts.durable ?? true;
  const target = join(dir, name);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  for (let attempt = 0;; attempt++) {
    const tmp = join(dir, tempName());
    try {
      const f = await Deno.open(tmp, { write: true, createNew: true, mode: opts.mode ?? 0o644 });
      try {
        // Locked until the rename is done: a sweep leaves a locked temp file alone.
        f.lockSync(true);
        if (!sameFile(f.statSync(), lstatOrUndefined(tmp))) {
          // Swept in the instant between open and lock: start again.
          if (attempt < 3) continue;
          throw new Error(`${tmp} was removed while being written`);
        }
        let off = 0;
        while (off < data.length) off += await f.write(data.subarray(off));
        if (durable) await f.sync();
        await Deno.rename(tmp, target);
      } finally {
        f.close();
      }
    } catch (e) {
      await Deno.remove(tmp).catch(() => {}); // may not exist; the original error matters
      throw new Error(`atomic write of ${target}: ${(e as Error).message}`, { cause: e });
    }
    break;
  }
  if (durable) await syncDir(dir);
}
