/**
 * Where a driver root keeps the tar-split record of each applied layer:
 * `R/tar-split/<id>.tar-split.gz` (the containers/storage layer store's
 * `<id>.tar-split.gz`, gzip'd JSON lines; see `archive/tar_split.ts`). A
 * record is written next to the extraction by `applyDiff` (to a temp file,
 * fsync'd, renamed into place) and dropped whenever the layer may change
 * without it: `get` of the layer (writable), a naive or second apply,
 * `remove`. Callers hold the layer's lock.
 *
 * @module
 */

import { join } from "node:path";
import { syncDir } from "./atomic_write.ts";
import { LayerError } from "./errors.ts";
import { TEMP_SUFFIX, validateLayerId } from "./ids.ts";
import { TarSplitRecorder } from "./archive/tar_split.ts";

/**
 * The directory under a driver root that holds the records.
 *
 * @example
 * ```ts
 * import { TAR_SPLIT_DIR, TAR_SPLIT_SUFFIX } from "../mod.ts";
 * console.log(`/var/lib/strata/${TAR_SPLIT_DIR}/base${TAR_SPLIT_SUFFIX}`);
 * ```
 */
export const TAR_SPLIT_DIR = "tar-split";
/**
 * The name ending of a record: `<id>.tar-split.gz`.
 *
 * @example
 * ```ts
 * import { TAR_SPLIT_SUFFIX } from "../mod.ts";
 * const idOf = (name: string) => name.endsWith(TAR_SPLIT_SUFFIX) ? name.slice(0, -TAR_SPLIT_SUFFIX.length) : null;
 * console.log(idOf("base.tar-split.gz")); // base
 * ```
 */
export const TAR_SPLIT_SUFFIX = ".tar-split.gz";

function isNotFound(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound;
}

/**
 * A record being written while a tar is extracted: pass `recorder` to the
 * extraction (`UntarOptions.tarSplit`), then {@linkcode PendingTarSplit.commit}
 * after it succeeded or {@linkcode PendingTarSplit.abort} otherwise.
 *
 * @example
 * ```ts
 * import { type PendingTarSplit, TarSplitStore, untar } from "../mod.ts";
 * const store = new TarSplitStore(await Deno.makeTempDir());
 * const pending: PendingTarSplit = await store.begin("base");
 * try {
 *   await untar((await Deno.open("layer.tar")).readable, await Deno.makeTempDir(), {
 *     tarSplit: pending.recorder,
 *   });
 *   await pending.commit();
 * } catch (e) {
 *   await pending.abort();
 *   throw e;
 * }
 * ```
 */
export interface PendingTarSplit {
  /** Feeds the record; give it to the extraction. */
  readonly recorder: TarSplitRecorder;
  /**
   * Finish the gzip stream, fsync, and rename the record into place. When
   * the recorder found the tar not describable, drops it instead and
   * returns false.
   */
  commit(): Promise<boolean>;
  /** Drop the temp file. */
  abort(): Promise<void>;
}

/**
 * The records of one driver root.
 *
 * @example
 * ```ts
 * import { TarSplitStore } from "./tar_split_store.ts";
 * const store = new TarSplitStore(await Deno.makeTempDir());
 * console.log(store.has("base")); // false
 * ```
 */
export class TarSplitStore {
  /** `R/tar-split`. */
  readonly dir: string;

  /** `root` is the driver root; nothing is touched until a method runs. */
  constructor(root: string) {
    this.dir = join(root, TAR_SPLIT_DIR);
  }

  /** Path of the record of `id` (validated id). */
  pathOf(id: string): string {
    validateLayerId(id);
    return join(this.dir, id + TAR_SPLIT_SUFFIX);
  }

  /**
   * Where the record of `id` is written until its apply succeeds (one apply
   * of a layer at a time: the layer lock). A crash leaves it beside an
   * incomplete layer, whose removal deletes it.
   */
  tempPathOf(id: string): string {
    return this.pathOf(id) + TEMP_SUFFIX;
  }

  /** Whether `id` has a record. */
  has(id: string): boolean {
    try {
      return Deno.lstatSync(this.pathOf(id)).isFile;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw new LayerError(id, "lstat tar-split record", this.pathOf(id), e);
    }
  }

