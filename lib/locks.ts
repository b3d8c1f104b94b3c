/**
 * Locks: {@linkcode KeyedLock} (one async holder per key inside a process,
 * containers/storage's `pkg/locker`), {@linkcode Mutex} (one holder), and
 * {@linkcode LayerLocks}, which adds `flock(2)` on a file per layer so that
 * two processes working on the same root exclude each other too (containers/storage's
 * locks were per-process only).
 *
 * @module
 */

import { join } from "node:path";
import { compareBytewise, validateLayerId } from "./ids.ts";
import { lstatKind } from "./entry_type.ts";

/**
 * How often a lock is retried because its file was replaced while waiting
 * (each retry means another holder removed the layer and let go): bounded so
 * that no state of the lock directory can make a caller spin forever.
 */
export const MAX_LOCK_RETRIES = 100;

interface Entry {
  /** Resumes the next waiter, first come first served. */
  readonly queue: (() => void)[];
}

/**
 * Async mutual exclusion per key: one holder per key, waiters served in
 * arrival order, different keys independent. Entries vanish once nobody holds
 * or waits for the key. Not re-entrant: locking a key you hold deadlocks.
 *
 * @example
 * ```ts
 * import { KeyedLock } from "./locks.ts";
 * const locks = new KeyedLock();
 * const unlock = await locks.lock("layer-a");
 * try {
 *   // ... work on layer-a ...
 * } finally {
 *   unlock();
 * }
 * console.log(locks.size); // 0
 * ```
 */
export class KeyedLock {
  #entries = new Map<string, Entry>();

  /** Number of keys currently held or waited for. */
  get size(): number {
    return this.#entries.size;
  }

  /** How many callers wait for `key` (not counting the holder). */
  waiters(key: string): number {
    return this.#entries.get(key)?.queue.length ?? 0;
  }

