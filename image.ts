/**
 * Images for strata (`@strata/aufs/image`): an image store beside the layers
 * of a driver root, OCI image layouts in and out, and (see
 * `pullImage`/`pushImage`) registries speaking the OCI
 * distribution API. Layers are shared between images by OCI chain id; every
 * blob is verified while it streams.
 *
 * ```ts
 * import { openDriver } from "@strata/aufs";
 * import { exportOciLayout, importOciLayout, ImageStore } from "@strata/aufs/image";
 *
 * const store = await ImageStore.open(await openDriver("auto", "/var/lib/strata"));
 * const { image } = await importOciLayout(store, { dir: "/tmp/alpine", tag: "latest" });
 * await exportOciLayout(store, image.digest, { dir: "/tmp/copy", tag: "latest" });
 * ```
 *
 * @module
 */

export {
  type BlobWriter,
  type Descriptor,
  ImageNotFoundError,
  type ImageRecord,
  ImageStore,
  layerIdOf,
  type LayerRecord,
  type Platform,
} from "./lib/image/store.ts";
export {
  type BlobSource,
  imageDocuments,
  ingestImage,
  ingestLayer,
  type IngestOptions,
  type IngestResult,
  type LayerProgress,
  readVerified,
} from "./lib/image/ingest.ts";
export {
  exportOciLayout,
  type ExportOptions,
  importOciLayout,
  layoutSource,
  type OciRef,
  parseOciRef,
  REF_NAME,
} from "./lib/image/oci_layout.ts";
export {
  chainIds,
  digestHex,
  DigestMismatchError,
  isDigest,
  sha256Digest,
  verifying,
  type VerifyResult,
} from "./lib/image/digest.ts";
export {
  compressor,
  decompressor,
  type LayerCompression,
  layerCompression,
  MEDIA,
} from "./lib/image/compression.ts";
export {
  hostPlatform,
  type ImageConfig,
  type Index,
  isIndexType,
  isManifestType,
  type Manifest,
  parseConfig,
  parseManifestOrIndex,
  pickPlatform,
} from "./lib/image/manifest.ts";
export {
  pullImage,
  type PullResult,
  pushImage,
  type PushResult,
  type TransferOptions,
} from "./lib/image/pull.ts";
export { commitLayer, type CommitOptions, imageTopLayer } from "./lib/image/commit.ts";
export {
  type Credentials,
  credentialsFromAuthFile,
  MANIFEST_ACCEPT,
  parseChallenge,
  RegistryClient,
  RegistryError,
  type RegistryOptions,
  type RequestBody,
  type RequestOptions,
} from "./lib/image/registry.ts";
export {
  formatImageRef,
  type ImageRef,
  isLoopbackHost,
  parseImageRef,
} from "./lib/image/reference.ts";
