/**
 * Persistent mount reference counts, one small file per layer id.
 *
 * containers/storage counted in memory, adopted an existing mount once and never looked
 * again, and let counts go negative. Here every change first
 * reconciles the stored count with the mount table:
 *
 * - stored 0 but the path is mounted → 1 (a mount left by someone else is
 *   adopted as one reference, as containers/storage did);
 * - stored > 0 but the path is not mounted → 0 (after a reboot or an
 *   external umount);
 *
 * then applies the change, never going below 0. Pass `path = null` for
 * layers that are never mounted (base layers): the count is then plain
 * bookkeeping. Callers hold the layer's lock, so read-modify-write is safe
 * across processes. The files need no fsync: after a crash reconciliation
 * rebuilds the truth from the mount table.
 *
 * @module
 */

import { join } from "node:path";
import { writeFileAtomic } from "./atomic_write.ts";
import { LayerError } from "./errors.ts";
import { validateLayerId } from "./ids.ts";

const encoder = new TextEncoder();

/**
 * Mount counts stored in `dir/<id>` (a decimal number and `"\n"`; no file
 * means 0).
 *
 * @example
 * ```ts
 * import { MountCounts } from "./refcount.ts";
 * import { isMountpoint } from "./mounts.ts";
 * const counts = new MountCounts(await Deno.makeTempDir(), (p) => isMountpoint(p));
 * if (await counts.increment("abc", "/var/lib/strata/mnt/abc") === 1) {
 *   // first user: mount it
 * }
 * ```
 */
export class MountCounts {
  /** Directory of the count files. */
  readonly dir: string;
  #isMounted: (path: string) => boolean;

  /** `isMounted(path)` tells whether the layer's mount is really there. */
  constructor(dir: string, isMounted: (path: string) => boolean) {
    this.dir = dir;
    this.#isMounted = isMounted;
  }

  /** Add a reference to `id` (mounted at `path`, or `null` if never mounted); the new count. */
  increment(id: string, path: string | null): Promise<number> {
    return this.#change(id, path, +1);
  }

  /** Drop a reference (not below 0); the new count. 0 means "unmount now". */
  decrement(id: string, path: string | null): Promise<number> {
    return this.#change(id, path, -1);
  }

  /**
   * The stored count of `id`; when `path` is given, reconciled with the mount
   * table as a change would be (nothing is written). A count file that is
   * not a count (garbage, a negative number, a directory) counts as 0 for a
   * layer never mounted and as the mount table says otherwise: one bad file
   * never stops the store; {@linkcode MountCounts.problem} reports it.
   */
  async get(id: string, path: string | null = null): Promise<number> {
    validateLayerId(id);
    return this.#reconcile(await this.#read(id), path);
  }

  /**
   * What is wrong with `id`'s count file, or `undefined` when it is a count
   * or absent. Nothing is written.
   */
  async problem(id: string): Promise<string | undefined> {
    validateLayerId(id);
    const file = join(this.dir, id);
    let text: string;
    try {
      const st = await Deno.lstat(file);
      if (!st.isFile) return `${file} is not a regular file`;
      text = await Deno.readTextFile(file);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      return `${file} cannot be read: ${(e as Error).message}`;
    }
    return parseCount(text) === undefined
      ? `${file} holds ${JSON.stringify(text.slice(0, 40))}, not a count`
      : undefined;
  }

  /**
   * Rewrite `id`'s count from the mount table: 1 when `path` is mounted, else
   * none. A bad entry in its place is deleted first (a directory only when
   * empty: anything else in it is not strata's).
   */
  async rebuild(id: string, path: string | null): Promise<void> {
    validateLayerId(id);
    const file = join(this.dir, id);
    try {
      const st = await Deno.lstat(file);
      if (st.isDirectory) await Deno.remove(file);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new LayerError(id, "rebuild mount count", file, e);
      }
    }
    await this.#write(id, path !== null && this.#isMounted(path) ? 1 : 0);
  }

  /** Forget `id`'s count (e.g. when the layer is removed). */
  async reset(id: string): Promise<void> {
    await this.#write(id, 0);
  }

  /** `stored` (undefined: unreadable) reconciled with whether `path` is mounted. */
  #reconcile(stored: number | undefined, path: string | null): number {
    if (path === null) return stored ?? 0;
    const mounted = this.#isMounted(path);
    if (stored === undefined) return mounted ? 1 : 0;
    if (stored === 0 && mounted) return 1;
    if (stored > 0 && !mounted) return 0;
    return stored;
  }

  async #change(id: string, path: string | null, delta: number): Promise<number> {
    validateLayerId(id);
    const next = Math.max(0, this.#reconcile(await this.#read(id), path) + delta);
    await this.#write(id, next);
    return next;
  }

  /** The stored count; 0 when absent, undefined when the entry is not a count. */
  async #read(id: string): Promise<number | undefined> {
    const file = join(this.dir, id);
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return 0;
      return undefined; // a directory, or unreadable: the mount table decides
    }
    return parseCount(text);
  }

  async #write(id: string, count: number): Promise<void> {
    const file = join(this.dir, id);
    try {
      const st = await Deno.lstat(file).catch(() => undefined);
      if (st !== undefined && !st.isFile) {
        throw new Error("it is not a regular file: `strata check --repair` rebuilds it");
      }
      if (count === 0) {
        await Deno.remove(file).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        });
      } else {
        await writeFileAtomic(this.dir, id, encoder.encode(`${count}\n`), { durable: false });
      }
    } catch (e) {
      throw new LayerError(id, "write mount count", file, e);
    }
  }
}

/** A count file's number: decimal digits and `"\n"`; empty (torn by a crash) is 0; else undefined. */
function parseCount(text: string): number | undefined {
  const t = text.trim();
  if (t === "") return 0; // torn by a crash (the file is not fsynced): reconciliation fixes it
  if (!/^\d{1,15}$/.test(t)) return undefined;
  return Number(t);
}