  /**
   * Wait until `key` is free, take it, and resolve to its release function.
   * Releasing twice throws (containers/storage's `no such lock`): a second release
   * would hand out a lock someone else holds.
   */
  lock(key: string): Promise<() => void> {
    const held = this.#entries.get(key);
    if (held === undefined) {
      const entry: Entry = { queue: [] };
      this.#entries.set(key, entry);
      return Promise.resolve(this.#releaser(key, entry));
    }
    return new Promise((resolve) => held.queue.push(() => resolve(this.#releaser(key, held))));
  }

  /** Run `fn` holding `key`. */
  async run<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    const unlock = await this.lock(key);
    try {
      return await fn();
    } finally {
      unlock();
    }
  }

  #releaser(key: string, entry: Entry): () => void {
    let released = false;
    return () => {
      if (released) throw new Error(`no such lock: ${JSON.stringify(key)} was already released`);
      released = true;
      const next = entry.queue.shift();
      if (next) next();
      else this.#entries.delete(key);
    };
  }
}

/**
 * One async holder at a time, FIFO.
 *
 * @example
 * ```ts
 * import { Mutex } from "./locks.ts";
 * const m = new Mutex();
 * const n = await m.run(() => 42);
 * console.log(n); // 42
 * ```
 */
export class Mutex {
  #lock = new KeyedLock();

  /** Run `fn` alone; its result or error is passed through. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.#lock.run("", fn);
  }
}

function sameFile(a: Deno.FileInfo, b: Deno.FileInfo): boolean {
  return a.ino === b.ino && a.dev === b.dev;
}

/**
 * Per-layer exclusion within a process and across processes: a
 * {@linkcode KeyedLock} first (so one task per process waits on the file),
 * then an exclusive `flock` on `lockDir/<id>`. The global lock flocks
 * `lockDir` itself, so it needs no reserved file name.
 *
 * Lock order: take a layer lock before the global lock, never the reverse;
 * take several layer locks only through {@linkcode LayerLocks.withLayers}.
 *
 * @example
 * ```ts
 * import { LayerLocks } from "./locks.ts";
 * const locks = new LayerLocks(await Deno.makeTempDir());
 * await locks.withLayer("abc", async () => {
 *   await locks.withGlobal(async () => {
 *     // mount or unmount here
 *   });
 * });
 * ```
 */
export class LayerLocks {
  /** Directory holding one lock file per layer id. */
  readonly lockDir: string;
  #keyed = new KeyedLock();
  #global = new Mutex();
  #ready: Promise<void> | undefined;
  readonly #keep: ((id: string) => boolean) | undefined;

  /**
   * `lockDir` (e.g. `R/locks`) is created, 0700, on first use. With `keep`,
   * a layer's lock file is deleted when a holder is done and `keep(id)` says
   * the layer is not there (a create that failed, a get of an unknown id):
   * lock files never outlive their layers.
   */
  constructor(lockDir: string, opts: { keep?: (id: string) => boolean } = {}) {
    this.lockDir = lockDir;
    this.#keep = opts.keep;
  }

  /** Run `fn` holding layer `id`'s lock (in-process and cross-process). */
  async withLayer<T>(id: string, fn: () => Promise<T>): Promise<T> {
    validateLayerId(id);
    return await this.#keyed.run(id, async () => {
      const path = join(this.lockDir, id);
      const file = await this.#flock(path);
      try {
        return await fn();
      } finally {
        try {
          // Still holding it: waiters notice the unlink and lock a new file.
          if (this.#keep !== undefined && !this.#keep(id)) Deno.removeSync(path);
        } catch {
          // gone already, or the layer's state cannot be read: keep the file
        }
        file.close();
      }
    });
  }

  /**
   * Whether another holder (any process, or another open of this file)
   * holds layer `id`'s lock now. Creates nothing: a missing lock file is
   * "not held". Does not wait.
   *
   * @example
   * ```ts
   * import { LayerLocks } from "./locks.ts";
   * const locks = new LayerLocks(await Deno.makeTempDir());
   * console.log(locks.isHeld("abc")); // false
   * ```
   */
  isHeld(id: string): boolean {
    validateLayerId(id);
    const path = join(this.lockDir, id);
    let f: Deno.FsFile;
    try {
      if (lstatKind(path, "file") === undefined) return false;
      f = Deno.openSync(path, { read: true });
    } catch {
      return false;
    }
    try {
      if (!f.tryLockSync(true)) return true;
      f.unlockSync();
      return false;
    } finally {
      f.close();
    }
  }

  /**
   * Run `fn` holding the locks of all `ids` (duplicates once), taken in
   * byte-wise order of the ids so that two callers wanting overlapping sets
   * can never wait for each other in a cycle. Create holds its layer's and
   * its parent's lock this way, so a removal of the parent cannot slip
   * between create's check of the parent and the writing of its chain.
   */
  async withLayers<T>(ids: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(ids)].sort(compareBytewise);
    sorted.forEach(validateLayerId);
    const nest = (i: number): Promise<T> =>
      i === sorted.length ? fn() : this.withLayer(sorted[i], () => nest(i + 1));
    return await nest(0);
  }

  /** Run `fn` holding the root-wide lock (in-process and cross-process). */
  async withGlobal<T>(fn: () => Promise<T>): Promise<T> {
    return await this.#global.run(async () => {
      await this.#ensureDir();
      const dir = await Deno.open(this.lockDir, { read: true });
      try {
        await dir.lock(true);
        return await fn();
      } finally {
        dir.close();
      }
    });
  }

  /**
   * Delete layer `id`'s lock file once the layer is gone. Call it only inside
   * `withLayer(id, ...)`: waiters on the old file notice it was unlinked and
   * lock the new one.
   */
  async discard(id: string): Promise<void> {
    validateLayerId(id);
    await Deno.remove(join(this.lockDir, id)).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }

  #ensureDir(): Promise<void> {
    this.#ready ??= Deno.mkdir(this.lockDir, { recursive: true, mode: 0o700 }).catch((e) => {
      this.#ready = undefined; // let the next call try again
      throw new Error(`create lock directory ${this.lockDir}: ${e.message}`, { cause: e });
    });
    return this.#ready;
  }

  /**
   * Open and flock `path`; retry when the file was replaced while we waited
   * (a removal discards it), at most {@linkcode MAX_LOCK_RETRIES} times. Never
   * through a link: anything but a regular file at `path` is an error.
   */
  async #flock(path: string): Promise<Deno.FsFile> {
    await this.#ensureDir();
    for (let attempt = 0;; attempt++) {
      let f: Deno.FsFile;
      try {
        // Checked first so a link is never opened (open would create its target).
        lstatKind(path, "file");
        f = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
      } catch (e) {
        throw new Error(`lock ${path}: ${(e as Error).message}`, { cause: e });
      }
      try {
        await f.lock(true);
        const held = await f.stat();
        const now = lstatKind(path, "file");
        if (now && sameFile(held, now)) return f;
      } catch (e) {
        f.close();
        throw new Error(`lock ${path}: ${(e as Error).message}`, { cause: e });
      }
      f.close();
      if (attempt >= MAX_LOCK_RETRIES) {
        throw new Error(
          `lock ${path}: the lock file was replaced ${attempt + 1} times while waiting; giving up`,
        );
      }
    }
  }
}
