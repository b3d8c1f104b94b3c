/**
 * The generic union driver: layers with parent chains under one root, each
 * with its own diff directory, mounted as a union of its chain by a
 * {@linkcode UnionBackend} (aufs, overlay). It composes the layer store, the
 * per-layer and root-wide locks, the persistent mount counts and the mount
 * helpers; the backend adds only what is its own.
 *
 * Root layout: `layers/<id>` (parent chains), `diff/<id>` (a
 * layer's own files), `mnt/<id>` (its union mountpoint), plus the backend's
 * per-layer dirs (e.g. overlay's `work/<id>`), and the driver's own
 * `incomplete/`, `locks/` and `counts/`.
 *
 * @module
 */

import { dirname, join, relative, resolve } from "node:path";
import { AT, Errno, errnoOf, type Libc, systemLibc } from "../ffi/libc.ts";
import type { WhiteoutFormat } from "./archive/whiteouts.ts";
import { isIdentity, rootPair } from "./archive/idmap.ts";
import type {
  ApplyDiffOpts,
  Change,
  CreateOpts,
  DiffOpts,
  Driver,
  DriverOptions,
  DriverStatus,
  FileGetter,
  IDMap,
  LayerTar,
  MountedLayer,
  MountOpts,
  OperationOpts,
  PutOpts,
  RemoveOpts,
} from "./driver.ts";
import {
  IncompatibleFsError,
  LayerError,
  LayerIncompleteError,
  LayerInUseError,
  LayerNotFoundError,
  NotStrataRootError,
  NotSupportedError,
  PermissionMissingError,
  ReadOnlyError,
} from "./errors.ts";
import { CREATING, describeIncomplete, incompleteRemedy } from "./incomplete.ts";
import { granted } from "./permissions.ts";
import { backingFsName } from "./fsmagic.ts";
import { compareBytewise, layerIdProblem, validateLayerId } from "./ids.ts";
import { lstatKind } from "./entry_type.ts";
import { LayerLocks, Mutex } from "./locks.ts";
import { isMountpoint, makePrivate, readMountinfo, unmountRetry } from "./mounts.ts";
import { MountCounts } from "./refcount.ts";
import { atomicRemove, ensureRemoveAll, sweepRemoving } from "./remove.ts";
import { LayerStore } from "./store.ts";
import { TransientRefs } from "./transient_refs.ts";
import { layerArchive, withSource } from "./layer_archive.ts";
import { TarSplitStore } from "./tar_split_store.ts";
import { staleTempFiles } from "./atomic_write.ts";
import {
  adoptionProblem,
  kernelRelease,
  MARKER_FORMAT,
  MARKER_NAME,
  MARKER_VERSION,
  markerPath,
  type ProbeRecord,
  readMarker,
  type RootMarker,
  rootState,
  systemPathProblem,
  writeMarker,
} from "./root_marker.ts";

/**
 * What a backend is asked to mount: one layer's union.
 *
 * @example
 * ```ts
 * import type { UnionMount } from "../mod.ts";
 * const request: UnionMount = {
 *   id: "app",
 *   target: "/var/lib/strata/mnt/app",
 *   upper: "/var/lib/strata/diff/app",
 *   lowers: ["/var/lib/strata/diff/base"],
 *   layerDirs: { work: "/var/lib/strata/work/app" },
 * };
 * console.log(request.lowers.length);
 * ```
 */
export interface UnionMount {
  /** The layer. */
  id: string;
  /** Mountpoint, `mnt/<id>`. */
  target: string;
  /** The layer's own, writable directory, `diff/<id>`. */
  upper: string;
  /** Diff directories of its ancestors, nearest parent first. */
  lowers: string[];
  /** The layer's backend-specific dirs by name, e.g. `{ work: "<root>/work/<id>" }`. */
  layerDirs: Record<string, string>;
  /** SELinux label for the mount, if any. */
  mountLabel?: string;
}

/**
 * What differs between union filesystems. A backend is stateless towards the
 * driver: the driver holds the locks (a mount or unmount call runs alone, in
 * the process and across processes) and retries EBUSY unmounts.
 *
 * @example
 * ```ts
 * import type { UnionBackend } from "./union.ts";
 * const fake: UnionBackend = {
 *   name: "fake",
 *   whiteoutFormat: "aufs",
 *   layerDirs: [],
 *   refusedBackingFs: [],
 *   checkSupport: async () => {},
 *   isMounted: () => false,
 *   mount: async () => {},
 *   unmount: async () => {},
 *   status: async () => [],
 * };
 * ```
 */
export interface UnionBackend {
  /** Backend and driver name, e.g. `"aufs"`. */
  readonly name: string;
  /** How its diff directories record deletions. */
  readonly whiteoutFormat: WhiteoutFormat;
  /**
   * Per-layer directories besides `diff/<id>` and `mnt/<id>`, by the name of
   * their parent dir under the root (overlay: `["work"]`). Made by create,
   * deleted by remove, swept for `-removing` leftovers at init.
   */
  readonly layerDirs: readonly string[];
  /** Backing filesystems (names from `FS_MAGIC`) the root must not live on. */
  readonly refusedBackingFs: readonly string[];
  /** The kernel checks Init runs first; throw a `NotSupportedError` when the backend cannot run. */
  checkSupport(): Promise<void>;
  /** Whether `path` is (inside) a live union of this backend; a missing path is not. */
  isMounted(path: string): boolean;
  /** Mount one union; on failure nothing may be left mounted at the target. */
  mount(request: UnionMount): Promise<void>;
  /** One unmount attempt of a union (the driver retries EBUSY). */
  unmount(target: string): Promise<void>;
  /** The backend's own status pairs, shown after the generic ones. */
  status(): Promise<[string, string][]>;
  /**
   * Forget what the backend keeps for layer `id` beyond its dirs (overlay:
   * its short link). Called by remove under the layer's lock, after the
   * layer's dirs are gone. Optional.
   */
  forget?(id: string): void;
  /**
   * Entries the backend keeps in the root that belong to no layer any more
   * (overlay: dangling short links), for `check`. Nothing is changed. Optional.
   */
  strayEntries?(): string[];
  /** Delete what {@linkcode UnionBackend.strayEntries} reports; the paths deleted. Optional. */
  sweepStrayEntries?(): string[];
}

