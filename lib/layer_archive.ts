/**
 * The layer-tar half of the union drivers (seed §3.10–§3.16): diff, applyDiff,
 * diffSize, changes and diffGetter, natively on a layer's own diff directory
 * when the parent asked for is the layer's direct parent, and through the
 * naive fallback otherwise.
 *
 * @module
 */

import { AT, O } from "../ffi/libc.ts";
import type {
  ApplyDiffOpts,
  Change,
  DiffOpts,
  DiffSource,
  FileGetter,
  LayerTar,
  MountOpts,
} from "./driver.ts";
import { LayerError, LayerNotFoundError, TarSplitUnavailableError } from "./errors.ts";
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

/** Why a layer is marked incomplete while a tar is applied to it. */
export const APPLYING = "apply";

/**
 * The seed's `isParent`: true when `parent` is the layer's recorded direct
 * parent, or when the layer has no parents at all (a base layer matches any
 * `parent`, as in the seed). Read errors count as "no parents".
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

async function mustExist(driver: UnionDriver, id: string): Promise<void> {
  if (!(await driver.exists(id))) throw new LayerNotFoundError(id);
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
 * The naive fallback. Reading paths (`readOnly`) mount with `keepTarSplit`:
 * they do not change the layer, so its tar-split record stays valid.
 */
function naive(driver: UnionDriver, readOnly = false): NaiveDiff {
  const getPut: GetPut = readOnly
    ? {
      get: (id, opts) => driver.get(id, { ...opts, keepTarSplit: true }),
      put: (id) => driver.put(id),
    }
    : driver;
  return new NaiveDiff(getPut, {
    uidMaps: driver.uidMaps,
    gidMaps: driver.gidMaps,
    libc: driver.libc,
  });
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

/**
 * The default {@linkcode LayerArchive}: seed semantics with the backend's
 * whiteout format.
 *
 * @example
 * ```ts
 * import { layerArchive } from "./layer_archive.ts";
 * console.log(typeof layerArchive.diff); // function
 * ```
 */
export const layerArchive: LayerArchive = {
  async diff(driver, id, parent, opts?: DiffOpts) {
    await mustExist(driver, id);
    const want = opts?.source ?? "auto";
    const direct = await isDirectParent(driver, id, parent);
    if (direct) await mustHaveDirs(driver, id, "diff");
    if (want !== "rebuilt") {
      const record = direct ? await driver.tarSplit.open(id) : null;
      if (record !== null) {
        const path = driver.tarSplit.pathOf(id);
        let getter;
        try {
          getter = dirFileGetter(driver.diffDir(id), driver.libc);
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
    if (!(await isDirectParent(driver, id, parent))) {
      // Written through the mount (whose get drops the record).
      return naive(driver).applyDiff(id, parent, tar, opts);
    }
    const dir = driver.diffDir(id);
    return await driver.withLayerLock(id, async () => {
      await driver.store.markIncomplete(id, APPLYING);
      // The layer changes: an older record no longer describes it.
      await driver.tarSplit.remove(id);
      // Into an empty layer (the usual case) the size is counted while extracting
      // and the tar's tar-split recorded on the way; otherwise, or when the tar
      // replaced something, the seed's walk decides and no record is kept.
      const wasEmpty = isEmptyDir(dir);
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
        };
        if (driver.whiteoutFormat === "aufs") {
          // aufs keeps whiteouts on disk exactly as the tar has them.
          await untar(tar, dir, common);
        } else {
          await applyLayer(tar, dir, { ...common, whiteoutFormat: driver.whiteoutFormat });
        }
        const fd = driver.libc.openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY);
        try {
          driver.libc.syncfs(fd);
        } finally {
          driver.libc.close(fd);
        }
        if (pending) {
          // A tar that replaced its own entries is not reproducible from the files.
          if (stats.replaced) await pending.abort();
          else await pending.commit();
        }
      } catch (e) {
        await pending?.abort();
        throw e;
      }
      await driver.store.clearIncomplete(id);
      return wasEmpty && !stats.replaced ? stats.createdSize : directorySize(dir, driver.libc);
    });
  },

  async diffSize(driver, id, parent, opts?: MountOpts) {
    await mustExist(driver, id);
    if (!(await isDirectParent(driver, id, parent))) {
      return naive(driver, true).diffSize(id, parent, opts);
    }
    await mustHaveDirs(driver, id, "diff size");
    return directorySize(driver.diffDir(id), driver.libc);
  },

  async changes(driver, id, parent, opts?: MountOpts): Promise<Change[]> {
    await mustExist(driver, id);
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
    await mustExist(driver, id);
    await mustHaveDirs(driver, id, "diff getter");
    // Resolved by the kernel inside the layer: `..` and absolute links stay in it.
    return dirFileGetter(driver.diffDir(id), driver.libc);
  },
};
