/**
 * Layer blob compression for images: gzip and zstd through Deno's
 * `node:zlib`, wrapped as web `TransformStream`s, and the mapping from OCI and
 * Docker layer media types to the compression they use.
 *
 * @module
 */

import * as zlib from "node:zlib";

/** How a layer blob is compressed. */
export type LayerCompression = "none" | "gzip" | "zstd";

/** OCI and Docker media types strata reads and writes. */
export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
} as const;

const LAYER_TYPES: Record<string, LayerCompression> = {
  [MEDIA.ociLayer]: "none",
  [MEDIA.ociLayerGzip]: "gzip",
  [MEDIA.ociLayerZstd]: "zstd",
  [MEDIA.dockerLayer]: "none",
  [MEDIA.dockerLayerGzip]: "gzip",
  // Non-distributable variants carry the same bytes.
  "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
};

/**
 * The compression of a layer media type; throws naming `what` for a type
 * that is not a layer strata knows.
 *
 * @example
 * ```ts
 * import { layerCompression } from "./compression.ts";
 * console.log(layerCompression("application/vnd.oci.image.layer.v1.tar+zstd")); // zstd
 * ```
 */
export function layerCompression(mediaType: string, what = "layer"): LayerCompression {
  const c = LAYER_TYPES[mediaType];
  if (c === undefined) {
    throw new Error(`${what}: unsupported layer media type ${JSON.stringify(mediaType)}`);
  }
  return c;
}

/** Output chunk size of the zlib streams (fewer, larger chunks downstream). */
const CHUNK = 256 * 1024;

/** Wrap a node zlib transform as a web TransformStream (errors pass through). */
function fromNode(make: () => zlib.Gunzip | zlib.Gzip): TransformStream<Uint8Array, Uint8Array> {
  let z: ReturnType<typeof make>;
  let failure: Error | undefined;
  return new TransformStream<Uint8Array, Uint8Array>({
    start(controller) {
      z = make();
      z.on("data", (c: Uint8Array) => {
        controller.enqueue(new Uint8Array(c.buffer, c.byteOffset, c.byteLength));
      });
      z.on("error", (e: Error) => {
        failure = e;
        try {
          controller.error(e);
        } catch {
          // already errored or closed
        }
      });
    },
    transform(chunk) {
      if (failure) throw failure;
      return new Promise<void>((resolve, reject) => {
        z.write(chunk, (e?: Error | null) => (e ? reject(e) : resolve()));
      });
    },
    flush() {
      if (failure) throw failure;
      return new Promise<void>((resolve, reject) => {
        z.once("end", () => resolve());
        z.once("error", reject);
        z.end();
      });
    },
    cancel() {
      z.destroy();
    },
  });
}

/**
 * A stream that undoes `kind` (identity for `"none"`).
 *
 * @example
 * ```ts
 * import { compressor, decompressor } from "./compression.ts";
 * const data = new TextEncoder().encode("layer");
 * const back = new Blob([data]).stream().pipeThrough(compressor("zstd"))
 *   .pipeThrough(decompressor("zstd"));
 * console.log(new TextDecoder().decode(await new Response(back).arrayBuffer())); // layer
 * ```
 */
export function decompressor(kind: LayerCompression): TransformStream<Uint8Array, Uint8Array> {
  if (kind === "gzip") return fromNode(() => zlib.createGunzip({ chunkSize: CHUNK }));
  if (kind === "zstd") {
    return fromNode(() =>
      zlib.createZstdDecompress({ chunkSize: CHUNK }) as unknown as zlib.Gunzip
    );
  }
  return new TransformStream();
}

/**
 * A stream that compresses with `kind` (identity for `"none"`). gzip output
 * carries no name and no time, so the same tar gives the same blob.
 *
 * @example
 * ```ts
 * import { compressor } from "./compression.ts";
 * const gz = new Blob(["x"]).stream().pipeThrough(compressor("gzip"));
 * console.log((await new Response(gz).arrayBuffer()).byteLength > 0); // true
 * ```
 */
export function compressor(kind: LayerCompression): TransformStream<Uint8Array, Uint8Array> {
  if (kind === "gzip") return fromNode(() => zlib.createGzip({ chunkSize: CHUNK }));
  if (kind === "zstd") {
    return fromNode(() => zlib.createZstdCompress({ chunkSize: CHUNK }) as unknown as zlib.Gzip);
  }
  return new TransformStream();
}
