/**
 * The `Driver` interface every backend implements, its option types, and the
 * driver registry (`registerDriver`, `openDriver`, `driverNames`).
 *
 * @module
 */

import type { Libc } from "../ffi/libc.ts";
import { NotSupportedError } from "./errors.ts";
import { readMarker } from "./root_marker.ts";

/**
 * One range of a user-namespace id map: container ids
 * `[containerID, containerID + size)` are host ids `[hostID, hostID + size)`.
 *
 * @example
 * ```ts
 * import type { IDMap } from "../mod.ts";
 * // container root (0) is host uid 100000, and so on for 65536 ids
 * const userns: IDMap[] = [{ containerID: 0, hostID: 100000, size: 65536 }];
 * console.log(userns[0].hostID);
 * ```
 */
export interface IDMap {
  /** First container id of the range. */
  containerID: number;
  /** First host id of the range. */
  hostID: number;
  /** Number of ids in the range. */
  size: number;
}

/**
 * Options of `create`/`createReadWrite`.
 *
 * @example
 * ```ts
 * import { type CreateOpts, openDriver } from "../mod.ts";
 * const driver = await openDriver("auto", "/var/lib/strata");
 * const opts: CreateOpts = { parent: "base", incomplete: "import" };
 * await driver.create("app", opts); // marked incomplete until an applyDiff succeeds
 * ```
 */
export interface CreateOpts {
  /**
   * The layer to build on, in the `create(id, { parent })` form; absent or
   * `""` makes a base layer. Ignored when the parent is passed as the second
   * argument (`create(id, parent, opts)`).
   */
  parent?: string;
  /** SELinux label for the layer's mounts (unused by create itself). */
  mountLabel?: string;
  /** Per-layer storage options; neither backend supports any (a non-empty map is an error). */
  storageOpt?: Record<string, string>;
  /**
   * Leave the new layer marked incomplete with this reason (e.g. `"import"`)
   * until a later `applyDiff` to it succeeds: a crash in between then leaves a
   * layer that `exists` denies and `check` reports, not an empty one.
   */
  incomplete?: string;
}

/**
 * Options of `remove`.
 *
 * @example
 * ```ts
 * import { LayerInUseError, openDriver, type RemoveOpts } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const opts: RemoveOpts = { ifUnused: true };
 * try {
 *   await driver.remove("base", opts);
 * } catch (e) {
 *   if (e instanceof LayerInUseError) console.log(e.children); // layers built on it
 *   else throw e;
 * }
 * ```
 */
export interface RemoveOpts {
  /** Refuse to remove a layer that others build on or that is mounted. */
  ifUnused?: boolean;
}

/**
 * Options of `get` and of the archive methods.
 *
 * @example
 * ```ts
 * import { type MountOpts, openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const opts: MountOpts = { mountLabel: "system_u:object_r:container_file_t:s0" };
 * const path = await driver.get("app", opts);
 * await driver.put("app");
 * console.log(path);
 * ```
 */
export interface MountOpts {
  /** SELinux label, passed to the mount as `context="<label>"`. */
  mountLabel?: string;
  /**
   * `get` only: the caller will not change the layer through this reference,
   * so its tar-split record (what makes `diff` give the original tar) is
   * kept. Without it, `get` of a layer drops the record, since anything may
   * be written to the layer while it is held.
   */
  keepTarSplit?: boolean;
  /**
   * `get` only: a reference for the length of one operation of this process
   * (released by `put(id, { transient: true })`). It is also recorded with a
   * lock the process holds, so that `check --repair` can drop it when the
   * process died holding it; without it a reference outlives its process on
   * purpose (`strata mount`).
   */
  transient?: boolean;
}

/**
 * Options of `put`.
 *
 * @example
 * ```ts
 * import { openDriver } from "../mod.ts";
 * const d = await openDriver("auto", "/var/lib/strata");
 * const root = await d.get("app", { transient: true }); // held for this operation only
 * await d.put("app", { transient: true });
 * ```
 */
