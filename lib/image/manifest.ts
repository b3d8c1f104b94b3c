/**
 * Image manifests, indexes and configs: parsing with the checks strata relies
 * on (media types, sha256 digests, one diff id per layer), and the choice of
 * this host's platform from an index.
 *
 * @module
 */

import { layerCompression, MEDIA } from "./compression.ts";
import { digestHex } from "./digest.ts";
import type { Descriptor, Platform } from "./store.ts";

/** An image manifest (OCI or Docker schema 2). */
export interface Manifest {
  /** Always 2. */
  schemaVersion: number;
  /** The manifest's media type. */
  mediaType?: string;
  /** The image config blob. */
  config: Descriptor;
  /** The layer blobs, bottom first. */
  layers: Descriptor[];
  /** Free-form key/values. */
  annotations?: Record<string, string>;
}

/** An image index (OCI) or manifest list (Docker). */
export interface Index {
  /** Always 2. */
  schemaVersion: number;
  /** The index's media type. */
  mediaType?: string;
  /** The manifests it lists (with platforms). */
  manifests: Descriptor[];
  /** Free-form key/values. */
  annotations?: Record<string, string>;
}

/** The parts of an image config strata reads; the rest is kept as it is. */
export interface ImageConfig {
  /** CPU architecture. */
  architecture?: string;
  /** Operating system. */
  os?: string;
  /** The layers' uncompressed digests, bottom first. */
  rootfs: { type: string; diff_ids: string[] };
  /** One entry per build step. */
  history?: { created?: string; created_by?: string; empty_layer?: boolean; comment?: string }[];
  /** When the image was made. */
  created?: string;
  /** How to run it (Env, Cmd, Labels, ...). */
  config?: Record<string, unknown>;
  /** Everything else, kept as it was. */
  [key: string]: unknown;
}

const decoder = new TextDecoder();

function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(decoder.decode(bytes));
  } catch (e) {
    throw new Error(`${what}: not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new Error(`${what}: not a JSON object`);
  }
  return v as Record<string, unknown>;
}

function checkDescriptor(d: unknown, what: string): Descriptor {
  if (typeof d !== "object" || d === null) throw new Error(`${what}: not a descriptor`);
  const x = d as Descriptor;
  digestHex(x.digest, what);
  if (typeof x.mediaType !== "string") throw new Error(`${what}: no mediaType`);
  if (!Number.isSafeInteger(x.size) || x.size < 0) {
    throw new Error(`${what}: bad size ${JSON.stringify(x.size)}`);
  }
  return x;
}

/** True for the media types of an index or manifest list. */
export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList;
}

/** True for the media types of an image manifest. */
export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA.ociManifest || mediaType === MEDIA.dockerManifest;
}

/**
 * Parse `bytes` as an index or a manifest. `mediaType` (from a descriptor or
 * a Content-Type) is used when the document does not name its own.
 *
 * @example
 * ```ts
 * import { parseManifestOrIndex } from "./manifest.ts";
 * const doc = parseManifestOrIndex(new TextEncoder().encode(
 *   '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}',
 * ), "index.json");
 * console.log(doc.kind); // index
 * ```
 */
export function parseManifestOrIndex(
  bytes: Uint8Array,
  what: string,
  mediaType?: string,
): { kind: "index"; index: Index; mediaType: string } | {
  kind: "manifest";
  manifest: Manifest;
  mediaType: string;
} {
  const v = parseJson(bytes, what);
  if (v.schemaVersion !== 2) {
    throw new Error(`${what}: schemaVersion ${JSON.stringify(v.schemaVersion)} is not supported`);
  }
  const type = (typeof v.mediaType === "string" ? v.mediaType : undefined) ??
    (mediaType && mediaType !== "application/json" ? mediaType : undefined) ??
    (Array.isArray(v.manifests) ? MEDIA.ociIndex : MEDIA.ociManifest);
  if (isIndexType(type) || (Array.isArray(v.manifests) && !("layers" in v))) {
    if (!Array.isArray(v.manifests)) throw new Error(`${what}: index without manifests`);
    v.manifests.forEach((d, i) => checkDescriptor(d, `${what} manifests[${i}]`));
    return { kind: "index", index: v as unknown as Index, mediaType: type };
  }
  if (!isManifestType(type)) {
    throw new Error(`${what}: unsupported manifest media type ${JSON.stringify(type)}`);
  }
  checkDescriptor(v.config, `${what} config`);
  if (!Array.isArray(v.layers)) throw new Error(`${what}: manifest without layers`);
  v.layers.forEach((d, i) => {
    const desc = checkDescriptor(d, `${what} layers[${i}]`);
    layerCompression(desc.mediaType, `${what} layers[${i}]`);
  });
  return { kind: "manifest", manifest: v as unknown as Manifest, mediaType: type };
}

/**
 * Parse an image config and check it has one sha256 diff id per layer.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./manifest.ts";
 * const c = parseConfig(new TextEncoder().encode(
 *   '{"rootfs":{"type":"layers","diff_ids":[]}}',
 * ), "config", 0);
 * console.log(c.rootfs.diff_ids.length); // 0
 * ```
 */
export function parseConfig(bytes: Uint8Array, what: string, layers: number): ImageConfig {
  const v = parseJson(bytes, what) as unknown as ImageConfig;
  const ids = v.rootfs?.diff_ids;
  if (!Array.isArray(ids)) throw new Error(`${what}: no rootfs.diff_ids`);
  if (ids.length !== layers) {
    throw new Error(`${what}: ${ids.length} diff ids for ${layers} layers in the manifest`);
  }
  ids.forEach((d, i) => digestHex(d, `${what} rootfs.diff_ids[${i}]`));
  return v;
}

/**
 * This host's platform in OCI terms (`linux`/`amd64`, `linux`/`arm64`, ...).
 *
 * @example
 * ```ts
 * import { hostPlatform } from "./manifest.ts";
 * console.log(hostPlatform().os); // linux
 * ```
 */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x86_64: "amd64", aarch64: "arm64" };
  return {
    os: Deno.build.os === "linux" ? "linux" : Deno.build.os,
    architecture: arch[Deno.build.arch] ?? Deno.build.arch,
    ...(Deno.build.arch === "aarch64" ? { variant: "v8" } : {}),
  };
}

/**
 * The manifest descriptor of `index` for `platform` (default: this host).
 * An entry without a platform is taken only when it is the only one.
 *
 * @example
 * ```ts
 * import { pickPlatform } from "./manifest.ts";
 * const d = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "a".repeat(64), size: 1 };
 * console.log(pickPlatform({ schemaVersion: 2, manifests: [d] }, "x").digest === d.digest); // true
 * ```
 */
export function pickPlatform(
  index: Index,
  what: string,
  platform: Platform = hostPlatform(),
): Descriptor {
  const images = index.manifests.filter((m) =>
    isManifestType(m.mediaType) || isIndexType(m.mediaType)
  );
  const matches = images.filter((m) =>
    m.platform && m.platform.os === platform.os &&
    m.platform.architecture === platform.architecture &&
    (!platform.variant || !m.platform.variant || m.platform.variant === platform.variant)
  );
  if (matches.length > 0) return matches[0];
  const plain = images.filter((m) => !m.platform);
  if (plain.length === 1 && images.length === 1) return plain[0];
  const have = images.map((m) =>
    m.platform ? `${m.platform.os}/${m.platform.architecture}` : "(no platform)"
  );
  throw new Error(
    `${what}: no image for ${platform.os}/${platform.architecture} (has: ${
      have.join(", ") || "none"
    })`,
  );
}
