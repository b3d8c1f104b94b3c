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
   * table as a change would be (nothing is written).
   */
  async get(id: string, path: string | null = null): Promise<number> {
    validateLayerId(id);
    return this.#reconcile(await this.#read(id), path);
  }

  /** Forget `id`'s count (e.g. when the layer is removed). */
  async reset(id: string): Promise<void> {
    await this.#write(id, 0);
  }

  #reconcile(stored: number, path: string | null): number {
    if (path === null) return stored;
    const mounted = this.#isMounted(path);
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

  async #read(id: string): Promise<number> {
    const file = join(this.dir, id);
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return 0;
      throw new LayerError(id, "read mount count", file, e);
    }
    const t = text.trim();
    if (t === "") return 0; // torn by a crash (the file is not fsynced): reconciliation fixes it
    if (!/^\d+$/.test(t)) {
      throw new LayerError(
        id,
        "read mount count",
        file,
        new Error(`not a count: ${JSON.stringify(text)}`),
      );
    }
    return Number(t);
  }

  async #write(id: string, count: number): Promise<void> {
    const file = join(this.dir, id);
    try {
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
