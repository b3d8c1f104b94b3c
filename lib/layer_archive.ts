/**
 * The layer-tar half of the union drivers: diff, applyDiff,
 * diffSize, changes and diffGetter, natively on a layer's own diff directory
 * when the parent asked for is the layer's direct parent, and through the
 * naive fallback otherwise.
 *
 * @module
 */

import { join } from "node:path";
import { AT, O } from "../ffi/libc.ts";
import type {
  ApplyDiffOpts,
  Change,
  DiffOpts,
  DiffSource,
  FileGetter,
  LayerTar,
  MountOpts,
  OperationOpts,
} from "./driver.ts";
import { abortableStream } from "./abort.ts";
import {
  LayerError,
  LayerIncompleteError,
  LayerNotFoundError,
  TarSplitUnavailableError,
} from "./errors.ts";
import { APPLY_EMPTY, APPLY_POPULATED, canReapply } from "./incomplete.ts";
import type { LayerArchive, UnionDriver } from "./union.ts";
import { type GetPut, NaiveDiff } from "./naive.ts";
import { assembleTar, dirFileGetter } from "./archive/tar_split.ts";
import type { PendingTarSplit } from "./tar_split_store.ts";
import { tarDirectory } from "./archive/tar_dir.ts";
import { untar } from "./archive/untar.ts";
import { newExtractStats } from "./archive/extract.ts";
import { applyLayer } from "./archive/apply_layer.ts";
import { layerChanges } from "./archive/changes.ts";
import { directorySize } from "./archive/size.ts";
import { AUFS_DIFF_EXCLUDES } from "./archive/whiteouts.ts";
import { ensureRemoveAll } from "./remove.ts";

/**
 * containers/storage's `isParent`: true when `parent` is the layer's recorded direct
 * parent, or when the layer has no parents at all (a base layer matches any
 * `parent`, as in containers/storage). Read errors count as "no parents".
 */
export async function isDirectParent(
  driver: UnionDriver,
  id: string,
  parent: string,
): Promise<boolean> {
  let parents: string[] = [];
  try {
    parents = await driver.parentChain(id);
  } catch {
    parents = [];
  }
  if (parents.length === 0) return true;
  return parent !== "" && parents[0] === parent;
}

/** `id` must be a complete layer: missing is {@linkcode LayerNotFoundError}, incomplete {@linkcode LayerIncompleteError}. */
async function mustExist(driver: UnionDriver, id: string, op: string): Promise<void> {
  if (await driver.store.exists(id)) return;
  await driver.refuseIncomplete(id, op);
  throw new LayerNotFoundError(id);
}

/**
 * The diff directories of `id` and (with `ancestors`) of its chain must be
 * real directories: a missing one is damage to report, not an empty layer.
 */
async function mustHaveDirs(
  driver: UnionDriver,
  id: string,
  op: string,
  ancestors = false,
): Promise<void> {
  driver.requireLayerDirs(id, op);
  if (!ancestors) return;
  for (const p of await driver.parentChain(id)) {
    try {
      driver.requireLayerDirs(p, `${op} (ancestor of ${id})`);
    } catch (e) {
      throw new LayerError(id, op, driver.diffDir(p), e);
    }
  }
}

/** Like `mustExist`, but a layer still marked incomplete (being filled) counts. */
async function mustBeCreated(driver: UnionDriver, id: string): Promise<void> {
  try {
    await Deno.lstat(driver.store.fileOf(id));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new LayerNotFoundError(id);
    throw e;
  }
}

/**
 * Before an apply into `id` (its lock held): refuse a layer others build on
 * (their view of it would change underneath them) and an incomplete one that
 * cannot be re-applied; throw away the partial content of one that can (it
 * was empty before). Returns whether the layer's own directory is empty.
 */
async function prepareApply(driver: UnionDriver, id: string): Promise<boolean> {
  const reason = await driver.store.marker(id);
  if (reason !== undefined && !canReapply(reason)) {
    throw new LayerIncompleteError(id, "apply", reason);
  }
  if (await driver.store.hasChildren(id)) {
    const children = await driver.store.children(id);
    throw new LayerError(
      id,
      "apply",
      "",
      new Error(
        `refusing: ${children.length} layer(s) build on it (${children.slice(0, 5).join(", ")}); ` +
          "applying into it would change them underneath",
      ),
    );
  }
  driver.requireLayerDirs(id, "apply");
  const dir = driver.diffDir(id);
  if (reason === APPLY_EMPTY) {
    // Start over from the empty layer the interrupted apply began with.
    await driver.releaseAllLocked(id);
    for (const e of [...Deno.readDirSync(dir)]) {
      await ensureRemoveAll(driver.libc, join(dir, e.name), driver.procRoot);
    }
  }
  return isEmptyDir(dir);
}

/**
 * The naive fallback. Reading paths (`readOnly`) mount with `keepTarSplit`:
 * they do not change the layer, so its tar-split record stays valid.
 */