export interface PutOpts {
  /** Release a reference taken with `get(id, { transient: true })`. */
  transient?: boolean;
}

/**
 * How the tar `diff` returned was made.
 *
 * @example
 * ```ts
 * import { type DiffSource, openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const tar = await driver.diff("base", "");
 * const source: DiffSource = tar.source;
 * console.log(source === "original" ? "the applied tar, byte for byte" : "rebuilt from the files");
 * await tar.cancel();
 * ```
 */
export type DiffSource =
  /** The tar that was applied to the layer, byte for byte, reassembled from its tar-split record. */
  | "original"
  /** Built from the layer's files (containers/storage's diff): same content, not the same bytes. */
  | "rebuilt";

/**
 * Options of `diff`.
 *
 * @example
 * ```ts
 * import { type DiffOpts, openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const opts: DiffOpts = { source: "original", signal: AbortSignal.timeout(60_000) };
 * const tar = await driver.diff("base", "", opts); // TarSplitUnavailableError if not possible
 * await tar.pipeTo((await Deno.create("/tmp/base.tar")).writable);
 * ```
 */
export interface DiffOpts extends OperationOpts {
  /**
   * Which tar to give. `"auto"` (the default): the original bytes when the
   * layer has an intact tar-split record and `parent` is its direct parent,
   * else a rebuilt tar. `"original"`: the original bytes or an error
   * (`TarSplitUnavailableError`) when that is impossible. `"rebuilt"`:
   * always built from the files.
   */
  source?: "auto" | DiffSource;
}

/**
 * A layer tar from `diff`: the byte stream, and how it was made.
 *
 * @example
 * ```ts
 * import { openDriver } from "../mod.ts";
 * const d = await openDriver("auto", "/var/lib/strata");
 * const tar = await d.diff("base", "");
 * console.log(tar.source); // "original" after an applyDiff, "rebuilt" otherwise
 * await tar.cancel();
 * ```
 */
export interface LayerTar extends ReadableStream<Uint8Array> {
  /** `"original"` (the applied tar's own bytes) or `"rebuilt"`. */
  readonly source: DiffSource;
}

/**
 * Options of `applyDiff`.
 *
 * @example
 * ```ts
 * import { type ApplyDiffOpts, openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const opts: ApplyDiffOpts = {
 *   onProgress: (bytes, entries) => console.log(`${bytes} bytes, ${entries} entries`),
 *   signal: AbortSignal.timeout(10 * 60_000),
 * };
 * await driver.applyDiff("base", "", (await Deno.open("base.tar")).readable, opts);
 * ```
 */
export interface ApplyDiffOpts extends OperationOpts {
  /**
   * Called after each chunk of the tar is extracted with the tar bytes read
   * and the entries extracted so far (for a progress line; counted by the
   * extraction itself, the tar is not parsed twice).
   */
  onProgress?: (bytes: number, entries: number) => void;
}

/**
 * Options of the long operations (`diff`, `applyDiff`, `changes`,
 * `diffSize`): a mount label and an abort signal.
 *
 * @example
 * ```ts
 * import { type OperationOpts, openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const opts: OperationOpts = { signal: AbortSignal.timeout(60_000) };
 * const tar = (await Deno.open("layer.tar")).readable;
 * await driver.applyDiff("app", "base", tar, opts); // rejects with a TimeoutError after a minute
 * ```
 */
export interface OperationOpts extends MountOpts {
  /**
   * Abort the operation. It then rejects with `signal.reason` (by default a
   * `DOMException` named `AbortError`) once its own cleanup is done; a layer
   * whose `applyDiff` was aborted keeps its incomplete mark, as after any
   * interrupted apply (see docs/behaviour.md#incomplete-layers). A stream
   * returned by `diff` errors with the reason.
   */
  signal?: AbortSignal;
}

/**
 * A mounted layer from `Driver.mount`: its root path, released (one `put`)
 * when disposed.
 *
 * @example
 * ```ts
 * import { openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * {
 *   await using m = await driver.mount("app");
 *   console.log(await Deno.readTextFile(`${m.path}/etc/hostname`));
 * } // released (put) here, also if the block throws
 * ```
 */
