/**
 * The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) as a
 * source and a destination of images: `importOciLayout` verifies each blob
 * while it streams it into the store; `exportOciLayout` writes an image's
 * original blobs back, so import → export gives the same manifest digest.
 *
 * @module
 */

import { join } from "node:path";
import { tempName } from "../atomic_write.ts";
import { compressor, MEDIA } from "./compression.ts";
import { digestHex, verifying } from "./digest.ts";
import {
  type BlobSource,
  imageDocuments,
  ingestImage,
  type IngestOptions,
  type IngestResult,
  readVerified,
} from "./ingest.ts";
import {
  type Index,
  isIndexType,
  type Manifest,
  parseManifestOrIndex,
  pickPlatform,
} from "./manifest.ts";
import { type Descriptor, type ImageStore, layerIdOf } from "./store.ts";

/** The annotation that names an image in an OCI layout's index. */
export const REF_NAME = "org.opencontainers.image.ref.name";

/** A parsed `oci:DIR[:TAG]`. */
export interface OciRef {
  /** The layout directory. */
  dir: string;
  /** The image's `org.opencontainers.image.ref.name`. */
  tag?: string;
}

/**
 * Parse `oci:DIR[:TAG]` (a `:` after the last `/` starts the tag).
 *
 * @example
 * ```ts
 * import { parseOciRef } from "./oci_layout.ts";
 * console.log(parseOciRef("oci:/tmp/img:v1")); // { dir: "/tmp/img", tag: "v1" }
 * ```
 */
export function parseOciRef(ref: string): OciRef {
  if (!ref.startsWith("oci:")) throw new Error(`${JSON.stringify(ref)}: expected oci:DIR[:TAG]`);
  const rest = ref.slice(4);
  const slash = rest.lastIndexOf("/");
  const colon = rest.indexOf(":", slash + 1);
  const dir = colon < 0 ? rest : rest.slice(0, colon);
  const tag = colon < 0 ? undefined : rest.slice(colon + 1);
  if (dir === "") throw new Error(`${JSON.stringify(ref)}: no directory`);
  if (tag === "") throw new Error(`${JSON.stringify(ref)}: empty tag`);
  return { dir, tag };
}

/** The blobs of an OCI layout directory. */
export function layoutSource(dir: string): BlobSource {
  return {
    name: `oci:${dir}`,
    async open(desc) {
      const path = join(dir, "blobs", "sha256", digestHex(desc.digest, "blob"));
      try {
        return (await Deno.open(path)).readable;
      } catch (e) {
        throw new Error(`blob ${desc.digest}: cannot open ${path}: ${(e as Error).message}`, {
          cause: e,
        });
      }
    },
  };
}

