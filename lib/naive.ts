/**
 * The naive diff fallback (containers/storage's NaiveDiffDriver): when
 * a layer is compared with something other than its direct parent, mount both
 * through the driver's own `get`/`put`, compare the two trees, and export or
 * apply the difference.
 *
 * @module
 */

import type { Libc } from "../ffi/libc.ts";
import type { ApplyDiffOpts, Change, IDMap, MountOpts, PutOpts } from "./driver.ts";
import { changesDirs } from "./archive/changes.ts";
import { exportChanges } from "./archive/export.ts";
import { changesSize } from "./archive/size.ts";
import { tarDirectory } from "./archive/tar_dir.ts";
import { applyLayer } from "./archive/apply_layer.ts";

/**
 * What the naive fallback needs from a driver.
 *
 * @example
 * ```ts
 * import { type GetPut, NaiveDiff, openDriver } from "../mod.ts";
 * const driver: GetPut = await openDriver("auto", "/var/lib/strata");
 * console.log(await new NaiveDiff(driver).changes("app", "base"));
 * ```
 */
export interface GetPut {
  /** Mount layer `id` and return its root. */
  get(id: string, opts?: MountOpts): Promise<string>;
  /** Release a reference taken by `get`. */
  put(id: string, opts?: PutOpts): Promise<void>;
}

/**
 * Options of {@linkcode NaiveDiff}.
 *
 * @example
 * ```ts
 * import { NaiveDiff, type NaiveDiffOptions, openDriver } from "../mod.ts";
 * const opts: NaiveDiffOptions = { uidMaps: [], gidMaps: [], onWarning: console.warn };
 * const naive = new NaiveDiff(await openDriver("auto", "/var/lib/strata"), opts);
 * console.log(await naive.diffSize("app", "base"));
 * ```
 */
export interface NaiveDiffOptions {
  /** uid map applied to exported and applied tars. */
  uidMaps?: IDMap[];
  /** gid map applied to exported and applied tars. */
  gidMaps?: IDMap[];
  /** System calls (default: the real libc). */
  libc?: Libc;
  /** Told about things skipped without failing (ignored xattrs). Default: ignored. */
  onWarning?: (message: string) => void;
}

/** Wait until the next whole second after `startMs` (tar mtimes have whole seconds). */
async function sleepToNextSecond(startMs: number): Promise<void> {
  const next = (Math.floor(startMs / 1000) + 1) * 1000;
  const wait = next - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

/**
 * Wrap `inner` so that `release` runs exactly once: when the stream ends, errors
 * or is cancelled by the reader.
 */
function releasing(
  inner: ReadableStream<Uint8Array>,
  release: () => Promise<void>,
): ReadableStream<Uint8Array> {
  let done = false;
  const once = async () => {
    if (done) return;
    done = true;
    await release();
  };
  const reader = inner.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done: end } = await reader.read();
        if (end) {
          await once();
          controller.close();
        } else controller.enqueue(value);
      } catch (e) {
        await once().catch(() => {});
        controller.error(e);
      }
    },
    async cancel(reason) {
      try {
        await reader.cancel(reason);
      } finally {
        await once();
      }
    },
  }, { highWaterMark: 0 });
}

/**
 * Diff, changes, apply and size computed by comparing mounted trees.
 *
 * @example
 * ```ts
 * import { NaiveDiff } from "./naive.ts";
 * import { openDriver } from "../mod.ts";
 * const naive = new NaiveDiff(await openDriver("auto", "/var/lib/strata"));
 * const changes = await naive.changes("child", "");
 * console.log(changes.length);
 * ```
 */
export class NaiveDiff {
  #driver: GetPut;
  #opts: NaiveDiffOptions;

  /** Compare layers of `driver`; the id maps apply to exported and applied tars. */
  constructor(driver: GetPut, opts: NaiveDiffOptions = {}) {
    this.#driver = driver;
    this.#opts = opts;
  }

  /**
   * A tar of the changes of `id` against `parent` (everything when `parent` is
   * `""`). `id` stays mounted until the stream is read to its end or cancelled;
   * then it is released and the call waits for the next whole second after it
   * started, so a comparison right after cannot miss a change made in the same
   * second.
   */
  async diff(id: string, parent: string, opts?: MountOpts): Promise<ReadableStream<Uint8Array>> {
    const start = Date.now();
    const d = this.#driver;
    const layerFs = await d.get(id, opts);
    const release = async () => {
      await d.put(id);
      await sleepToNextSecond(start);
    };
    try {
      if (parent === "") {
        // The seed applies no exclude patterns and no id maps here.
        return releasing(tarDirectory(layerFs, { libc: this.#opts.libc }), release);
      }
      const parentFs = await d.get(parent, opts);
      let changes: Change[];
      try {
        changes = changesDirs(layerFs, parentFs, { libc: this.#opts.libc });
      } finally {
        await d.put(parent);
      }
      const stream = exportChanges(layerFs, changes, {
        uidMaps: this.#opts.uidMaps,
        gidMaps: this.#opts.gidMaps,
        libc: this.#opts.libc,
      });
      return releasing(stream, release);
    } catch (e) {
      await d.put(id);
      throw e;
    }
  }

  /** The changes of `id` against `parent` (everything is an add when `parent` is `""`). */
  async changes(id: string, parent: string, opts?: MountOpts): Promise<Change[]> {
    const d = this.#driver;
    const layerFs = await d.get(id, opts);
    try {
      if (parent === "") return changesDirs(layerFs, "", { libc: this.#opts.libc });
      const parentFs = await d.get(parent, opts);
      try {
        return changesDirs(layerFs, parentFs, { libc: this.#opts.libc });
      } finally {
        await d.put(parent);
      }
    } finally {
      await d.put(id);
    }
  }

  /**
   * Apply a layer tar through the union mount of `id` (whiteouts delete, so the
   * union records them in the layer's own format). Returns the sum of the tar's
   * header sizes, as containers/storage does on this path.
   */
  async applyDiff(
    id: string,
    _parent: string,
    tar: ReadableStream<Uint8Array>,
    opts?: ApplyDiffOpts,
  ): Promise<number> {
    const d = this.#driver;
    const layerFs = await d.get(id, opts);
    try {
      return await applyLayer(tar, layerFs, {
        uidMaps: this.#opts.uidMaps,
        gidMaps: this.#opts.gidMaps,
        libc: this.#opts.libc,
        onProgress: opts?.onProgress,
        signal: opts?.signal,
        onWarning: this.#opts.onWarning,
      });
    } finally {
      await d.put(id);
    }
  }

  /** Bytes of the added and modified files of `id` against `parent`. */
  async diffSize(id: string, parent: string, opts?: MountOpts): Promise<number> {
    const changes = await this.changes(id, parent, opts);
    const d = this.#driver;
    const layerFs = await d.get(id, opts);
    try {
      return changesSize(layerFs, changes, this.#opts.libc);
    } finally {
      await d.put(id);
    }
  }
}