export interface MountedLayer extends AsyncDisposable {
  /** The layer. */
  readonly id: string;
  /** The root of the layer's view (what `get` returns). */
  readonly path: string;
  /** Drop the reference (`put`); idempotent. Same as disposing. */
  release(): Promise<void>;
}

/**
 * The state of a driver as a typed object; `status()` gives the same facts
 * as display pairs.
 *
 * @example
 * ```ts
 * import { type DriverStatus, openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const s: DriverStatus = await driver.statusInfo();
 * console.log(`${s.backend} on ${s.backingFilesystem}: ${s.layers} layers`);
 * ```
 */
export interface DriverStatus {
  /** Backend name, `"aufs"` or `"overlay"`. */
  backend: string;
  /** The driver root directory. */
  root: string;
  /** Name of the filesystem the root lives on, e.g. `"ext4"` or `"tmpfs"`. */
  backingFilesystem: string;
  /** Number of complete layers. */
  layers: number;
  /**
   * The backend's own facts, by the names `status()` shows them with: aufs
   * `"Dirperm1 Supported"`; overlay `"Supports d_type"`, `"Max Lower
   * Layers"`, `"Using metacopy"`, `"Mount Options"`.
   */
  backendFacts: Record<string, string>;
}

/**
 * One difference between a layer and its parent.
 *
 * @example
 * ```ts
 * import type { Change } from "../mod.ts";
 * const line = (c: Change) => `${{ add: "A", modify: "C", delete: "D" }[c.kind]} ${c.path}`;
 * console.log(line({ path: "/etc/hosts", kind: "modify" })); // C /etc/hosts
 * ```
 */
export interface Change {
  /** Absolute path from the layer root, e.g. `/etc/passwd`. */
  path: string;
  /** What happened to it. */
  kind: "add" | "modify" | "delete";
}

/**
 * Reads the files of one layer's own diff by name (tar-split's FileGetter), confined to the layer.
 *
 * @example
 * ```ts
 * import { openDriver } from "../mod.ts";
 * await using driver = await openDriver("auto", "/var/lib/strata");
 * const getter = await driver.diffGetter("app");
 * try {
 *   const body = await getter.get("etc/hostname");
 *   console.log(await new Response(body).text());
 * } finally {
 *   await getter.close();
 * }
 * ```
 */
export interface FileGetter {
  /** The content of `path` (relative to the layer root). */
  get(path: string): Promise<ReadableStream<Uint8Array>>;
  /** Release the getter. */
  close(): Promise<void>;
}

/**
 * Options every driver's `init` takes.
 *
 * @example
 * ```ts
 * import { type DriverOptions, openDriver } from "../mod.ts";
 * const opts: DriverOptions = {
 *   uidMaps: [{ containerID: 0, hostID: 100000, size: 65536 }],
 *   gidMaps: [{ containerID: 0, hostID: 100000, size: 65536 }],
 *   onWarning: (m) => console.warn(`strata: $../mod.ts`),
 * };
 * await using driver = await openDriver("auto", "/var/lib/strata", opts);
 * ```
 */
export interface DriverOptions {
  /** Host→container uid ranges; empty or absent means identity. */
  uidMaps?: IDMap[];
  /** Host→container gid ranges; empty or absent means identity. */
  gidMaps?: IDMap[];
  /** System calls; defaults to the real libc. Tests pass a recording double. */
  libc?: Libc;
  /** Where `/proc` is read from (tests point it at a fake). Default `/proc`. */
  procRoot?: string;
  /**
   * Told about problems that are reported but do not stop an operation (a
   * stale directory that could not be swept, a layer left incomplete by an
   * interrupted apply, ignored xattrs). Default: ignored; strata's library
   * never writes to the console itself.
   */
  onWarning?: (message: string) => void;
  /**
   * Open for reading only: Init changes nothing (no directory is made, no
   * leftover swept, no bind mount, no propagation change, no test mount) and
   * methods that change the store throw `ReadOnlyError`. A missing or empty
   * root reads as an empty store. `get`/`put` (which the naive diff of a
   * layer against a non-parent needs) still mount. Default false.
   */
  readOnly?: boolean;
  /**
   * Adopt an existing containers/storage aufs root (a directory with
   * `layers/`, `diff/` and `mnt/` but no `strata.json`) by writing the
   * marker. Without it such a directory is refused. Default false.
   */
  adopt?: boolean;
  /** Make the root when it does not exist yet (default true; ignored when `readOnly`). */
  createRoot?: boolean;
}

