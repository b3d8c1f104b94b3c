/**
 * The image store: images (manifest, config, layer chain) and the blobs they
 * came as, kept under the driver root beside the layers:
 *
 * ```
 * <root>/images/lock                 flock(2) for every change of the records
 * <root>/images/blobs/sha256/<hex>   manifests, configs, original layer blobs
 * <root>/images/layers/<hex>.json    one record per layer, named by its OCI chain id
 * <root>/images/images/<hex>.json    one record per image, named by its manifest digest
 * <root>/images/tmp/                 downloads in progress (resumable)
 * ```
 *
 * Layers are driver layers whose id is the hex of their chain id
 * (`sha256(parent chain id + " " + diff id)`, the first layer's chain id is
 * its diff id), so two images with the same base share its layers. Records
 * are written atomically; a blob appears under its digest only once its
 * bytes were verified.
 *
 * @module
 */

import { join } from "node:path";
import type { Driver } from "../driver.ts";
import { LayerInUseError } from "../errors.ts";
import { isTempName, tempName, writeFileAtomic } from "../atomic_write.ts";
import { digestHex, isDigest, sha256Digest } from "./digest.ts";

/** A content descriptor (OCI `descriptor`). */
export interface Descriptor {
  /** What the content is. */
  mediaType: string;
  /** `sha256:<hex>` of the content. */
  digest: string;
  /** Length of the content in bytes. */
  size: number;
  /** Free-form key/values (e.g. the ref name in an OCI layout index). */
  annotations?: Record<string, string>;
  /** The platform of a manifest listed in an index. */
  platform?: Platform;
  /** Other places the content may be fetched from. */
  urls?: string[];
}

/** An OCI platform. */
export interface Platform {
  /** CPU architecture (`amd64`, `arm64`, ...). */
  architecture: string;
  /** Operating system (`linux`). */
  os: string;
  /** CPU variant (`v8`). */
  variant?: string;
  /** Operating system version. */
  "os.version"?: string;
}

/** One layer of the store. */
export interface LayerRecord {
  /** OCI chain id, `sha256:<hex>`; the driver layer is its hex. */
  chainId: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** Chain id of the layer below, or null. */
  parent: string | null;
  /** Compressed (or plain) blobs known to hold this layer's tar. */
  blobs: Descriptor[];
}

/** One image of the store. */
export interface ImageRecord {
  /** Manifest digest: the image's identity. */
  digest: string;
  /** Manifest media type. */
  mediaType: string;
  /** Manifest size in bytes. */
  size: number;
  /** Config digest. */
  config: string;
  /** Chain ids of its layers, bottom first. */
  layers: string[];
  /** Names pointing at it (e.g. `localhost:5000/app:1`). */
  names: string[];
  /** When it entered the store (ISO 8601). */
  created: string;
  /** Registry repositories it was pulled from or pushed to (for blob mounts). */
  sources?: string[];
}

/** No image of that name or digest. */
export class ImageNotFoundError extends Error {
  /** The name or digest asked for. */
  readonly ref: string;
  /** `ref` is what the caller asked for. */
  constructor(ref: string, detail = "") {
    super(`image ${JSON.stringify(ref)}: not found${detail ? ` (${detail})` : ""}`);
    this.name = "ImageNotFoundError";
    this.ref = ref;
  }
}

function isNotFound(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound;
}

/** The driver layer id of a chain id: its hex. */
export function layerIdOf(chainId: string): string {
  return digestHex(chainId, "chain id");
}

/** A blob being written: bytes go to a temp file, which becomes the blob once verified. */
export interface BlobWriter {
  /** Append bytes. */
  write(chunk: Uint8Array): Promise<void>;
  /** Make the file the blob `digest` (the caller verified it). */
  commit(digest: string): Promise<void>;
  /** Drop the temp file. */
  abort(): Promise<void>;
}

