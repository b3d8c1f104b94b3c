/**
 * `commitLayer`: a new image from a layer's changes against its parent. The
 * parent must be an image layer (its id a chain id of the store); the new
 * image is the image of that parent plus one gzip layer holding the diff,
 * whose content becomes a store layer of its own (named by its chain id), so
 * the image stays valid after the source layer is removed.
 *
 * @module
 */

import { compressor, MEDIA } from "./compression.ts";
import { sha256Digest, verifying } from "./digest.ts";
import { imageDocuments, ingestLayer } from "./ingest.ts";
import type { ImageConfig, Manifest } from "./manifest.ts";
import { hostPlatform } from "./manifest.ts";
import type { Descriptor, ImageRecord, ImageStore } from "./store.ts";
import { layerIdOf } from "./store.ts";

/** Options of {@linkcode commitLayer}. */
export interface CommitOptions {
  /** The parent of `layer` (default: read from the driver's chain file). */
  parent?: string;
  /** The history entry's `created_by`. */
  createdBy?: string;
  /** Cancels the commit. */
  signal?: AbortSignal;
}

async function parentOf(store: ImageStore, layer: string): Promise<string> {
  const d = store.driver as { store?: { parents(id: string): Promise<string[]> } };
  if (!d.store) throw new Error(`commit ${layer}: the driver does not tell parents; pass one`);
  return (await d.store.parents(layer))[0] ?? "";
}

/**
 * Make image `name` from layer `layer`'s diff against its parent.
 *
 * @example
 * ```ts
 * import { openDriver } from "../../mod.ts";
 * import { ImageStore } from "./store.ts";
 * import { commitLayer } from "./commit.ts";
 * const store = await ImageStore.open(await openDriver("auto", "/var/lib/strata"));
 * const img = await commitLayer(store, "my-container", "app:2");
 * console.log(img.digest);
 * ```
 */
export async function commitLayer(
  store: ImageStore,
  layer: string,
  name: string,
  opts: CommitOptions = {},
): Promise<ImageRecord> {
  const driver = store.driver;
  if (!(await driver.exists(layer))) {
    throw new Error(`commit: layer ${JSON.stringify(layer)} not found`);
  }
  const parentId = opts.parent ?? await parentOf(store, layer);
  // The base: the parent's chain of image layers, and an image with exactly that chain if any.
  const baseChain: string[] = [];
  if (parentId !== "") {
    let rec = await store.layer(`sha256:${parentId}`).catch(() => undefined);
    if (!rec) {
      throw new Error(
        `commit ${layer}: its parent ${parentId} is not an image layer (create it with --image)`,
      );
    }
    while (rec) {
      baseChain.unshift(rec.chainId);
      rec = rec.parent ? await store.layer(rec.parent) : undefined;
    }
  }
  const baseImage = (await store.images()).find((i) =>
    i.layers.length === baseChain.length && i.layers.every((c, k) => c === baseChain[k])
  );
  let config: ImageConfig;
  let manifest: Manifest;
  if (baseImage) {
    const docs = await imageDocuments(store, baseImage);
    config = structuredClone(docs.config);
    manifest = structuredClone(docs.manifest);
  } else {
    const p = hostPlatform();
    config = {
      architecture: p.architecture,
      os: p.os,
      rootfs: { type: "layers", diff_ids: [] },
      history: [],
    };
    manifest = {
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: "", size: 0 },
      layers: [],
    };
    for (const chainId of baseChain) {
      const rec = (await store.layer(chainId))!;
      const blob = rec.blobs.find((b) => b.digest);
      if (!blob) throw new Error(`commit ${layer}: base layer ${chainId} has no stored blob`);
      config.rootfs.diff_ids.push(rec.diffId);
      manifest.layers.push(blob);
    }
  }
  const docker = manifest.mediaType === MEDIA.dockerManifest;

  // The diff, gzip'd into a blob; its diff id and blob digest computed on the way.
  const tar = verifying(`diff of layer ${layer}`);
  const gz = verifying(`blob of layer ${layer}`);
  const writer = await store.blobWriter();
  try {
    const stream = await driver.diff(layer, parentId);
    await stream.pipeThrough(tar.stream, { signal: opts.signal }).pipeThrough(compressor("gzip"))
      .pipeThrough(gz.stream).pipeTo(
        new WritableStream({ write: (c) => writer.write(c) }),
      );
    await writer.commit(gz.result.digest);
  } catch (e) {
    await writer.abort();
    throw e;
  }
  const diffId = tar.result.digest;
  const desc: Descriptor = {
    mediaType: docker ? MEDIA.dockerLayerGzip : MEDIA.ociLayerGzip,
    digest: gz.result.digest,
    size: gz.result.size,
  };
  const parentChain = baseChain.at(-1) ?? null;
  const chainId = parentChain ? sha256Digest(`${parentChain} ${diffId}`) : diffId;
  await ingestLayer(store, {
    chainId,
    parent: parentChain,
    diffId,
    desc,
    open: () => store.openBlob(desc.digest),
    what: `committed layer ${layer}`,
    keepBlob: false,
    signal: opts.signal,
  });

  const now = new Date().toISOString();
  config.rootfs.diff_ids.push(diffId);
  config.history = [...(config.history ?? []), {
    created: now,
    created_by: opts.createdBy ?? `strata commit ${layer}`,
  }];
  config.created = now;
  const configBytes = new TextEncoder().encode(JSON.stringify(config));
  const configDigest = await store.putBlob(configBytes);
  manifest.config = {
    mediaType: docker ? MEDIA.dockerConfig : MEDIA.ociConfig,
    digest: configDigest,
    size: configBytes.length,
  };
  manifest.layers.push(desc);
  const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest));
  const digest = await store.putBlob(manifestBytes);
  return await store.putImage({
    digest,
    mediaType: manifest.mediaType ?? MEDIA.ociManifest,
    size: manifestBytes.length,
    config: configDigest,
    layers: [...baseChain, chainId],
    names: [name],
    created: now,
    sources: baseImage?.sources ?? [],
  });
}

/** The id of image `ref`'s top layer (for a read-write layer on top of it). */
export async function imageTopLayer(store: ImageStore, ref: string): Promise<string> {
  const img = await store.resolve(ref);
  const top = img.layers.at(-1);
  if (!top) throw new Error(`image ${ref} has no layers`);
  const id = layerIdOf(top);
  if (!(await store.driver.exists(id))) {
    throw new Error(`image ${ref}: its top layer ${id} is missing (pull or import it again)`);
  }
  return id;
}