/**
 * The layer-tar half of a driver (diff, apply, sizes, changes), kept apart so
 * it can be written and tested on its own. Each method gets the driver it
 * serves as its first argument and may use its accessors (`diffDir`,
 * `mountDir`, `parentChain`, `store`, `withLayerLock`, `whiteoutFormat`,
 * `uidMaps`, `gidMaps`, `libc`) and its `get`/`put`. It must not call
 * `get`/`put`/`remove` of a layer from inside `withLayerLock` of that layer
 * (the locks are not re-entrant).
 *
 * @example
 * ```ts
 * import type { LayerArchive } from "./union.ts";
 * const sizesOnly: Partial<LayerArchive> = {
 *   diffSize: async (driver, id) => (await Deno.stat(driver.diffDir(id))).size,
 * };
 * ```
 */
export interface LayerArchive {
  /**
   * See `Driver.diff`. A stream without a `source` property counts as
   * `"rebuilt"`; an implementation that reassembles the applied tar marks
   * its stream with `withSource(stream, "original")`.
   */
  diff(
    driver: UnionDriver,
    id: string,
    parent: string,
    opts?: DiffOpts,
  ): Promise<ReadableStream<Uint8Array>>;
  /** See `Driver.applyDiff`. */
  applyDiff(
    driver: UnionDriver,
    id: string,
    parent: string,
    tar: ReadableStream<Uint8Array>,
    opts?: ApplyDiffOpts,
  ): Promise<number>;
  /** See `Driver.diffSize`. */
  diffSize(driver: UnionDriver, id: string, parent: string, opts?: OperationOpts): Promise<number>;
  /** See `Driver.changes`. */
  changes(
    driver: UnionDriver,
    id: string,
    parent: string,
    opts?: OperationOpts,
  ): Promise<Change[]>;
  /** See `Driver.diffGetter`. */
  diffGetter(driver: UnionDriver, id: string): Promise<FileGetter>;
}

const notWired = () => Promise.reject(new Error("layer tars are not wired in yet"));

/**
 * The archive used when none is given: every method rejects with
 * `layer tars are not wired in yet`.
 *
 * @example
 * ```ts
 * import { UNWIRED_ARCHIVE } from "./union.ts";
 * console.log(typeof UNWIRED_ARCHIVE.diff); // function
 * ```
 */
export const UNWIRED_ARCHIVE: LayerArchive = Object.freeze({
  diff: notWired,
  applyDiff: notWired,
  diffSize: notWired,
  changes: notWired,
  diffGetter: notWired,
});

let defaultArchive: LayerArchive = layerArchive;

/**
 * Set the archive that drivers created afterwards use when their options
 * name none (the default is `layerArchive` from `layer_archive.ts`; tests
 * swap it).
 *
 * @example
 * ```ts
 * import { setDefaultLayerArchive, UNWIRED_ARCHIVE } from "./union.ts";
 * setDefaultLayerArchive(UNWIRED_ARCHIVE);
 * ```
 */
export function setDefaultLayerArchive(archive: LayerArchive): void {
  defaultArchive = archive;
}

/**
 * A layer and whether its files are all in place.
 *
 * @example
 * ```ts
 * import { type LayerState, OverlayDriver } from "../mod.ts";
 * await using driver = await OverlayDriver.init("/var/lib/strata");
 * const states: LayerState[] = await driver.listLayerStates();
 * for (const s of states) console.log(s.id, s.state, s.reason ?? "", s.remedy ?? "");
 * ```
 */
export interface LayerState {
  /** The layer id. */
  id: string;
  /** `"incomplete"`: a create, import or apply did not finish. */
  state: "ok" | "incomplete";
  /** What was interrupted (incomplete layers only). */
  reason?: string;
  /** What can be done about it (incomplete layers only). */
  remedy?: string;
}

/**
 * Options of {@linkcode UnionDriver}.
 *
 * @example
 * ```ts
 * import { OverlayBackend, systemLibc, UnionDriver, type UnionDriverOptions } from "../mod.ts";
 * const libc = systemLibc();
 * const opts: UnionDriverOptions = { libc, unmountRetries: 10, unmountRetryDelayMs: 50 };
 * const driver = new UnionDriver("/var/lib/strata", new OverlayBackend(libc, "/var/lib/strata"), opts);
 * await driver.prepare();
 * ```
 */