function naive(driver: UnionDriver, readOnly = false): NaiveDiff {
  // Transient references: a kill between get and put leaves a record that
  // check --repair finds, instead of a mount nobody can tell from a held one.
  const getPut: GetPut = {
    get: (id, opts) =>
      driver.get(id, { ...opts, keepTarSplit: readOnly || opts?.keepTarSplit, transient: true }),
    put: (id) => driver.put(id, { transient: true }),
  };
  return new NaiveDiff(getPut, {
    uidMaps: driver.uidMaps,
    gidMaps: driver.gidMaps,
    libc: driver.libc,
  });
}

/** syncfs(2) on the filesystem holding `dir` (never through a link). */
function syncDir(driver: UnionDriver, dir: string): void {
  const fd = driver.libc.openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
  try {
    driver.libc.syncfs(fd);
  } finally {
    driver.libc.close(fd);
  }
}

/**
 * Extract `tar` into the layer's own `dir` (its lock held, its mark set).
 * Into an empty layer (the usual case) the size is counted while extracting
 * and the tar's tar-split recorded on the way; otherwise, or when the tar
 * replaced something, containers/storage's walk decides and no record is kept.
 */
async function applyNative(
  driver: UnionDriver,
  dir: string,
  tar: ReadableStream<Uint8Array>,
  wasEmpty: boolean,
  id: string,
  opts?: ApplyDiffOpts,
): Promise<number> {
  const stats = newExtractStats();
  const pending: PendingTarSplit | null = wasEmpty
    ? await driver.tarSplit.begin(id, { whiteoutsConverted: driver.whiteoutFormat !== "aufs" })
    : null;
  try {
    const common = {
      uidMaps: driver.uidMaps,
      gidMaps: driver.gidMaps,
      libc: driver.libc,
      stats,
      tarSplit: pending?.recorder,
      onProgress: opts?.onProgress,
      signal: opts?.signal,
      onWarning: driver.onWarning,
    };
    if (driver.whiteoutFormat === "aufs") {
      // aufs keeps whiteouts on disk exactly as the tar has them.
      await untar(tar, dir, common);
    } else {
      await applyLayer(tar, dir, { ...common, whiteoutFormat: driver.whiteoutFormat });
    }
    syncDir(driver, dir);
    if (pending) {
      // A tar that replaced its own entries is not reproducible from the files.
      if (stats.replaced) await pending.abort();
      else await pending.commit();
    }
  } catch (e) {
    await pending?.abort();
    throw e;
  }
  return wasEmpty && !stats.replaced ? stats.createdSize : directorySize(dir, driver.libc);
}

function isEmptyDir(dir: string): boolean {
  for (const _ of Deno.readDirSync(dir)) return false;
  return true;
}

/**
 * `stream` marked with how it was made (see `LayerTar`); a stream already
 * marked keeps its mark.
 *
 * @example
 * ```ts
 * import { withSource } from "./layer_archive.ts";
 * const tar = withSource(new Blob([new Uint8Array(1024)]).stream(), "rebuilt");
 * console.log(tar.source); // rebuilt
 * ```
 */
export function withSource(stream: ReadableStream<Uint8Array>, source: DiffSource): LayerTar {
  if (typeof (stream as Partial<LayerTar>).source === "string") return stream as LayerTar;
  Object.defineProperty(stream, "source", { value: source, enumerable: true });
  return stream as LayerTar;
}

