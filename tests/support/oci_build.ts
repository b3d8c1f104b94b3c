/**
 * Tiny OCI images for the image tests: layer tars made by GNU tar from small
 * trees (deterministic: sorted, mtime 0, root owner), compressed with gzip or
 * zstd, written as an OCI image layout, plus a driver root to import into.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { compressor, type LayerCompression, MEDIA } from "../../lib/image/compression.ts";
import { withOverlay } from "./overlay_harness.ts";
import type { OverlayDriver } from "../../lib/overlay/driver.ts";
import { ImageStore } from "../../lib/image/store.ts";

/** Files of one layer: path → content (a string), or null for a whiteout of that path. */
export type LayerFiles = Record<string, string | null>;

/** One blob as written. */
export interface BuiltBlob {
  digest: string;
  size: number;
  bytes: Uint8Array;
}

/** What {@linkcode buildImage} made. */
export interface BuiltImage {
  manifest: BuiltBlob & { mediaType: string };
  config: BuiltBlob;
  layers: (BuiltBlob & { diffId: string; mediaType: string; tar: Uint8Array })[];
}

function sha(b: Uint8Array | string): string {
  return "sha256:" + createHash("sha256").update(b).digest("hex");
}

async function collect(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

/** A deterministic layer tar of `files`, by GNU tar. */
export async function layerTar(files: LayerFiles): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir({ prefix: "strata-layer-" });
  try {
    for (const [path, content] of Object.entries(files)) {
      const full = join(dir, path);
      await Deno.mkdir(join(full, ".."), { recursive: true });
      if (content === null) {
        const slash = full.lastIndexOf("/");
        await Deno.writeFile(
          join(full.slice(0, slash), ".wh." + full.slice(slash + 1)),
          new Uint8Array(),
        );
      } else await Deno.writeTextFile(full, content);
    }
    const out = await new Deno.Command("tar", {
      args: [
        "-C",
        dir,
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        "-cf",
        "-",
        ".",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return out.stdout;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Compress `tar` with `kind`. */
export async function compress(tar: Uint8Array, kind: LayerCompression): Promise<Uint8Array> {
  return await collect(
    new Blob([tar as Uint8Array<ArrayBuffer>]).stream().pipeThrough(compressor(kind)),
  );
}

const LAYER_TYPE: Record<LayerCompression, string> = {
  none: MEDIA.ociLayer,
  gzip: MEDIA.ociLayerGzip,
  zstd: MEDIA.ociLayerZstd,
};

/** Build the blobs of an image of `layers` (each compressed as given, default gzip). */
export async function buildImage(
  layers: { files: LayerFiles; compression?: LayerCompression }[],
  opts: { docker?: boolean; label?: string } = {},
): Promise<BuiltImage> {
  const built: BuiltImage["layers"] = [];
  for (const l of layers) {
    const tar = await layerTar(l.files);
    const kind = l.compression ?? "gzip";
    const bytes = await compress(tar, kind);
    built.push({
      tar,
      bytes,
      digest: sha(bytes),
      size: bytes.length,
      diffId: sha(tar),
      mediaType: opts.docker ? MEDIA.dockerLayerGzip : LAYER_TYPE[kind],
    });
  }
  const config = new TextEncoder().encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: { Labels: { test: opts.label ?? "strata" } },
    rootfs: { type: "layers", diff_ids: built.map((l) => l.diffId) },
    history: built.map((_, i) => ({ created_by: `layer ${i}` })),
  }));
  const manifestType = opts.docker ? MEDIA.dockerManifest : MEDIA.ociManifest;
  const manifest = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: manifestType,
    config: {
      mediaType: opts.docker ? MEDIA.dockerConfig : MEDIA.ociConfig,
      digest: sha(config),
      size: config.length,
    },
    layers: built.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  }));
  return {
    manifest: {
      bytes: manifest,
      digest: sha(manifest),
      size: manifest.length,
      mediaType: manifestType,
    },
    config: { bytes: config, digest: sha(config), size: config.length },
    layers: built,
  };
}

/** Write `img` as an OCI layout in `dir` tagged `tag` (more images may be added to one dir). */
export async function writeLayout(dir: string, img: BuiltImage, tag: string): Promise<void> {
  const blobs = join(dir, "blobs", "sha256");
  await Deno.mkdir(blobs, { recursive: true });
  await Deno.writeTextFile(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  for (const b of [img.manifest, img.config, ...img.layers]) {
    await Deno.writeFile(join(blobs, b.digest.slice(7)), b.bytes);
  }
  const indexPath = join(dir, "index.json");
  let index = { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [] as unknown[] };
  try {
    index = JSON.parse(await Deno.readTextFile(indexPath));
  } catch { /* new layout */ }
  index.manifests.push({
    mediaType: img.manifest.mediaType,
    digest: img.manifest.digest,
    size: img.manifest.size,
    annotations: { "org.opencontainers.image.ref.name": tag },
  });
  await Deno.writeTextFile(indexPath, JSON.stringify(index));
}

/** Run `fn` with an overlay driver on tmpfs and its image store. */
export async function withImageStore(
  fn: (store: ImageStore, driver: OverlayDriver, base: string) => Promise<void>,
): Promise<void> {
  await withOverlay(async (driver, h) => {
    const store = await ImageStore.open(driver);
    await fn(store, driver, h.base);
  }, { tmpfs: true });
}

/** A readable tree summary of `dir`: "path type [content]" lines, sorted. */
export async function treeOf(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(rel: string) {
    for await (const e of Deno.readDir(join(dir, rel))) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      const st = await Deno.lstat(join(dir, p));
      const mode = (st.mode! & 0o7777).toString(8);
      if (e.isDirectory) {
        out.push(`${p} d ${mode}`);
        await walk(p);
      } else if (e.isSymlink) out.push(`${p} l ${await Deno.readLink(join(dir, p))}`);
      else out.push(`${p} f ${mode} ${await Deno.readTextFile(join(dir, p))}`);
    }
  }
  await walk("");
  return out.sort();
}