export interface UnionDriverOptions extends DriverOptions {
  /** Layer tars in and out (default: the one set by {@linkcode setDefaultLayerArchive}). */
  archive?: LayerArchive;
  /** EBUSY retries of an unmount in remove/put/cleanup (default 5). */
  unmountRetries?: number;
  /** Pause between those retries in milliseconds (default 100). */
  unmountRetryDelayMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The errno of `e` or of the first error in its cause chain that has one. */
function causeErrno(e: unknown): number | undefined {
  for (let cur = e, depth = 0; cur !== undefined && depth < 8; depth++) {
    const n = errnoOf(cur);
    if (n !== undefined) return n;
    cur = (cur as { cause?: unknown })?.cause;
  }
  return undefined;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function realPathOrUndefined(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/**
 * Whether the top mount at `path` is `path` bind-mounted onto itself (what
 * Init's `makePrivate` makes), as opposed to a filesystem mounted there by
 * someone else.
 */
function isSelfBind(path: string, procRoot: string): boolean {
  const table = readMountinfo(procRoot);
  const top = table.findLast((m) => m.mountPoint === path);
  if (!top) return false;
  const under = table.find((m) => m.id === top.parent);
  if (!under || under.major !== top.major || under.minor !== top.minor) return false;
  return top.root === join(under.root, relative(under.mountPoint, path));
}

/**
 * A {@linkcode Driver} over a {@linkcode UnionBackend}. Construct, then
 * {@linkcode UnionDriver.prepare} once (backends' `init` functions do both).
 *
 * Paths: a layer without parents is never mounted, `get` returns its
 * `diff/<id>`; a layer with parents is mounted at `mnt/<id>`. Each `get`
 * takes a reference, each `put` drops one; counts persist in `counts/`, so a
 * `get` in one process and a `put` in another balance. The first reference
 * mounts, the last unmounts.
 *
 * @example
 * ```ts
 * import { UnionDriver } from "./union.ts";
 * import { AufsBackend } from "./aufs/backend.ts";
 * import { systemLibc } from "../ffi/libc.ts";
 * const libc = systemLibc();
 * const driver = new UnionDriver("/var/lib/strata/aufs", new AufsBackend(libc), { libc });
 * await driver.prepare();
 * ```
 */
export class UnionDriver implements Driver {
  /** Backend name. */
  readonly name: string;
  /** The driver root (absolute). */
  readonly root: string;
  /** The metadata store (`layers/`, `incomplete/`). */
  readonly store: LayerStore;
  /** Records of references taken for one operation (`refs/`), see `transient_refs.ts`. */
  readonly refs: TransientRefs;
  /** The tar-split records of applied layers, `R/tar-split` (see `tar_split_store.ts`). */
  readonly tarSplit: TarSplitStore;
  /** The system calls this driver makes. */
  readonly libc: Libc;
  /** Host ranges of container uids (empty: identity). */
  readonly uidMaps: IDMap[];
  /** Host ranges of container gids (empty: identity). */
  readonly gidMaps: IDMap[];
  /** Where `/proc` is read from. */
  readonly procRoot: string;
  /** The backend that mounts unions. */
  readonly backend: UnionBackend;
  readonly #archive: LayerArchive;
  readonly #locks: LayerLocks;
  readonly #counts: MountCounts;
  readonly #mountMutex = new Mutex();
  readonly #held = new Map<string, string>();
  readonly #warn: (message: string) => void;
  readonly #retries: number;
  readonly #retryDelayMs: number;
  readonly #readOnly: boolean;
  readonly #adopt: boolean;
  readonly #createRoot: boolean;
  #backingFs = "<unknown>";
  #madeBind = false;
  #marker: RootMarker | undefined;
  /** This driver's Init made the root directory. */
  #madeRoot = false;
  /** A read-only driver made the root private before its first mount. */
  #mountSetUp = false;

  /** No I/O: the driver is usable after {@linkcode UnionDriver.prepare}. */
  constructor(root: string, backend: UnionBackend, opts: UnionDriverOptions = {}) {
    this.root = resolve(root);
    this.backend = backend;
    this.name = backend.name;
    this.libc = opts.libc ?? systemLibc();
    this.uidMaps = opts.uidMaps ?? [];
    this.gidMaps = opts.gidMaps ?? [];
    this.procRoot = opts.procRoot ?? "/proc";
    this.#archive = opts.archive ?? defaultArchive;
    this.#warn = opts.onWarning ?? (() => {});
    this.#retries = opts.unmountRetries ?? 5;
    this.#retryDelayMs = opts.unmountRetryDelayMs ?? 100;
    this.#readOnly = opts.readOnly ?? false;
    this.#adopt = opts.adopt ?? false;
    this.#createRoot = opts.createRoot ?? true;
    this.store = new LayerStore(this.root);
    this.refs = new TransientRefs(this.root);
    this.tarSplit = new TarSplitStore(this.root);
    this.#locks = new LayerLocks(join(this.root, "locks"), { keep: (id) => this.#present(id) });
    this.#counts = new MountCounts(join(this.root, "counts"), (p) => backend.isMounted(p));
  }

  /** How the diff directories record deletions (the backend's format). */
  get whiteoutFormat(): WhiteoutFormat {
    return this.backend.whiteoutFormat;
  }

  /** Where this driver reports warnings (the `onWarning` option; a no-op by default). */
  get onWarning(): (message: string) => void {
    return this.#warn;
  }

  /** Name of the filesystem under the root, as found by {@linkcode UnionDriver.prepare}. */
  get backingFs(): string {
    return this.#backingFs;
  }

  /** Whether this driver was opened read-only (see `DriverOptions.readOnly`). */
  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** The root's `strata.json` as read or written by Init (undefined: none yet, read-only). */
  get marker(): RootMarker | undefined {
    return this.#marker;
  }

  /**
   * Init, after making sure the root is strata's: `/` and system
   * directories are refused, and so is a directory that holds anything but
   * has no `strata.json` (unless `adopt` is set and it looks like a
   * containers/storage aufs root); a missing or empty directory becomes a
   * root, its marker written first. Then the backend's kernel checks (skipped
   * when the marker records that they passed on this kernel release and
   * backing filesystem); the backing filesystem of the root's parent (refused
   * ones throw {@linkcode IncompatibleFsError}); the root (0700) made a
   * private mount, bind-mounting it onto itself when needed; `mnt`, `diff`,
   * `layers` and the backend's dirs (0700); leftover `*-removing` dirs and
   * temp files swept; half-made layers (a create cut short) removed. If a
   * step after the bind mount fails, the bind mount is undone.
   *
   * Read-only (`readOnly`): the same refusals and checks, then nothing that
   * changes the disk or the mount table.
   */
  async prepare(): Promise<void> {
    this.#requirePermissions();
    const refused = systemPathProblem(this.root);
    if (refused !== undefined) throw new NotStrataRootError(this.root, refused);
    const state = rootState(this.root);
    if (state === "foreign") {
      if (!this.#adopt || this.#readOnly) {
        throw new NotStrataRootError(
          this.root,
          `it holds files but no ${MARKER_NAME} (strata writes one when it makes a root; ` +
            "an existing containers/storage aufs root is adopted only when asked: --adopt)",
        );
      }
      const why = adoptionProblem(this.root);
      if (why !== undefined) {
        throw new NotStrataRootError(this.root, `it cannot be adopted: ${why}`);
      }
    }
    if (state === "missing" && !this.#createRoot && !this.#readOnly) {
      throw new NotStrataRootError(
        this.root,
        "it does not exist (creating a layer makes the root)",
      );
    }
    this.#marker = state === "marked" ? readMarker(this.root) : undefined;
    if (this.#marker !== undefined && this.#marker.driver !== this.name) {
      throw new NotSupportedError(
        `${this.root} holds ${this.#marker.driver} layers, not ${this.name} ones ` +
          `(open it with --driver ${this.#marker.driver} or auto)`,
      );
    }
    const fs = this.#backingFsOfParent();
    this.#backingFs = fs;
    if (this.probeRecord() === undefined) await this.backend.checkSupport();
    if (this.backend.refusedBackingFs.includes(fs)) {
      throw new IncompatibleFsError(this.backend.name, fs);
    }
    if (this.#readOnly) return;
    const owner = rootPair(this);
    this.#madeRoot = state === "missing" && this.#mkdirs(this.root, 0o700, owner, true);
    try {
      if (state !== "marked") {
        this.#marker = {
          format: MARKER_FORMAT,
          version: MARKER_VERSION,
          driver: this.name,
          created: new Date().toISOString(),
          ...(state === "foreign" ? { adopted: true } : {}),
        };
        await writeMarker(this.root, this.#marker);
      }
      this.#madeBind = makePrivate(this.libc, this.root, this.procRoot);
      for (const dir of ["mnt", "diff", "layers", ...this.backend.layerDirs]) {
        this.#mkdirs(join(this.root, dir), 0o700, owner, false);
      }
      for (const dir of ["mnt", "diff", ...this.backend.layerDirs]) {
        await sweepRemoving(
          this.libc,
          join(this.root, dir),
          this.procRoot,
          (path, e) => this.#warn(`could not remove stale ${path}: ${message(e)}`),
        );
      }
      // Temp files of atomic writes whose writer was killed (live ones are locked).
      for (const dir of [this.root, this.store.layersDir, this.store.incompleteDir]) {
        staleTempFiles(dir, { remove: true });
      }
      staleTempFiles(join(this.root, "counts"), { remove: true });
      for (const { id, why } of await this.store.incomplete()) {
        if (why !== CREATING) {
          // An interrupted apply: the layer's data may be partial. Say so;
          // `strata check --repair` (or remove) deals with it.
          this.#warn(`layer ${id}: ${describeIncomplete(why)}`);
          continue;
        }
        try {
          await this.#locks.withLayer(id, async () => {
            // Another process may have been creating it while we waited for
            // its lock: remove it only if it is still half-made now.
            const still = (await this.store.incomplete()).some((m) =>
              m.id === id && m.why === CREATING
            );
            if (still) await this.#removeLayer(id);
          });
        } catch (e) {
          this.#warn(`could not remove half-made layer ${id}: ${message(e)}`);
        }
      }
    } catch (e) {
      this.abandon();
      throw e;
    }
  }

  /**
   * Undo what this driver's Init did, for a backend's Init that fails after
   * {@linkcode UnionDriver.prepare}: the root's bind mount onto itself is
   * unmounted if Init made it, and the root is deleted if Init made it and
   * it still holds only the empty directories and the marker Init put there.
   * Nothing else is unmounted or deleted: other processes' mounts stay.
   * Failures are reported through `onWarning`.
   */
  abandon(): void {
    if (this.#madeBind) {
      this.#madeBind = false;
      try {
        const real = realPathOrUndefined(this.root);
        if (real !== undefined && isSelfBind(real, this.procRoot)) this.libc.umount2(real, 0);
      } catch (undo) {
        this.#warn(`could not undo the bind mount of ${this.root}: ${message(undo)}`);
      }
    }
    if (!this.#madeRoot) return;
    this.#madeRoot = false;
    try {
      for (const e of Deno.readDirSync(this.root)) {
        const path = join(this.root, e.name);
        if (e.name === MARKER_NAME) continue;
        if (e.isDirectory) Deno.removeSync(path); // only an empty one: ENOTEMPTY keeps the rest
        else return; // something Init did not make: keep the root
      }
      Deno.removeSync(markerPath(this.root));
      Deno.removeSync(this.root);
    } catch (e) {
      this.#warn(`kept ${this.root}, which Init made: ${message(e)}`);
    }
  }

  /**
   * The probe results the marker records for this backend on the running
   * kernel release and the current backing filesystem, if any.
   */
  probeRecord(): ProbeRecord | undefined {
    const record = this.#marker?.probes?.[kernelRelease(this.procRoot)]?.[this.name];
    return record?.backingFs === this.#backingFs ? record : undefined;
  }

  /**
   * Record the backend's probe results in the marker (for this kernel
   * release and backing filesystem), so the next Init skips the probes. A
   * cache: a failed write (a full disk) is ignored. No-op when read-only.
   */
  async recordProbe(results: Record<string, unknown>): Promise<void> {
    if (this.#readOnly || this.#marker === undefined) return;
    let current: RootMarker | undefined;
    try {
      current = readMarker(this.root) ?? this.#marker;
    } catch {
      return;
    }
    const release = kernelRelease(this.procRoot);
    const probes = { ...(current.probes ?? {}) };
    probes[release] = {
      ...(probes[release] ?? {}),
      [this.name]: { backingFs: this.#backingFs, results },
    };
    const next = { ...current, probes };
    try {
      await writeMarker(this.root, next);
      this.#marker = next;
    } catch {
      // A cache only: the probes run again next time.
    }
  }

  /**
   * A read-only driver mounts only for `get`: the root's propagation is made
   * private (as Init does in write mode) before its first union mount.
   */
  #mountable(): void {
    if (this.#mountSetUp) return;
    this.#madeBind = makePrivate(this.libc, this.root, this.procRoot);
    this.#mountSetUp = true;
  }

  /**
   * Throw {@linkcode PermissionMissingError} naming the flag when Deno has
   * not granted reading (and, unless read-only, writing) the root: asked
   * without prompting, so a terminal user never sees a permission prompt.
   */
  #requirePermissions(): void {
    const missing: string[] = [];
    if (!granted({ name: "read", path: this.root })) missing.push(`--allow-read=${this.root}`);
    if (!this.#readOnly && !granted({ name: "write", path: this.root })) {
      missing.push(`--allow-write=${this.root}`);
    }
    if (missing.length > 0) {
      throw new PermissionMissingError(
        `the ${this.name} driver at ${this.root} needs ${missing.join(" and ")}`,
      );
    }
  }

  /** Throw {@linkcode ReadOnlyError} when opened read-only. */
  #writable(op: string): void {
    if (this.#readOnly) throw new ReadOnlyError(this.root, op);
  }

  /**
   * The filesystem under the root's parent; when the
   * parent does not exist yet, the nearest ancestor that does, since the
   * root will be made there.
   */
  #backingFsOfParent(): string {
    for (let dir = dirname(this.root);; dir = dirname(dir)) {
      try {
        return backingFsName(this.libc, dir);
      } catch (e) {
        if (errnoOf(e) !== Errno.ENOENT || dirname(dir) === dir) throw e;
      }
    }
  }

  /** `diff/<id>`: the layer's own files (validated id). */
  diffDir(id: string): string {
    validateLayerId(id);
    return join(this.root, "diff", id);
  }

  /** `mnt/<id>`: where the layer's union is mounted (validated id). */
  mountDir(id: string): string {
    validateLayerId(id);
    return join(this.root, "mnt", id);
  }

  /** The layer's backend-specific dir under `<name>/<id>` (validated id). */
  layerDir(name: string, id: string): string {
    validateLayerId(id);
    return join(this.root, name, id);
  }

  /**
   * The ancestors of `id`, nearest first (`[]` for a base layer). Throws
   * {@linkcode LayerNotFoundError} for an unknown layer.
   */
  parentChain(id: string): Promise<string[]> {
    return this.store.parents(id);
  }

  /**
   * The path `get(id)` returns: `diff/<id>` for a layer without parents,
   * `mnt/<id>` otherwise. Does not mount.
   */
  async layerPath(id: string): Promise<string> {
    const chain = await this.parentChain(id);
    return chain.length === 0 ? this.diffDir(id) : this.mountDir(id);
  }

  /**
   * Check that layer `id`'s own directories are real directories: `diff/<id>`,
   * and with `mount` also the backend's (e.g. `work/<id>`) and `mnt/<id>`.
   * A missing one is a {@linkcode LayerError} naming it ("the layer's
   * directory is missing"); a symbolic link or another type is one too
   * ({@linkcode WrongEntryTypeError} as cause): nothing under the root is
   * ever followed. `op` names the operation in the error.
   */
  requireLayerDirs(id: string, op: string, mount = false): void {
    const dirs = [this.diffDir(id)];
    if (mount) {
      dirs.push(...this.backend.layerDirs.map((d) => this.layerDir(d, id)), this.mountDir(id));
    }
    for (const dir of dirs) {
      let st: Deno.FileInfo | undefined;
      try {
        st = lstatKind(dir, "directory");
      } catch (e) {
        throw new LayerError(id, op, dir, e);
      }
      if (st === undefined) {
        throw new LayerError(
          id,
          op,
          dir,
          new Error("the layer's directory is missing (`strata check` reports such damage)"),
        );
      }
    }
  }

  /** The path this driver's `get(id)` handed out while it holds a reference, if any. */
  heldPath(id: string): string | undefined {
    return this.#held.get(id);
  }

  /** The reference count of `id`, reconciled with the mount table. */
  async mountCount(id: string): Promise<number> {
    const chain = await this.parentChain(id);
    return await this.#counts.get(id, chain.length === 0 ? null : this.mountDir(id));
  }

  /** Whether `path` is a live union of this driver's backend (a missing path is not). */
  isMounted(path: string): boolean {
    return this.backend.isMounted(path);
  }

  /** Run `fn` holding layer `id`'s lock (in this process and across processes). Not re-entrant. */
  withLayerLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    validateLayerId(id);
    return this.#locks.withLayer(id, fn);
  }

  /**
   * Four pairs for aufs: root, backing filesystem, number of layers, then the
   * backend's own (aufs: dirperm1 support).
   */
  async status(): Promise<[string, string][]> {
    const layers = await this.store.list();
    // Read-only: no lock (taking it would make `locks/`).
    const own = this.#readOnly
      ? await this.backend.status()
      : await this.#withMountLock(() => this.backend.status());
    return [
      ["Root Dir", this.root],
      ["Backing Filesystem", this.#backingFs],
      ["Dirs", String(layers.length)],
      ...own,
    ];
  }

  /** The facts of {@linkcode UnionDriver.status} as a typed object. */
  async statusInfo(): Promise<DriverStatus> {
    const layers = await this.store.list();
    const own = await this.#withMountLock(() => this.backend.status());
    return {
      backend: this.name,
      root: this.root,
      backingFilesystem: this.#backingFs,
      layers: layers.length,
      backendFacts: Object.fromEntries(own),
    };
  }

  /** No per-layer metadata: always `null`. */
  metadata(_id: string): Promise<Record<string, string> | null> {
    return Promise.resolve(null);
  }

  /**
   * Whether `id` is a complete layer. An incomplete one (a create, import or
   * apply that did not finish) does not count: callers use `exists` to decide
   * whether a layer can be used as it is. {@linkcode UnionDriver.layerState}
   * and {@linkcode UnionDriver.listLayerStates} show incomplete layers with
   * their state, and every operation on one says what is wrong with it.
   * Invalid ids never exist.
   */
  exists(id: string): Promise<boolean> {
    return this.store.exists(id);
  }

  /** All complete layers, sorted byte-wise (incomplete ones: {@linkcode UnionDriver.listLayerStates}). */
  listLayers(): Promise<string[]> {
    return this.store.list();
  }

  /**
   * The state of layer `id`, or `undefined` when there is no such layer:
   * `"ok"`, or `"incomplete"` with what was interrupted and what can be done.
   */
  async layerState(id: string): Promise<LayerState | undefined> {
    if (layerIdProblem(id) !== undefined) return undefined;
    const reason = await this.store.marker(id);
    if (reason !== undefined) {
      return { id, state: "incomplete", reason, remedy: incompleteRemedy(reason) };
    }
    return (await this.store.hasChainFile(id)) ? { id, state: "ok" } : undefined;
  }

  /** {@linkcode UnionDriver.layerState} of every layer, sorted byte-wise by id. */
  async listLayerStates(): Promise<LayerState[]> {
    const out = new Map<string, LayerState>();
    for (const id of await this.store.list()) out.set(id, { id, state: "ok" });
    for (const { id, why } of await this.store.incomplete()) {
      out.set(id, { id, state: "incomplete", reason: why, remedy: incompleteRemedy(why) });
    }
    return [...out.values()].sort((a, b) => compareBytewise(a.id, b.id));
  }

  /** Throw {@linkcode LayerIncompleteError} when `id` is marked incomplete. */
  async refuseIncomplete(id: string, op: string): Promise<void> {
    const reason = await this.store.marker(id);
    if (reason !== undefined) throw new LayerIncompleteError(id, op, reason);
  }

  /** No additional image stores. */
  additionalImageStores(): string[] {
    return [];
  }

  /**
   * Create layer `id` on `parent` (`""` for a base layer). Ids are checked
   * before anything is touched. The layer is marked incomplete until its
   * dirs and its chain file are in place; on failure everything made is
   * removed again. Throws {@linkcode LayerNotFoundError} for a missing parent
   * and a {@linkcode LayerError} when `id` already exists.
   */
  async create(id: string, parentOrOpts?: string | CreateOpts, opts?: CreateOpts): Promise<void> {
    const parent = typeof parentOrOpts === "string" ? parentOrOpts : parentOrOpts?.parent ?? "";
    if (typeof parentOrOpts === "object") opts = parentOrOpts;
    this.#writable("create");
    validateLayerId(id);
    if (parent !== "") validateLayerId(parent);
    if (opts?.storageOpt && Object.keys(opts.storageOpt).length > 0) {
      throw new LayerError(
        id,
        "create",
        "",
        new Error(`--storage-opt is not supported for ${this.name}`),
      );
    }
    // The parent's lock too: a removal of the parent waits until the chain
    // naming it is written (and then sees the child), or runs first (and
    // then create finds no parent).
    await this.#locks.withLayers(parent === "" ? [id] : [id, parent], async () => {
      await this.refuseIncomplete(id, "create");
      if (await this.store.exists(id)) {
        throw new LayerError(
          id,
          "create",
          this.store.fileOf(id),
          new Deno.errors.AlreadyExists("the layer already exists"),
        );
      }
      let chain: string[] = [];
      if (parent !== "") {
        await this.refuseIncomplete(parent, `create ${id} on it`);
        if (!(await this.store.exists(parent))) {
          throw new LayerNotFoundError(parent, `parent of ${id}`);
        }
        chain = [parent, ...(await this.store.parents(parent))];
      }
      await this.store.markIncomplete(id, CREATING);
      try {
        const owner = rootPair(this);
        for (const dir of this.#layerDirPaths(id)) await this.#freshDir(dir, owner);
        // A record left by an earlier layer of this id (a removal cut short) is not this layer's.
        await this.tarSplit.remove(id);
        await this.store.write(id, chain);
      } catch (e) {
        try {
          await this.#removeLayer(id);
        } catch (undo) {
          this.#warn(
            `create ${id} failed and its leftovers stay for the next init: ${message(undo)}`,
          );
        }
        throw e instanceof LayerError ? e : new LayerError(id, "create", "", e);
      }
      if (opts?.incomplete) await this.store.markIncomplete(id, opts.incomplete);
      else await this.store.clearIncomplete(id);
    });
  }

  /** Same as {@linkcode UnionDriver.create}. */
  createReadWrite(id: string, parent?: string | CreateOpts, opts?: CreateOpts): Promise<void> {
    return this.create(id, parent, opts);
  }

  /**
   * Unmount and delete layer `id`: the union is unmounted (EBUSY retried),
   * then the chain file is deleted first, then `diff/<id>` and `mnt/<id>`
   * (and the backend's dirs) are renamed to `*-removing` and deleted. Its
   * mount count and held path are reset. Removing an unknown id succeeds.
   */
  async remove(id: string, opts?: RemoveOpts): Promise<void> {
    this.#writable("remove");
    validateLayerId(id);
    await this.#locks.withLayer(id, async () => {
      if (opts?.ifUnused) {
        const children = await this.store.children(id);
        // An unknown layer has no mounts: remove stays idempotent.
        const mounts = children.length > 0 ? 0 : await this.mountCount(id).catch(() => 0);
        if (children.length > 0 || mounts > 0) throw new LayerInUseError(id, children, mounts);
      }
      await this.#removeLayer(id);
    });
  }

  /**
   * Take a reference on layer `id` and return its root: `diff/<id>` for a
   * layer without parents (never mounted), else `mnt/<id>`, mounted on the
   * first reference. A failed mount leaves the count as it was. Returns the
   * same path on every call while referenced.
   */
  async get(id: string, opts?: MountOpts): Promise<string> {
    validateLayerId(id);
    if (this.#readOnly) {
      // Make nothing (not even a lock file) for a layer that is not there.
      if (!(await this.store.exists(id))) await this.store.parents(id);
      this.#mountable();
    }
    return await this.#locks.withLayer(id, async () => {
      await this.refuseIncomplete(id, "get");
      return await this.getLocked(id, opts);
    });
  }

  /**
   * {@linkcode UnionDriver.get} for a caller that already holds layer `id`'s
   * lock (`withLayerLock`) and has checked its state; an apply through the
   * union uses it on the layer it is filling.
   */
  async getLocked(id: string, opts?: MountOpts): Promise<string> {
    validateLayerId(id);
    const chain = await this.store.parents(id);
    this.requireLayerDirs(id, "get", chain.length > 0);
    // Held writable: the layer may change, so its tar no longer describes it.
    if (!opts?.keepTarSplit) await this.tarSplit.remove(id);
    if (chain.length === 0) {
      const path = this.diffDir(id);
      await this.#counts.increment(id, null);
      this.#held.set(id, path);
      return path;
    }
    const target = this.mountDir(id);
    const count = await this.#counts.increment(id, target);
    if (count === 1) {
      try {
        await this.#mountUnion(id, target, chain, opts?.mountLabel);
      } catch (e) {
        await this.#counts.decrement(id, target);
        throw e;
      }
    }
    if (opts?.transient) await this.#recordTransient(id, target);
    this.#held.set(id, target);
    return target;
  }

  /** Record a transient reference just taken; if that fails, give the reference back. */
  async #recordTransient(id: string, target: string): Promise<void> {
    try {
      await this.refs.add(id);
    } catch (e) {
      const left = await this.#counts.decrement(id, target);
      if (left === 0) await this.#unmountRetrying(id, target, "get");
      throw new LayerError(id, "get: record the reference", this.refs.dir, e);
    }
  }

  /**
   * Drop a reference on layer `id`; the last one unmounts its union (EBUSY
   * retried). Counts never go below zero.
   */
  async put(id: string, opts?: PutOpts): Promise<void> {
    validateLayerId(id);
    await this.#locks.withLayer(id, () => this.putLocked(id, opts));
  }

  /**
   * Drop every reference on layer `id` and unmount its union, for a caller
   * holding its lock. Used before re-applying into an incomplete layer: `get`
   * refuses incomplete layers, so its references are those an interrupted
   * apply left behind.
   */
  async releaseAllLocked(id: string): Promise<void> {
    validateLayerId(id);
    await this.#unmountRetrying(id, this.mountDir(id), "release");
    await this.#counts.reset(id);
    this.#held.delete(id);
  }

  /**
   * Drop the reference that the transient record `path` of layer `id` stands
   * for, if the process that took it is gone (its record unlocked): the
   * record is deleted first, then the count goes down (unmounting on the
   * last), so a kill in between can leak a reference but never drop one twice.
   * Resolves to false when the record is gone or alive by the time the
   * layer's lock is held.
   */
  async dropDeadReference(id: string, path: string): Promise<boolean> {
    validateLayerId(id);
    return await this.#locks.withLayer(id, async () => {
      if (!this.refs.isDead(path)) return false;
      await this.refs.removeRecord(id, path);
      await this.putLocked(id);
      return true;
    });
  }

  /** {@linkcode UnionDriver.put} for a caller that already holds layer `id`'s lock. */
  async putLocked(id: string, opts?: PutOpts): Promise<void> {
    validateLayerId(id);
    if (opts?.transient) await this.refs.drop(id);
    const chain = await this.store.parents(id);
    const target = chain.length === 0 ? null : this.mountDir(id);
    const count = await this.#counts.decrement(id, target);
    if (count > 0) return;
    this.#held.delete(id);
    if (target !== null) await this.#unmountRetrying(id, target, "put");
  }

  /**
   * {@linkcode UnionDriver.get} as a disposable: `await using m = await
   * driver.mount(id)`; `m.path` is the layer's root, and leaving the scope
   * (normally or by a throw) drops the reference with `put`.
   */
  async mount(id: string, opts?: MountOpts): Promise<MountedLayer> {
    const path = await this.get(id, opts);
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      await this.put(id);
    };
    return { id, path, release, [Symbol.asyncDispose]: release };
  }

  /**
   * Dispose (`await using`): undo the root's bind mount onto itself when
   * {@linkcode UnionDriver.prepare} made it and no union is mounted under
   * the root. Layers still mounted keep it. Failures go to `onWarning`.
   */
  [Symbol.asyncDispose](): Promise<void> {
    if (this.#madeBind) this.#undoBind();
    return Promise.resolve();
  }

  #undoBind(): void {
    try {
      // Not under the root-wide lock: its lock file lives in the root and
      // would keep the bind mount busy. A union mounted meanwhile by another
      // process makes the unmount fail with EBUSY, which leaves it in place.
      const root = realPathOrUndefined(this.root);
      if (root === undefined || !isSelfBind(root, this.procRoot)) return;
      const inside = readMountinfo(this.procRoot).some((m) => m.mountPoint.startsWith(root + "/"));
      if (inside) return;
      this.libc.umount2(this.root, 0);
      this.#madeBind = false;
    } catch (e) {
      this.#warn(`could not undo the bind mount of ${this.root}: ${message(e)}`);
    }
  }

  /**
   * Unmount every union under `mnt/` (each layer's lock held while its
   * union is unmounted), then the root's bind mount onto itself made by
   * Init. Every failure is reported, together, after all were tried.
   */
  async cleanup(): Promise<void> {
    const failures: string[] = [];
    const mnt = join(this.root, "mnt");
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync(mnt)].filter((e) => e.isDirectory).map((e) => e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) failures.push(`list ${mnt}: ${message(e)}`);
    }
    for (const name of names) {
      const path = join(mnt, name);
      try {
        if (!this.backend.isMounted(path)) continue;
        if (layerIdProblem(name) === undefined) {
          await this.#locks.withLayer(name, async () => {
            await this.#unmountRetrying(name, path, "cleanup");
            this.#held.delete(name);
          });
        } else await this.#unmountRetrying(name, path, "cleanup");
      } catch (e) {
        failures.push(message(e));
      }
    }
    try {
      const root = realPathOrUndefined(this.root);
      if (root !== undefined && isSelfBind(root, this.procRoot)) {
        await unmountRetry(this.libc, this.root, {
          retries: this.#retries,
          delayMs: this.#retryDelayMs,
          isMounted: (p) => isMountpoint(p, this.procRoot),
        });
      }
    } catch (e) {
      failures.push(`unmount the bind mount of ${this.root}: ${message(e)}`);
    }
    if (failures.length > 0) {
      throw new Error(`${this.name} cleanup of ${this.root}: ${failures.join("; ")}`);
    }
  }

  /** See {@linkcode LayerArchive.diff}; the result says how the tar was made. */
  async diff(id: string, parent: string, opts?: DiffOpts): Promise<LayerTar> {
    return withSource(await this.#archive.diff(this, id, parent, opts), "rebuilt");
  }

  /** See {@linkcode LayerArchive.applyDiff}. */
  applyDiff(
    id: string,
    parent: string,
    tar: ReadableStream<Uint8Array>,
    opts?: ApplyDiffOpts,
  ): Promise<number> {
    if (this.#readOnly) return Promise.reject(new ReadOnlyError(this.root, "applyDiff"));
    return this.#archive.applyDiff(this, id, parent, tar, opts);
  }

  /** See {@linkcode LayerArchive.diffSize}. */
  diffSize(id: string, parent: string, opts?: OperationOpts): Promise<number> {
    return this.#archive.diffSize(this, id, parent, opts);
  }

  /** See {@linkcode LayerArchive.changes}. */
  changes(id: string, parent: string, opts?: OperationOpts): Promise<Change[]> {
    return this.#archive.changes(this, id, parent, opts);
  }

  /** See {@linkcode LayerArchive.diffGetter}. */
  diffGetter(id: string): Promise<FileGetter> {
    return this.#archive.diffGetter(this, id);
  }

  /** Mount and unmount calls run one at a time: in this driver, and across processes. */
  #withMountLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.#mountMutex.run(() => this.#locks.withGlobal(fn));
  }

  /** Every per-layer directory: mnt, diff, then the backend's. */
  #layerDirPaths(id: string): string[] {
    return [
      this.mountDir(id),
      this.diffDir(id),
      ...this.backend.layerDirs.map((d) => this.layerDir(d, id)),
    ];
  }

  async #mountUnion(id: string, target: string, chain: string[], label?: string): Promise<void> {
    const layerDirs: Record<string, string> = {};
    for (const d of this.backend.layerDirs) layerDirs[d] = this.layerDir(d, id);
    for (const p of chain) {
      try {
        lstatKind(this.diffDir(p), "directory");
      } catch (e) {
        throw new LayerError(id, `mount ${this.name} union: ancestor ${p}`, this.diffDir(p), e);
      }
    }
    const request: UnionMount = {
      id,
      target,
      upper: this.diffDir(id),
      lowers: chain.map((p) => this.diffDir(p)),
      layerDirs,
      mountLabel: label,
    };
    try {
      await this.#withMountLock(async () => {
        if (!this.backend.isMounted(target)) await this.backend.mount(request);
      });
    } catch (e) {
      const missing = chain.find((p) => !this.#isDir(this.diffDir(p)));
      if (missing !== undefined) {
        throw new LayerNotFoundError(missing, `ancestor of ${id}, needed to mount ${target}`, {
          cause: e,
        });
      }
      throw new LayerError(id, `mount ${this.name} union`, target, e);
    }
  }

  /** Unmount `path` if mounted, retrying EBUSY; errors name the layer and the operation. */
  async #unmountRetrying(id: string, path: string, op: string): Promise<void> {
    // Only a real directory can hold a union of ours; never unmount through a link.
    const st = await Deno.lstat(path).catch(() => undefined);
    if (st !== undefined && !st.isDirectory) return;
    for (let attempt = 0;; attempt++) {
      if (!this.backend.isMounted(path)) return;
      try {
        await this.#withMountLock(async () => {
          if (this.backend.isMounted(path)) await this.backend.unmount(path);
        });
        return;
      } catch (e) {
        if (causeErrno(e) !== Errno.EBUSY) throw new LayerError(id, `${op}: unmount`, path, e);
        if (attempt >= this.#retries) {
          throw new LayerError(id, `${op}: unmount (still busy after ${attempt} retries)`, path, e);
        }
      }
      await sleep(this.#retryDelayMs);
    }
  }

  /** Remove's body; the caller holds the layer's lock. */
  async #removeLayer(id: string): Promise<void> {
    const target = this.mountDir(id);
    await this.#unmountRetrying(id, target, "remove");
    await this.store.remove(id);
    await this.tarSplit.remove(id);
    const dirs = [
      this.diffDir(id),
      target,
      ...this.backend.layerDirs.map((d) => this.layerDir(d, id)),
    ];
    for (const dir of dirs) {
      try {
        await atomicRemove(this.libc, dir, this.procRoot);
      } catch (e) {
        throw new LayerError(id, "remove", dir, e);
      }
    }
    try {
      this.backend.forget?.(id);
    } catch (e) {
      throw new LayerError(id, `remove: forget in ${this.name} backend`, "", e);
    }
    await this.#counts.reset(id);
    await this.refs.forget(id);
    this.#held.delete(id);
    await this.store.clearIncomplete(id);
    await this.#locks.discard(id);
  }

  /** Whether `id` has a chain file or an incomplete marker (any entry: wrong types are reported elsewhere). */
  #present(id: string): boolean {
    for (const dir of [this.store.layersDir, this.store.incompleteDir]) {
      try {
        Deno.lstatSync(join(dir, id));
        return true;
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) return true;
      }
    }
    return false;
  }

  /** Whether another process (or holder) holds layer `id`'s lock now; creates nothing. */
  isLayerBusy(id: string): boolean {
    return this.#locks.isHeld(id);
  }

  #isDir(path: string): boolean {
    try {
      return (this.libc.fstatat(AT.FDCWD, path, 0).mode & 0o170000) === 0o040000;
    } catch {
      return false;
    }
  }

  /**
   * Make `path` (0700-style dirs of the root), chowning when ids are mapped;
   * true when this call made it.
   */
  #mkdirs(
    path: string,
    mode: number,
    owner: { uid: number; gid: number },
    parents: boolean,
  ): boolean {
    try {
      this.libc.mkdirat(AT.FDCWD, path, mode);
    } catch (e) {
      const n = errnoOf(e);
      if (n === Errno.ENOENT && parents && dirname(path) !== path) {
        this.#mkdirs(dirname(path), mode, owner, true);
        this.libc.mkdirat(AT.FDCWD, path, mode);
      } else if (n !== Errno.EEXIST) {
        throw e;
      } else if (!this.#isDir(path)) {
        throw new Error(`mkdir ${path}: it exists and is not a directory`, { cause: e });
      } else {
        this.#chown(path, owner);
        return false;
      }
    }
    this.#chown(path, owner);
    return true;
  }

  /** Make a new layer dir (0755); a leftover of a half-made layer is deleted first. */
  async #freshDir(path: string, owner: { uid: number; gid: number }): Promise<void> {
    try {
      this.libc.mkdirat(AT.FDCWD, path, 0o755);
    } catch (e) {
      if (errnoOf(e) !== Errno.EEXIST) throw e;
      await ensureRemoveAll(this.libc, path, this.procRoot);
      this.libc.mkdirat(AT.FDCWD, path, 0o755);
    }
    this.#chown(path, owner);
  }

  #chown(path: string, owner: { uid: number; gid: number }): void {
    if (isIdentity(this.uidMaps) && isIdentity(this.gidMaps)) return;
    this.libc.fchownat(AT.FDCWD, path, owner.uid, owner.gid, 0);
  }
}