/**
 * A graph driver: layers with parent chains, a union view of a layer over its
 * ancestors, and layer tars in and out.
 *
 * @example
 * ```ts
 * import { openDriver } from "../mod.ts";
 * await using d = await openDriver("auto", "/var/lib/strata");
 * await d.create("base");
 * await d.create("app", { parent: "base" });
 * {
 *   await using m = await d.mount("app");
 *   await Deno.writeTextFile(`${m.path}/hello`, "hi\n");
 * } // unmounted here, even if the block threw
 * console.log(await d.changes("app", "base")); // [{ path: "/hello", kind: "add" }]
 * ```
 */
export interface Driver extends AsyncDisposable {
  /** Backend name, `"aufs"` or `"overlay"`. */
  readonly name: string;
  /** The driver root directory. */
  readonly root: string;
  /**
   * Facts about the driver as display pairs, in a fixed order: `Root Dir`,
   * `Backing Filesystem`, `Dirs` (the number of layers), then the backend's
   * own (see {@linkcode DriverStatus.backendFacts}).
   */
  status(): Promise<[string, string][]>;
  /** The same facts as `status()`, as a typed object. */
  statusInfo(): Promise<DriverStatus>;
  /**
   * Per-layer metadata for the caller to show. Both backends keep none and
   * always resolve to `null` (containers/storage's aufs driver also returns
   * none); it exists so that code written against other graph drivers runs.
   */
  metadata(id: string): Promise<Record<string, string> | null>;
  /** Whether layer `id` exists. */
  exists(id: string): Promise<boolean>;
  /**
   * Create layer `id` on `parent` (`""` for a base layer), or
   * `create(id, { parent })` (no parent: a base layer).
   */
  create(id: string, parent?: string | CreateOpts, opts?: CreateOpts): Promise<void>;
  /** Same as create (no read-only distinction in these backends). */
  createReadWrite(id: string, parent?: string | CreateOpts, opts?: CreateOpts): Promise<void>;
  /**
   * Unmount and delete layer `id` (idempotent). With `ifUnused`, refuse
   * (`LayerInUseError`) when other layers build on it or it is mounted,
   * checked under the layer's lock.
   */
  remove(id: string, opts?: RemoveOpts): Promise<void>;
  /** Mount (if needed) and return the path of the layer's root. */
  get(id: string, opts?: MountOpts): Promise<string>;
  /** Release one reference taken by `get`; unmounts on the last. */
  put(id: string, opts?: PutOpts): Promise<void>;
  /**
   * `get` as a disposable: `await using m = await driver.mount(id)` gives
   * `m.path`, and the reference is dropped (`put`) when `m` goes out of
   * scope, also when the block throws.
   */
  mount(id: string, opts?: MountOpts): Promise<MountedLayer>;
  /** All layer ids, sorted. */
  listLayers(): Promise<string[]>;
  /** Extra read-only image stores (none). */
  additionalImageStores(): string[];
  /** Unmount everything this driver mounted under its root. */
  cleanup(): Promise<void>;
  /**
   * Let go of the driver (`await using`): undoes the root's bind mount onto
   * itself if this driver made it and no union is mounted under the root any
   * more (layers still mounted keep it, and stay mounted). Never throws for
   * that: a failure goes to `onWarning`.
   */
  [Symbol.asyncDispose](): Promise<void>;
  /**
   * The layer's changes against `parent`, as a layer tar. For a layer filled
   * by `applyDiff` and not changed since (no writable `get`, no second
   * apply), against its direct parent, this is the applied tar itself, byte
   * for byte (`source: "original"`); see {@linkcode DiffOpts}.
   */
  diff(id: string, parent: string, opts?: DiffOpts): Promise<LayerTar>;
  /**
   * Apply a layer tar to `id`; returns the size of what the layer holds
   * afterwards (see docs/behaviour.md#apply).
   */
  applyDiff(
    id: string,
    parent: string,
    tar: ReadableStream<Uint8Array>,
    opts?: ApplyDiffOpts,
  ): Promise<number>;
  /** Size of the changes of `id` against `parent`. */
  diffSize(id: string, parent: string, opts?: OperationOpts): Promise<number>;
  /** The changes of `id` against `parent`, sorted by path. */
  changes(id: string, parent: string, opts?: OperationOpts): Promise<Change[]>;
  /** Read files of the layer's own diff by name. */
  diffGetter(id: string): Promise<FileGetter>;
}