async function readJsonFile(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Import the image `tag` (or the only image) of the OCI layout `dir`. An
 * image index is resolved to this host's platform. The image is named
 * `opts.names`, else the tag.
 *
 * @example
 * ```ts
 * import { openDriver } from "../../mod.ts";
 * import { ImageStore } from "./store.ts";
 * import { importOciLayout } from "./oci_layout.ts";
 * const store = await ImageStore.open(await openDriver("auto", "/var/lib/strata"));
 * const r = await importOciLayout(store, { dir: "/tmp/busybox", tag: "latest" });
 * console.log(r.image.digest);
 * ```
 */
export async function importOciLayout(
  store: ImageStore,
  ref: OciRef,
  opts: IngestOptions = {},
): Promise<IngestResult> {
  const { dir, tag } = ref;
  const layout = JSON.parse(new TextDecoder().decode(await readJsonFile(join(dir, "oci-layout"))));
  if (layout?.imageLayoutVersion !== "1.0.0") {
    throw new Error(
      `${dir}/oci-layout: imageLayoutVersion ${layout?.imageLayoutVersion} is not 1.0.0`,
    );
  }
  const top = parseManifestOrIndex(
    await readJsonFile(join(dir, "index.json")),
    `${dir}/index.json`,
  );
  if (top.kind !== "index") throw new Error(`${dir}/index.json: not an image index`);
  const entries = top.index.manifests;
  let desc: Descriptor | undefined;
  if (tag !== undefined) {
    desc = entries.find((m) => m.annotations?.[REF_NAME] === tag);
    if (!desc) {
      const tags = entries.map((m) => m.annotations?.[REF_NAME]).filter((t) => t);
      throw new Error(
        `oci:${dir}: no image tagged ${JSON.stringify(tag)} (tags: ${tags.join(", ") || "none"})`,
      );
    }
  } else if (entries.length === 1) {
    desc = entries[0];
  } else {
    throw new Error(
      `oci:${dir}: ${entries.length} images in index.json: name one with oci:DIR:TAG`,
    );
  }
  const source = layoutSource(dir);
  let bytes = await readVerified(source, desc, "manifest", opts.signal);
  let doc = parseManifestOrIndex(bytes, `manifest ${desc.digest}`, desc.mediaType);
  for (let depth = 0; doc.kind === "index"; depth++) {
    if (depth > 4) throw new Error(`oci:${dir}: indexes nested too deep`);
    desc = pickPlatform(doc.index, `index ${desc.digest} of oci:${dir}`);
    bytes = await readVerified(source, desc, "manifest", opts.signal);
    doc = parseManifestOrIndex(bytes, `manifest ${desc.digest}`, desc.mediaType);
  }
  const names = opts.names ?? (tag !== undefined ? [tag] : []);
  return await ingestImage(
    store,
    source,
    { mediaType: doc.mediaType, digest: desc.digest, size: bytes.length },
    bytes,
    doc.manifest,
    { ...opts, names },
  );
}

/** Write `data` as a blob of the layout (temp file, rename); skipped when present. */
async function writeLayoutBlob(blobDir: string, digest: string, data: Uint8Array): Promise<void> {
  const path = join(blobDir, digestHex(digest));
  if (await exists(path)) return;
  const tmp = join(blobDir, tempName());
  await Deno.writeFile(tmp, data, { mode: 0o644 });
  await Deno.rename(tmp, path);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Copy stream `s` into the layout as a blob, verifying it is `desc`. */
async function copyLayoutBlob(
  blobDir: string,
  desc: Descriptor,
  s: ReadableStream<Uint8Array>,
  what: string,
  signal?: AbortSignal,
): Promise<void> {
  const path = join(blobDir, digestHex(desc.digest));
  if (await exists(path)) {
    await s.cancel();
    return;
  }
  const tmp = join(blobDir, tempName());
  const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
  try {
    const v = verifying(what, desc);
    await s.pipeThrough(v.stream, { signal }).pipeTo(f.writable, { signal });
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Options of {@linkcode exportOciLayout}. */
export interface ExportOptions {
  /** Cancels the export. */
  signal?: AbortSignal;
  /** Told about each layer done. */
  onLayer?: (index: number, digest: string) => void;
}

/**
 * Write image `ref` of the store to the OCI layout `dir` (made when missing;
 * an existing layout gains the image, replacing the entry with the same tag).
 * Original layer blobs are copied as they were imported; a layer whose blob
 * is not in the store is re-made (gzip) from the layer's original tar, which
 * the driver keeps as a tar-split record; it must give the layer's diff id,
 * else the export fails naming it. A re-made blob changes the manifest digest. Returns the manifest descriptor.
 *
 * @example
 * ```ts
 * import { openDriver } from "../../mod.ts";
 * import { ImageStore } from "./store.ts";
 * import { exportOciLayout } from "./oci_layout.ts";
 * const store = await ImageStore.open(await openDriver("auto", "/var/lib/strata"));
 * await exportOciLayout(store, "app:1", { dir: "/tmp/out", tag: "1" });
 * ```
 */
export async function exportOciLayout(
  store: ImageStore,
  ref: string,
  out: OciRef,
  opts: ExportOptions = {},
): Promise<Descriptor> {
  const img = await store.resolve(ref);
  const { manifest, config, manifestBytes } = await imageDocuments(store, img);
  const blobDir = join(out.dir, "blobs", "sha256");
  await Deno.mkdir(blobDir, { recursive: true });
  let newManifest: Manifest | undefined;
  for (const [i, desc] of manifest.layers.entries()) {
    opts.signal?.throwIfAborted();
    const what = `layer ${i + 1} blob ${desc.digest} of image ${img.digest}`;
    if (await store.hasBlob(desc.digest)) {
      await copyLayoutBlob(blobDir, desc, await store.openBlob(desc.digest), what, opts.signal);
    } else {
      const remade = await remakeLayer(store, img.layers[i], i > 0 ? img.layers[i - 1] : null, {
        blobDir,
        diffId: config.rootfs.diff_ids[i],
        what,
        docker: desc.mediaType.startsWith("application/vnd.docker."),
      });
      newManifest ??= structuredClone(manifest);
      newManifest.layers[i] = { ...remade, annotations: desc.annotations };
    }
    opts.onLayer?.(i, desc.digest);
  }
  await writeLayoutBlob(blobDir, img.config, await store.readBlob(img.config));
  let bytes = manifestBytes;
  let mediaType = img.mediaType;
  if (newManifest) {
    bytes = new TextEncoder().encode(JSON.stringify(newManifest));
    mediaType = newManifest.mediaType ?? mediaType;
  }
  const digest = "sha256:" + (await sha256Hex(bytes));
  await writeLayoutBlob(blobDir, digest, bytes);
  const tag = out.tag ?? img.names.map((n) => n.slice(n.lastIndexOf("/") + 1))
    .map((n) => (n.includes(":") ? n.slice(n.indexOf(":") + 1) : undefined))
    .find((t) => t !== undefined);
  const entry: Descriptor = {
    mediaType,
    digest,
    size: bytes.length,
    ...(tag !== undefined ? { annotations: { [REF_NAME]: tag } } : {}),
  };
  await writeIndex(out.dir, entry, tag);
  return entry;
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const h = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(h), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Write `oci-layout` and `index.json` with `entry` (replacing one of the same tag). */
async function writeIndex(dir: string, entry: Descriptor, tag: string | undefined): Promise<void> {
  const layoutPath = join(dir, "oci-layout");
  if (!(await exists(layoutPath))) {
    await Deno.writeTextFile(layoutPath, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  }
  const indexPath = join(dir, "index.json");
  let index: Index = { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [] };
  if (await exists(indexPath)) {
    const doc = parseManifestOrIndex(await Deno.readFile(indexPath), indexPath);
    if (doc.kind !== "index" || !isIndexType(doc.mediaType)) {
      throw new Error(`${indexPath}: not an image index`);
    }
    index = doc.index;
  }
  index.manifests = index.manifests.filter((m) =>
    tag === undefined ? m.digest !== entry.digest : m.annotations?.[REF_NAME] !== tag
  );
  index.manifests.push(entry);
  const tmp = join(dir, tempName());
  await Deno.writeTextFile(tmp, JSON.stringify(index));
  await Deno.rename(tmp, indexPath);
}

/**
 * Re-make a layer blob (gzip) from the driver's diff of layer `chainId`
 * against `parent`; its uncompressed sha256 must be `diffId`.
 */
async function remakeLayer(
  store: ImageStore,
  chainId: string,
  parent: string | null,
  args: { blobDir: string; diffId: string; what: string; docker: boolean },
): Promise<Descriptor> {
  const id = layerIdOf(chainId);
  // The original tar (tar-split) when the layer kept its record; its diff id is checked below.
  const tarStream = await store.driver.diff(id, parent ? layerIdOf(parent) : "", {
    source: "original",
  });
  const tar = verifying(`${args.what}: the layer's original tar`, {
    digest: args.diffId,
  });
  const gz = verifying(args.what);
  const tmp = join(args.blobDir, tempName());
  const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
  try {
    await tarStream.pipeThrough(tar.stream).pipeThrough(compressor("gzip")).pipeThrough(gz.stream)
      .pipeTo(f.writable);
    await Deno.rename(tmp, join(args.blobDir, digestHex(gz.result.digest)));
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`${args.what} is not in the store: ${(e as Error).message}`, { cause: e });
  }
  return {
    mediaType: args.docker ? MEDIA.dockerLayerGzip : MEDIA.ociLayerGzip,
    digest: gz.result.digest,
    size: gz.result.size,
  };
}