/**
 * The image records and blobs of one driver root.
 *
 * @example
 * ```ts
 * import { openDriver } from "../../mod.ts";
 * import { ImageStore } from "./store.ts";
 * const store = await ImageStore.open(await openDriver("auto", "/var/lib/strata"));
 * console.log((await store.images()).map((i) => i.names));
 * ```
 */
export class ImageStore {
  /** The driver whose layers the images use. */
  readonly driver: Driver;
  /** `<root>/images`. */
  readonly dir: string;
  /** `<root>/images/blobs/sha256`. */
  readonly blobDir: string;
  /** `<root>/images/tmp`. */
  readonly tmpDir: string;
  readonly #layerDir: string;
  readonly #imageDir: string;
  #locked = 0;

  /** Use {@linkcode ImageStore.open}. */
  private constructor(driver: Driver) {
    this.driver = driver;
    this.dir = join(driver.root, "images");
    this.blobDir = join(this.dir, "blobs", "sha256");
    this.tmpDir = join(this.dir, "tmp");
    this.#layerDir = join(this.dir, "layers");
    this.#imageDir = join(this.dir, "images");
  }

  /** The store of `driver`'s root; its directories are made (0700) when missing. */
  static async open(driver: Driver): Promise<ImageStore> {
    const s = new ImageStore(driver);
    for (const d of [s.blobDir, s.tmpDir, s.#layerDir, s.#imageDir]) {
      await Deno.mkdir(d, { recursive: true, mode: 0o700 });
    }
    return s;
  }

  /**
   * Run `fn` holding the store's lock (flock on `images/lock`, so other
   * processes wait too). Re-entrant within one call chain of this object.
   */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#locked > 0) return await fn();
    const f = await Deno.open(join(this.dir, "lock"), {
      read: true,
      write: true,
      create: true,
      mode: 0o600,
    });
    try {
      await f.lock(true);
      this.#locked++;
      try {
        return await fn();
      } finally {
        this.#locked--;
      }
    } finally {
      f.close();
    }
  }

  /**
   * Run `fn` holding the lock of layer `chainId` (flock on
   * `images/locks/<hex>`): two imports of the same layer, in one process or
   * two, take turns, and the second finds the layer made.
   */
  async withLayerLock<T>(chainId: string, fn: () => Promise<T>): Promise<T> {
    const dir = join(this.dir, "locks");
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const f = await Deno.open(join(dir, layerIdOf(chainId)), {
      read: true,
      write: true,
      create: true,
      mode: 0o600,
    });
    try {
      await f.lock(true);
      return await fn();
    } finally {
      f.close();
    }
  }

  // ---- blobs ----

  /** Path of blob `digest`. */
  blobPath(digest: string): string {
    return join(this.blobDir, digestHex(digest, "blob"));
  }

