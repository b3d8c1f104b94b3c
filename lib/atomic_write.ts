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

/**
 * Replace `dir/name` with `data` atomically (temp file in `dir`, rename).
 * `dir` is created (0700) when missing. On failure the temporary file is
 * removed and the error names the target.
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
  const tmp = join(dir, tempName());
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: opts.mode ?? 0o644 });
    try {
      let off = 0;
      while (off < data.length) off += await f.write(data.subarray(off));
      if (durable) await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, target);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {}); // may not exist; the original error matters
    throw new Error(`atomic write of ${target}: ${(e as Error).message}`, { cause: e });
  }
  if (durable) await syncDir(dir);
}
