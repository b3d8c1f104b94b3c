/**
 * References a process takes on a layer for the length of one operation (the
 * naive diff, changes, size and apply mount layers through `get`/`put`). The
 * persistent mount count cannot tell such a reference from one `strata mount`
 * hands out on purpose, so a process killed between its `get` and its `put`
 * would leave the union mounted for good with a count every check believes.
 * Each transient reference is therefore also written down as a file
 * `R/refs/<id>/<pid>.<n>` that its process keeps `flock`ed: a record whose
 * lock can be taken belongs to a process that is gone, and `check --repair`
 * drops its reference.
 *
 * The record is made after the count went up and deleted before it goes down
 * (both under the layer's lock), so a record always stands for a reference
 * that is counted: dropping a dead one can never take away someone else's.
 *
 * @module
 */

import { join } from "node:path";
import { validateLayerId } from "./ids.ts";

/**
 * One record of a transient reference.
 *
 * @example
 * ```ts
 * import { TransientRefs } from "./transient_refs.ts";
 * const refs = new TransientRefs("/var/lib/strata");
 * for (const r of refs.dead()) console.log(r.id, r.path);
 * ```
 */
export interface RefRecord {
  /** The layer referenced. */
  id: string;
  /** The record file. */
  path: string;
}

interface Held {
  path: string;
  file: Deno.FsFile;
}

function isNotFound(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound;
}

/**
 * The records of one driver root (`R/refs`) and the ones this process holds.
 *
 * @example
 * ```ts
 * import { TransientRefs } from "./transient_refs.ts";
 * const refs = new TransientRefs(await Deno.makeTempDir());
 * await refs.add("layer");        // after the layer's count went up
 * console.log(refs.dead().length); // 0: this process holds its record
 * await refs.drop("layer");       // before the count goes down
 * ```
 */
export class TransientRefs {
  /** `R/refs`. */
  readonly dir: string;
  readonly #held = new Map<string, Held[]>();
  #seq = 0;

  /** `root` is the driver root; nothing is touched until a method runs. */
  constructor(root: string) {
    this.dir = join(root, "refs");
  }

  /** Record one reference of this process on `id` (its lock held, its count just raised). */
  async add(id: string): Promise<void> {
    validateLayerId(id);
    const dir = join(this.dir, id);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, `${Deno.pid}.${++this.#seq}`);
    const file = await Deno.open(path, { read: true, write: true, createNew: true, mode: 0o600 });
    try {
      if (!file.tryLockSync(true)) throw new Error(`${path} is locked by someone else`);
    } catch (e) {
      file.close();
      await Deno.remove(path).catch(() => {});
      throw new Error(`record a reference on ${id} in ${path}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    const list = this.#held.get(id) ?? [];
    list.push({ path, file });
    this.#held.set(id, list);
  }

  /**
   * Forget one reference of this process on `id` (its lock held, before its
   * count goes down). False when this process recorded none.
   */
  async drop(id: string): Promise<boolean> {
    const list = this.#held.get(id);
    const held = list?.pop();
    if (list?.length === 0) this.#held.delete(id);
    if (!held) return false;
    try {
      await Deno.remove(held.path).catch((e) => {
        if (!isNotFound(e)) throw e;
      });
    } finally {
      held.file.close();
    }
    await this.#removeDirIfEmpty(id);
    return true;
  }

  /** Records of processes that are gone (their lock is free), sorted by path. */
  dead(): RefRecord[] {
    const out: RefRecord[] = [];
    for (const id of names(this.dir)) {
      for (const name of names(join(this.dir, id))) {
        const path = join(this.dir, id, name);
        if (this.isDead(path)) out.push({ id, path });
      }
    }
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /** Whether the record `path` exists and no live process holds it. */
  isDead(path: string): boolean {
    let file: Deno.FsFile;
    try {
      if (!Deno.lstatSync(path).isFile) return false;
      file = Deno.openSync(path, { read: true });
    } catch {
      return false;
    }
    try {
      return file.tryLockSync(true);
    } finally {
      file.close();
    }
  }

  /** Delete a dead record (the caller holds the layer's lock and checked it is dead). */
  async removeRecord(id: string, path: string): Promise<void> {
    await Deno.remove(path).catch((e) => {
      if (!isNotFound(e)) throw e;
    });
    await this.#removeDirIfEmpty(id);
  }

  /** Delete every record of `id` (the layer is being removed). */
  async forget(id: string): Promise<void> {
    for (const held of this.#held.get(id) ?? []) held.file.close();
    this.#held.delete(id);
    await Deno.remove(join(this.dir, id), { recursive: true }).catch((e) => {
      if (!isNotFound(e)) throw e;
    });
  }

  async #removeDirIfEmpty(id: string): Promise<void> {
    try {
      await Deno.remove(join(this.dir, id));
    } catch {
      // not empty (another reference), or already gone
    }
  }
}

function names(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch (e) {
    if (isNotFound(e) || e instanceof Deno.errors.NotADirectory) return [];
    throw e;
  }
}