  /** Whether blob `digest` is stored. */
  async hasBlob(digest: string): Promise<boolean> {
    try {
      return (await Deno.stat(this.blobPath(digest))).isFile;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  /** The bytes of blob `digest` (small blobs: manifests, configs), checked against the digest. */
  async readBlob(digest: string): Promise<Uint8Array> {
    const data = await Deno.readFile(this.blobPath(digest));
    const got = sha256Digest(data);
    if (got !== digest) {
      throw new Error(`stored blob ${digest} is corrupt: it hashes to ${got}`);
    }
    return data;
  }

  /** A stream of blob `digest`. */
  async openBlob(digest: string): Promise<ReadableStream<Uint8Array>> {
    return (await Deno.open(this.blobPath(digest))).readable;
  }

  /** Store `data` as a blob; returns its digest. */
  async putBlob(data: Uint8Array): Promise<string> {
    const digest = sha256Digest(data);
    if (!(await this.hasBlob(digest))) {
      await writeFileAtomic(this.blobDir, digestHex(digest), data, { mode: 0o600 });
    }
    return digest;
  }

  /** A writer for a blob whose digest is known at the end. */
  async blobWriter(): Promise<BlobWriter> {
    const tmp = join(this.blobDir, tempName());
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    let open = true;
    const close = () => {
      if (open) f.close();
      open = false;
    };
    return {
      async write(chunk) {
        let off = 0;
        while (off < chunk.length) off += await f.write(chunk.subarray(off));
      },
      commit: async (digest) => {
        await f.sync();
        close();
        await Deno.rename(tmp, this.blobPath(digest));
      },
      async abort() {
        close();
        await Deno.remove(tmp).catch(() => {});
      },
    };
  }

  /** Adopt the file `path` (verified to be `digest`) as a blob, by rename. */
  async adoptBlob(path: string, digest: string): Promise<void> {
    await Deno.rename(path, this.blobPath(digest));
  }

  /** Every stored blob digest. */
  async blobs(): Promise<string[]> {
    const out: string[] = [];
    for await (const e of Deno.readDir(this.blobDir)) {
      if (!isTempName(e.name) && /^[0-9a-f]{64}$/.test(e.name)) out.push(`sha256:${e.name}`);
    }
    return out.sort();
  }

  // ---- layers ----

  /** The record of layer `chainId`, or undefined. */
  async layer(chainId: string): Promise<LayerRecord | undefined> {
    try {
      const text = await Deno.readTextFile(join(this.#layerDir, `${layerIdOf(chainId)}.json`));
      return JSON.parse(text) as LayerRecord;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw new Error(`layer record ${chainId}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Write the record of a layer. */
  async putLayer(rec: LayerRecord): Promise<void> {
    await this.withLock(() =>
      writeFileAtomic(
        this.#layerDir,
        `${layerIdOf(rec.chainId)}.json`,
        new TextEncoder().encode(JSON.stringify(rec, null, 2) + "\n"),
        { mode: 0o600 },
      )
    );
  }

  /** Add `blob` to layer `chainId`'s known blobs (no-op when known). */
  async addLayerBlob(rec: LayerRecord, blob: Descriptor): Promise<LayerRecord> {
    if (rec.blobs.some((b) => b.digest === blob.digest)) return rec;
    const next = { ...rec, blobs: [...rec.blobs, { ...blob, annotations: undefined }] };
    await this.putLayer(next);
    return next;
  }

  /** Every layer record. */
  async layers(): Promise<LayerRecord[]> {
    const out: LayerRecord[] = [];
    for await (const e of Deno.readDir(this.#layerDir)) {
      if (!e.name.endsWith(".json") || isTempName(e.name)) continue;
      const r = await this.layer(`sha256:${e.name.slice(0, -5)}`);
      if (r) out.push(r);
    }
    return out;
  }

  // ---- images ----

  /** Every image, sorted by first name (then digest). */
  async images(): Promise<ImageRecord[]> {
    const out: ImageRecord[] = [];
    for await (const e of Deno.readDir(this.#imageDir)) {
      if (!e.name.endsWith(".json") || isTempName(e.name)) continue;
      const text = await Deno.readTextFile(join(this.#imageDir, e.name));
      out.push(JSON.parse(text) as ImageRecord);
    }
    const key = (i: ImageRecord) => `${i.names[0] ?? "\uffff"} ${i.digest}`;
    return out.sort((a, b) => key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
  }

  /**
   * The image `ref` names: a name, a full manifest digest (`sha256:…`), or a
   * unique prefix of at least 6 hex digits of one.
   */
  async resolve(ref: string): Promise<ImageRecord> {
    const all = await this.images();
    const byName = all.find((i) => i.names.includes(ref));
    if (byName) return byName;
    if (isDigest(ref)) {
      const d = all.find((i) => i.digest === ref);
      if (d) return d;
      throw new ImageNotFoundError(ref);
    }
    const hex = ref.startsWith("sha256:") ? ref.slice(7) : ref;
    if (/^[0-9a-f]{6,64}$/.test(hex)) {
      const hits = all.filter((i) => i.digest.slice(7).startsWith(hex));
      if (hits.length === 1) return hits[0];
      if (hits.length > 1) throw new ImageNotFoundError(ref, `${hits.length} images match`);
    }
    throw new ImageNotFoundError(ref);
  }

  /**
   * Record `rec` (merging names and sources with an existing record of the
   * same digest) and move its names away from any other image.
   */
  async putImage(rec: ImageRecord): Promise<ImageRecord> {
    return await this.withLock(async () => {
      const all = await this.images();
      const old = all.find((i) => i.digest === rec.digest);
      const merged: ImageRecord = {
        ...rec,
        created: old?.created ?? rec.created,
        names: [...new Set([...(old?.names ?? []), ...rec.names])],
        sources: [...new Set([...(old?.sources ?? []), ...(rec.sources ?? [])])],
      };
      for (const other of all) {
        if (other.digest === rec.digest) continue;
        const kept = other.names.filter((n) => !rec.names.includes(n));
        if (kept.length !== other.names.length) await this.#writeImage({ ...other, names: kept });
      }
      await this.#writeImage(merged);
      return merged;
    });
  }

  async #writeImage(rec: ImageRecord): Promise<void> {
    await writeFileAtomic(
      this.#imageDir,
      `${digestHex(rec.digest)}.json`,
      new TextEncoder().encode(JSON.stringify(rec, null, 2) + "\n"),
      { mode: 0o600 },
    );
  }

  /**
   * Remove image `ref`. With a name that is one of several names of the
   * image, only the name goes. Otherwise the record goes, then each of its
   * layers, top down, that no other image uses and no other layer builds on
   * (a container layer on it keeps it and everything below), then the blobs
   * no image refers to any more. Returns the removed layer chain ids.
   */
  async remove(ref: string): Promise<{ untagged: boolean; layers: string[]; blobs: number }> {
    return await this.withLock(async () => {
      const img = await this.resolve(ref);
      if (img.names.includes(ref) && img.names.length > 1) {
        await this.#writeImage({ ...img, names: img.names.filter((n) => n !== ref) });
        return { untagged: true, layers: [], blobs: 0 };
      }
      await Deno.remove(join(this.#imageDir, `${digestHex(img.digest)}.json`));
      const rest = (await this.images()).filter((i) => i.digest !== img.digest);
      const used = new Set(rest.flatMap((i) => i.layers));
      const removed: string[] = [];
      for (const chainId of [...img.layers].reverse()) {
        if (used.has(chainId)) break;
        try {
          await this.driver.remove(layerIdOf(chainId), { ifUnused: true });
        } catch (e) {
          if (e instanceof LayerInUseError) break;
          throw e;
        }
        await Deno.remove(join(this.#layerDir, `${layerIdOf(chainId)}.json`)).catch((e) => {
          if (!isNotFound(e)) throw e;
        });
        removed.push(chainId);
      }
      const blobs = await this.#collectBlobs(rest, img);
      return { untagged: false, layers: removed, blobs };
    });
  }

  /** Delete blobs of `gone` that no image of `rest` refers to (manifest, config, layers). */
  async #collectBlobs(rest: ImageRecord[], gone: ImageRecord): Promise<number> {
    const keep = new Set<string>();
    for (const i of rest) {
      keep.add(i.digest);
      keep.add(i.config);
      for (const d of await this.manifestLayers(i).catch(() => [])) keep.add(d.digest);
    }
    const candidates = [gone.digest, gone.config];
    for (const d of await this.manifestLayers(gone).catch(() => [])) candidates.push(d.digest);
    let n = 0;
    for (const d of candidates) {
      if (keep.has(d)) continue;
      try {
        await Deno.remove(this.blobPath(d));
        n++;
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    return n;
  }

  /** The layer descriptors of image `img`'s manifest. */
  async manifestLayers(img: ImageRecord): Promise<Descriptor[]> {
    const m = JSON.parse(new TextDecoder().decode(await this.readBlob(img.digest)));
    return (m.layers ?? []) as Descriptor[];
  }
}