/** The archive methods without their AbortSignal handling (see `layerArchive`). */
const plainArchive: LayerArchive = {
  async diff(driver, id, parent, opts?: DiffOpts) {
    await mustExist(driver, id, "diff");
    const want = opts?.source ?? "auto";
    const direct = await isDirectParent(driver, id, parent);
    if (direct) await mustHaveDirs(driver, id, "diff");
    if (want !== "rebuilt") {
      const record = direct ? await driver.tarSplit.open(id) : null;
      if (record !== null) {
        const path = driver.tarSplit.pathOf(id);
        let getter;
        try {
          // The driver's own getter (confined to the layer; a DirFileGetter reads fast).
          getter = await driver.diffGetter(id);
        } catch (e) {
          await record.cancel();
          throw e;
        }
        return withSource(assembleTar(record, getter, { source: path }), "original");
      }
      if (want === "original") {
        throw new TarSplitUnavailableError(
          id,
          driver.tarSplit.pathOf(id),
          direct
            ? "no tar-split record (the layer was not filled by applyDiff, or was held writable or re-applied since)"
            : `${
              JSON.stringify(parent)
            } is not its direct parent; the record describes the layer's own tar only`,
        );
      }
    }
    if (!direct) return naive(driver, true).diff(id, parent, opts);
    return tarDirectory(driver.diffDir(id), {
      excludePatterns: driver.whiteoutFormat === "aufs" ? [...AUFS_DIFF_EXCLUDES] : [],
      uidMaps: driver.uidMaps,
      gidMaps: driver.gidMaps,
      whiteoutFormat: driver.whiteoutFormat,
      libc: driver.libc,
    });
  },

  async applyDiff(driver, id, parent, tar, opts?: ApplyDiffOpts) {
    await mustBeCreated(driver, id);
    const direct = await isDirectParent(driver, id, parent);
    return await driver.withLayerLock(id, async () => {
      const dir = driver.diffDir(id);
      const wasEmpty = await prepareApply(driver, id);
      // Marked before the first change, cleared after the last one is durable:
      // an error or a kill in between leaves the mark, saying what was cut short.
      await driver.store.markIncomplete(id, wasEmpty ? APPLY_EMPTY : APPLY_POPULATED);
      // The layer changes: an older record no longer describes it.
      await driver.tarSplit.remove(id);
      let size: number;
      if (!direct) {
        // The naive path writes through the layer's union, mounted for the
        // apply alone; the lock is held, so the locked get/put are used.
        const locked: GetPut = {
          get: (i, o) => driver.getLocked(i, { ...o, transient: true }),
          put: (i) => driver.putLocked(i, { transient: true }),
        };
        size = await new NaiveDiff(locked, {
          uidMaps: driver.uidMaps,
          gidMaps: driver.gidMaps,
          libc: driver.libc,
          onWarning: driver.onWarning,
        }).applyDiff(id, parent, tar, opts);
        syncDir(driver, dir);
      } else {
        size = await applyNative(driver, dir, tar, wasEmpty, id, opts);
      }
      await driver.store.clearIncomplete(id);
      return size;
    });
  },

  async diffSize(driver, id, parent, opts?: MountOpts) {
    await mustExist(driver, id, "diff size");
    if (!(await isDirectParent(driver, id, parent))) {
      return naive(driver, true).diffSize(id, parent, opts);
    }
    await mustHaveDirs(driver, id, "diff size");
    return directorySize(driver.diffDir(id), driver.libc);
  },

  async changes(driver, id, parent, opts?: MountOpts): Promise<Change[]> {
    await mustExist(driver, id, "changes");
    if (!(await isDirectParent(driver, id, parent))) {
      return naive(driver, true).changes(id, parent, opts);
    }
    await mustHaveDirs(driver, id, "changes", true);
    const chain = await driver.parentChain(id);
    return layerChanges(chain.map((p) => driver.diffDir(p)), driver.diffDir(id), {
      whiteoutFormat: driver.whiteoutFormat,
      libc: driver.libc,
    });
  },

  async diffGetter(driver, id): Promise<FileGetter> {
    await mustExist(driver, id, "diff getter");
    await mustHaveDirs(driver, id, "diff getter");
    // Resolved by the kernel inside the layer: `..` and absolute links stay in it.
    return dirFileGetter(driver.diffDir(id), driver.libc);
  },
};

/**
 * The default {@linkcode LayerArchive}: containers/storage's semantics with
 * the backend's whiteout format. Each long operation honours `opts.signal`:
 * an already aborted signal rejects before anything is touched; `applyDiff`
 * stops extracting at once (the layer keeps its incomplete mark); a `diff`
 * stream errors with the signal's reason.
 *
 * @example
 * ```ts
 * import { layerArchive } from "./layer_archive.ts";
 * console.log(typeof layerArchive.diff); // function
 * ```
 */
export const layerArchive: LayerArchive = {
  ...plainArchive,

  async diff(driver, id, parent, opts?: DiffOpts) {
    const signal = opts?.signal;
    signal?.throwIfAborted();
    const tar = await plainArchive.diff(driver, id, parent, opts);
    if (!signal) return tar;
    if (signal.aborted) {
      await tar.cancel(signal.reason).catch(() => {});
      throw signal.reason;
    }
    const source = (tar as Partial<LayerTar>).source;
    const wrapped = abortableStream(tar, signal);
    return source === undefined ? wrapped : withSource(wrapped, source);
  },

  async applyDiff(driver, id, parent, tar, opts?: ApplyDiffOpts) {
    if (opts?.signal?.aborted) {
      await tar.cancel(opts.signal.reason).catch(() => {});
      throw opts.signal.reason;
    }
    return await plainArchive.applyDiff(driver, id, parent, tar, opts);
  },

  async diffSize(driver, id, parent, opts?: OperationOpts) {
    opts?.signal?.throwIfAborted();
    return await plainArchive.diffSize(driver, id, parent, opts);
  },

  async changes(driver, id, parent, opts?: OperationOpts): Promise<Change[]> {
    opts?.signal?.throwIfAborted();
    const changes = await plainArchive.changes(driver, id, parent, opts);
    // The walk itself is synchronous: an abort during it is seen when it returns.
    opts?.signal?.throwIfAborted();
    return changes;
  },
};