/**
 * Creates a driver rooted at `root`.
 *
 * @example
 * ```ts
 * import { type DriverInit, OverlayDriver, registerDriver } from "../mod.ts";
 * const init: DriverInit = (root, opts) => OverlayDriver.init(root, opts);
 * registerDriver("my-overlay", init);
 * ```
 */
export type DriverInit = (root: string, opts?: DriverOptions) => Promise<Driver>;

const registry = new Map<string, DriverInit>();

/**
 * Register a backend under `name`. Registering a name twice is an error.
 *
 * @example
 * ```ts
 * import { registerDriver } from "./driver.ts";
 * registerDriver("mine", async (_root) => { throw new Error("not yet"); });
 * ```
 */
export function registerDriver(name: string, init: DriverInit): void {
  if (registry.has(name)) throw new Error(`Name already registered ${name}`);
  registry.set(name, init);
}

/**
 * Names of the registered backends, sorted.
 *
 * @example
 * ```ts
 * import { driverNames } from "./driver.ts";
 * console.log(driverNames());
 * ```
 */
export function driverNames(): string[] {
  return [...registry.keys()].sort();
}

/**
 * Order in which `"auto"` tries the backends.
 *
 * @example
 * ```ts
 * import { AUTO_ORDER } from "../mod.ts";
 * console.log(AUTO_ORDER.join(", ")); // aufs, overlay
 * ```
 */
export const AUTO_ORDER: readonly string[] = ["aufs", "overlay"];

/** The driver named in `root`'s marker, when it has a readable one. */
function markedDriver(root: string): string | undefined {
  try {
    return readMarker(root)?.driver;
  } catch {
    return undefined; // the driver's Init reports a bad marker
  }
}

/**
 * Open the driver `name` at `root`. `"auto"` opens the driver named in the
 * root's `strata.json` when there is one (its layers are in that driver's
 * format); otherwise it tries aufs, then overlay, and fails with a
 * `NotSupportedError` naming both when neither can run.
 *
 * @example
 * ```ts
 * import { openDriver } from "../mod.ts";
 * const d = await openDriver("overlay", "/tmp/strata-root");
 * console.log(d.name);
 * ```
 */
export async function openDriver(
  name: string,
  root: string,
  opts?: DriverOptions,
): Promise<Driver> {
  if (name === "auto") {
    const marked = markedDriver(root);
    const own = marked === undefined ? undefined : registry.get(marked);
    if (own) return await own(root, opts);
    const reasons: string[] = [];
    for (const n of AUTO_ORDER) {
      const init = registry.get(n);
      if (!init) continue;
      try {
        return await init(root, opts);
      } catch (e) {
        if (!(e instanceof NotSupportedError)) throw e;
        reasons.push(`${n}: ${e.message}`);
      }
    }
    throw new NotSupportedError(`no usable backend at ${root} (${reasons.join("; ")})`);
  }
  const init = registry.get(name);
  if (!init) throw new NotSupportedError(`failed to GetDriver graph ${name} ${root}`);
  return await init(root, opts);
}