  /** The gzip'd record of `id`, or null when it has none. */
  async open(id: string): Promise<ReadableStream<Uint8Array> | null> {
    const path = this.pathOf(id);
    try {
      return (await Deno.open(path, { read: true })).readable;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw new LayerError(id, "open tar-split record", path, e);
    }
  }

  /**
   * Delete the record of `id` (and a temp one left by a crash), durably;
   * none is not an error. Returns whether there was a record.
   */
  async remove(id: string): Promise<boolean> {
    let removed = false;
    for (const path of [this.pathOf(id), this.tempPathOf(id)]) {
      try {
        await Deno.remove(path);
        removed ||= path === this.pathOf(id);
      } catch (e) {
        if (isNotFound(e)) continue;
        throw new LayerError(id, "remove tar-split record", path, e);
      }
      await syncDir(this.dir);
    }
    return removed;
  }

  /**
   * Start writing a new record for `id` (into a temp file until committed).
   * `whiteoutsConverted`: the extraction converts `.wh.` entries (see
   * {@linkcode TarSplitRecorder}).
   */
  async begin(id: string, opts: { whiteoutsConverted?: boolean } = {}): Promise<PendingTarSplit> {
    const target = this.pathOf(id);
    try {
      await Deno.mkdir(this.dir, { mode: 0o700, recursive: true });
    } catch (e) {
      throw new LayerError(id, "make tar-split directory", this.dir, e);
    }
    const dir = this.dir;
    const tmp = this.tempPathOf(id);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    } catch (e) {
      throw new LayerError(id, "create tar-split record", tmp, e);
    }
    const gzip = new CompressionStream("gzip");
    const writer = gzip.writable.getWriter();
    let writeError: unknown = undefined;
    const pump = (async () => {
      for await (const chunk of gzip.readable) {
        let at = 0;
        while (at < chunk.length) at += await file.write(chunk.subarray(at));
      }
    })().catch((e) => {
      writeError ??= e;
    });
    const recorder = new TarSplitRecorder((bytes) => {
      writer.write(bytes as Uint8Array<ArrayBuffer>).catch((e) => {
        writeError ??= e;
      });
    }, opts);
    let settled = false;
    const drop = async () => {
      settled = true;
      await writer.abort().catch(() => {});
      await pump;
      try {
        file.close();
      } catch { /* closed already */ }
      await Deno.remove(tmp).catch(() => {});
    };
    return {
      recorder,
      async commit() {
        if (settled) throw new Error(`tar-split record of ${id}: already settled`);
        if (!recorder.usable) {
          await drop();
          return false;
        }
        settled = true;
        try {
          await writer.close();
          await pump;
          if (writeError !== undefined) throw writeError;
          await file.sync();
          file.close();
          await Deno.rename(tmp, target);
        } catch (e) {
          try {
            file.close();
          } catch { /* closed already */ }
          await Deno.remove(tmp).catch(() => {});
          throw new LayerError(id, "write tar-split record", target, e);
        }
        await syncDir(dir);
        return true;
      },
      async abort() {
        if (!settled) await drop();
      },
    };
  }

  /**
   * What the directory holds: `records` (layer ids with a record), `temps`
   * (layer ids with a record being written, or left by a crash) and `other`
   * (names that are neither).
   */
  list(): { records: string[]; temps: string[]; other: string[] } {
    const records: string[] = [];
    const temps: string[] = [];
    const other: string[] = [];
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync(this.dir)].map((e) => e.name).sort();
    } catch (e) {
      if (!isNotFound(e)) throw new Error(`list ${this.dir}: ${(e as Error).message}`);
    }
    for (const name of names) {
      if (name.endsWith(TAR_SPLIT_SUFFIX)) {
        records.push(name.slice(0, -TAR_SPLIT_SUFFIX.length));
      } else if (name.endsWith(TAR_SPLIT_SUFFIX + TEMP_SUFFIX)) {
        temps.push(name.slice(0, -(TAR_SPLIT_SUFFIX + TEMP_SUFFIX).length));
      } else other.push(name);
    }
    return { records, temps, other };
  }
}
