/**
 * The layer-tar half of the union drivers (seed §3.10–§3.16): diff, applyDiff,
 * diffSize, changes and diffGetter, natively on a layer's own diff directory
 * when the parent asked for is the layer's direct parent, and through the
 * naive fallback otherwise.
 *
 * @module
 */

import { AT, O, RESOLVE } from "../ffi/libc.ts";
import type { Change, FileGetter, MountOpts } from "./driver.ts";
import { LayerError, LayerNotFoundError } from "./errors.ts";
import type { LayerArchive, UnionDriver } from "./union.ts";
import { NaiveDiff } from "./naive.ts";
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

function naive(driver: UnionDriver): NaiveDiff {
  return new NaiveDiff(driver, {
    uidMaps: driver.uidMaps,
    gidMaps: driver.gidMaps,
    libc: driver.libc,
  });
}

function isEmptyDir(dir: string): boolean {
  for (const _ of Deno.readDirSync(dir)) return false;
  return true;
}

/** A stream of an open fd's content; the fd is closed at the end or on cancel. */
function fdStream(driver: UnionDriver, fd: number): ReadableStream<Uint8Array> {
  const libc = driver.libc;
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      libc.close(fd);
    }
  };
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      try {
        const buf = new Uint8Array(256 * 1024);
        const n = libc.read(fd, buf);
        if (n === 0) {
          close();
          controller.close();
        } else controller.enqueue(buf.subarray(0, n));
      } catch (e) {
        close();
        controller.error(e);
      }
    },
    cancel() {
      close();
    },
  });
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
  async diff(driver, id, parent, opts?: MountOpts) {
    await mustExist(driver, id);
    if (!(await isDirectParent(driver, id, parent))) return naive(driver).diff(id, parent, opts);
    await mustHaveDirs(driver, id, "diff");
    return tarDirectory(driver.diffDir(id), {
      excludePatterns: driver.whiteoutFormat === "aufs" ? [...AUFS_DIFF_EXCLUDES] : [],
      uidMaps: driver.uidMaps,
      gidMaps: driver.gidMaps,
      whiteoutFormat: driver.whiteoutFormat,
      libc: driver.libc,
    });
  },

  async applyDiff(driver, id, parent, tar, opts?: MountOpts) {
    await mustBeCreated(driver, id);
    if (!(await isDirectParent(driver, id, parent))) {
      return naive(driver).applyDiff(id, parent, tar, opts);
    }
    const dir = driver.diffDir(id);
    return await driver.withLayerLock(id, async () => {
      await driver.store.markIncomplete(id, APPLYING);
      // Into an empty layer (the usual case) the size is counted while extracting;
      // otherwise, or when the tar replaced something, the seed's walk decides.
      const wasEmpty = isEmptyDir(dir);
      const stats = newExtractStats();
      const common = {
        uidMaps: driver.uidMaps,
        gidMaps: driver.gidMaps,
        libc: driver.libc,
        stats,
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
      await driver.store.clearIncomplete(id);
      return wasEmpty && !stats.replaced ? stats.createdSize : directorySize(dir, driver.libc);
    });
  },

  async diffSize(driver, id, parent, opts?: MountOpts) {
    await mustExist(driver, id);
    if (!(await isDirectParent(driver, id, parent))) {
      return naive(driver).diffSize(id, parent, opts);
    }
    await mustHaveDirs(driver, id, "diff size");
    return directorySize(driver.diffDir(id), driver.libc);
  },

  async changes(driver, id, parent, opts?: MountOpts): Promise<Change[]> {
    await mustExist(driver, id);
    if (!(await isDirectParent(driver, id, parent))) return naive(driver).changes(id, parent, opts);
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
    const libc = driver.libc;
    const rootFd = libc.openat(AT.FDCWD, driver.diffDir(id), O.RDONLY | O.DIRECTORY);
    let closed = false;
    return {
      get(path: string) {
        if (closed) return Promise.reject(new Error(`diff getter of layer ${id} is closed`));
        try {
          // Resolved by the kernel inside the layer: `..` and absolute links stay in it.
          const fd = libc.openat2(
            rootFd,
            path,
            O.RDONLY | O.NOFOLLOW,
            0,
            RESOLVE.IN_ROOT | RESOLVE.NO_MAGICLINKS,
          );
          return Promise.resolve(fdStream(driver, fd));
        } catch (e) {
          return Promise.reject(e);
        }
      },
      close() {
        if (!closed) {
          closed = true;
          libc.close(rootFd);
        }
        return Promise.resolve();
      },
    };
  },
};
