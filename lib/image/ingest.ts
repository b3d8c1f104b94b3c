/**
 * Bringing an image into the store from any source of blobs (an OCI layout
 * directory, a registry, the store itself): the manifest and config are
 * checked against their digests, then each layer is streamed once through
 * the compressed-digest check (and into the blob store), the decompressor and
 * the diff-id check into `applyDiff` of a new layer named by its chain id. A
 * layer that exists already is reused. A failed layer is removed; while it is
 * being filled the driver marks it incomplete, so a crash leaves nothing that
 * `strata check` does not report.
 *
 * @module
 */

import type { Driver } from "../driver.ts";
import { decompressor, layerCompression } from "./compression.ts";
import { chainIds, verifying } from "./digest.ts";
import { type ImageConfig, type Manifest, parseConfig } from "./manifest.ts";
import { type Descriptor, type ImageRecord, type ImageStore, layerIdOf } from "./store.ts";

/** Where blobs come from. */
export interface BlobSource {
  /** Names the source in messages (e.g. `oci:/tmp/x`). */
  readonly name: string;
  /** A stream of blob `desc` (not yet verified). */
  open(desc: Descriptor, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
}

/** Progress of one layer. */
export interface LayerProgress {
  /** 0-based index in the manifest. */
  index: number;
  /** The layer's blob digest. */
  digest: string;
  /** Bytes of the blob done so far. */
  done: number;
  /** Blob size. */
  total: number;
  /** `"reused"`, `"applying"`, `"done"` ... */
  phase: string;
}

/** Options of {@linkcode ingestImage}. */
export interface IngestOptions {
  /** Names to give the image. */
  names?: string[];
  /** Registry repositories the image came from (for blob mounts on push). */
  sources?: string[];
  /** Cancels the import (a partly applied layer is removed). */
  signal?: AbortSignal;
  /** Told about each layer's progress. */
  onProgress?: (p: LayerProgress) => void;
}

/** What {@linkcode ingestImage} did. */
export interface IngestResult {
  /** The image as recorded. */
  image: ImageRecord;
  /** Per layer: its chain id and whether it existed already. */
  layers: { chainId: string; reused: boolean }[];
}

const decoder = new TextDecoder();

/** Read a small blob from `source`, verified; at most `limit` bytes. */
export async function readVerified(
  source: BlobSource,
  desc: Descriptor,
  what: string,
  signal?: AbortSignal,
  limit = 16 << 20,
): Promise<Uint8Array> {
  if (desc.size > limit) throw new Error(`${what} ${desc.digest}: ${desc.size} bytes is too big`);
  const v = verifying(`${what} ${desc.digest} from ${source.name}`, desc);
  const stream = (await source.open(desc, signal)).pipeThrough(v.stream);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * Apply layer `desc` (compressed blob) as the layer `chainId` on `parent`,
 * reading `open()`'s stream once: its digest and size are checked on the way,
 * its bytes are kept as a blob when `keepBlob`, and the uncompressed tar's
 * sha256 must be `diffId`. Reuses an existing complete layer. On any failure
 * the new layer and the partial blob are removed and the error names the blob.
 */
export async function ingestLayer(
  store: ImageStore,
  args: {
    chainId: string;
    parent: string | null;
    diffId: string;
    desc: Descriptor;
    open: () => Promise<ReadableStream<Uint8Array>>;
    what: string;
    keepBlob?: boolean;
    signal?: AbortSignal;
    onBytes?: (n: number) => void;
  },
): Promise<{ reused: boolean }> {
  return await store.withLayerLock(args.chainId, () => ingestLocked(store, args));
}

async function ingestLocked(
  store: ImageStore,
  args: Parameters<typeof ingestLayer>[1],
): Promise<{ reused: boolean }> {
  const driver: Driver = store.driver;
  const id = layerIdOf(args.chainId);
  const parentId = args.parent ? layerIdOf(args.parent) : "";
  // A complete layer of this chain id holds verified content (applyDiff
  // succeeds only when the diff id matched), with or without its record.
  const haveLayer = await driver.exists(id);
  const rec = (await store.layer(args.chainId)) ??
    { chainId: args.chainId, diffId: args.diffId, parent: args.parent, blobs: [] };
  const keepBlob = (args.keepBlob ?? true) && !(await store.hasBlob(args.desc.digest));
  if (haveLayer && !keepBlob) {
    await store.addLayerBlob(rec, args.desc);
    return { reused: true };
  }
  const compression = layerCompression(args.desc.mediaType, args.what);
  const writer = keepBlob ? await store.blobWriter() : undefined;
  const compressed = verifying(`${args.what} blob ${args.desc.digest}`, args.desc, async (c) => {
    args.onBytes?.(c.length);
    if (writer) await writer.write(c);
  });
  const tar = verifying(`${args.what} ${args.desc.digest} (uncompressed; diff id)`, {
    digest: args.diffId,
  });
  let created = false;
  try {
    args.signal?.throwIfAborted();
    const raw = await args.open();
    const stream = raw.pipeThrough(compressed.stream, { signal: args.signal })
      .pipeThrough(decompressor(compression))
      .pipeThrough(tar.stream);
    if (haveLayer) {
      // Only the blob is new: drain it through the checks.
      for await (const _ of stream) { /* verified on the way */ }
    } else {
      await driver.remove(id); // an incomplete leftover of an earlier attempt
      await driver.create(id, parentId, { incomplete: "image import" });
      created = true;
      await driver.applyDiff(id, parentId, stream);
    }
    if (writer) await writer.commit(args.desc.digest);
  } catch (e) {
    await writer?.abort();
    if (created) await driver.remove(id).catch(() => {});
    throw e;
  }
  await store.addLayerBlob(rec, args.desc);
  return { reused: haveLayer };
}

/**
 * Import the image whose manifest is `manifestBytes` (already verified
 * against `manifestDesc.digest` by the caller) from `source`: config, then
 * layers bottom up.
 */
export async function ingestImage(
  store: ImageStore,
  source: BlobSource,
  manifestDesc: Descriptor,
  manifestBytes: Uint8Array,
  manifest: Manifest,
  opts: IngestOptions = {},
): Promise<IngestResult> {
  const what = `image ${manifestDesc.digest} from ${source.name}`;
  const configBytes = await readVerified(source, manifest.config, "config", opts.signal);
  const config: ImageConfig = parseConfig(configBytes, `${what} config`, manifest.layers.length);
  const chains = chainIds(config.rootfs.diff_ids);
  const results: { chainId: string; reused: boolean }[] = [];
  for (const [i, desc] of manifest.layers.entries()) {
    let done = 0;
    const report = (phase: string) =>
      opts.onProgress?.({ index: i, digest: desc.digest, done, total: desc.size, phase });
    report("start");
    const r = await ingestLayer(store, {
      chainId: chains[i],
      parent: i === 0 ? null : chains[i - 1],
      diffId: config.rootfs.diff_ids[i],
      desc,
      open: () => source.open(desc, opts.signal),
      what: `layer ${i + 1} of ${what}`,
      signal: opts.signal,
      onBytes: (n) => {
        done += n;
        report("applying");
      },
    });
    report(r.reused ? "reused" : "done");
    results.push({ chainId: chains[i], ...r });
  }
  await store.putBlob(configBytes);
  const digest = await store.putBlob(manifestBytes);
  if (digest !== manifestDesc.digest) {
    throw new Error(`${what}: manifest hashes to ${digest}`);
  }
  const image = await store.putImage({
    digest,
    mediaType: manifestDesc.mediaType,
    size: manifestBytes.length,
    config: manifest.config.digest,
    layers: chains,
    names: opts.names ?? [],
    created: new Date().toISOString(),
    sources: opts.sources ?? [],
  });
  return { image, layers: results };
}

/** The manifest and config of a stored image. */
export async function imageDocuments(
  store: ImageStore,
  img: ImageRecord,
): Promise<{ manifest: Manifest; config: ImageConfig; manifestBytes: Uint8Array }> {
  const manifestBytes = await store.readBlob(img.digest);
  const manifest = JSON.parse(decoder.decode(manifestBytes)) as Manifest;
  const config = JSON.parse(decoder.decode(await store.readBlob(img.config))) as ImageConfig;
  return { manifest, config, manifestBytes };
}
