/**
 * `pullImage` / `pushImage`: images between the store and a registry.
 *
 * Pull: the manifest (an index is resolved to this host's platform), the
 * config, then the layer blobs, downloaded in parallel (a bounded number in
 * flight) into `images/tmp/<hex>.partial` while their digest is checked —
 * a broken connection resumes with a `Range` request, and so does a later
 * pull after a crash — and applied bottom up, each as soon as it and the one
 * below are there, with the diff id checked while the tar streams into the
 * layer. Push: each layer blob is skipped when the registry has it, mounted
 * from a repository the image came from when it can be, else uploaded; then
 * the config and the manifest (the same bytes: the same digest).
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import { chainIds, digestHex, DigestMismatchError } from "./digest.ts";
import { imageDocuments, ingestLayer, type LayerProgress } from "./ingest.ts";
import { type Manifest, parseConfig, parseManifestOrIndex, pickPlatform } from "./manifest.ts";
import { formatImageRef, parseImageRef } from "./reference.ts";
import { RegistryClient, RegistryError, type RegistryOptions } from "./registry.ts";
import type { Descriptor, ImageRecord, ImageStore, Platform } from "./store.ts";

/** Options of {@linkcode pullImage} and {@linkcode pushImage}. */
export interface TransferOptions extends RegistryOptions {
  /** Layer blobs in flight at once (default 3). */
  jobs?: number;
  /** Told about each layer's progress. */
  onProgress?: (p: LayerProgress) => void;
  /** The platform to pick from an index (default: this host's). */
  platform?: Platform;
  /** Connection-level retries of one blob download, resuming where it broke (default 4). */
  blobAttempts?: number;
  /** Blobs larger than this are uploaded in chunks of this size (default 16 MiB). */
  chunkSize?: number;
}

/** What {@linkcode pullImage} did. */
export interface PullResult {
  /** The image as recorded. */
  image: ImageRecord;
  /** Per layer: downloaded bytes (0 when the blob was there), whether its layer existed. */
  layers: { digest: string; downloaded: number; resumedFrom: number; reused: boolean }[];
}

/**
 * Start `fn` for every item at once, at most `n` running at a time; the
 * promises come back immediately, in order (each already has a handler, so a
 * rejection waits for its reader instead of being unhandled).
 */
function bounded<T, R>(
  items: T[],
  n: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R>[] {
  let active = 0;
  const waiting: (() => void)[] = [];
  return items.map((item, i) => {
    const p = (async () => {
      while (active >= n) await new Promise<void>((r) => waiting.push(r));
      active++;
      try {
        return await fn(item, i);
      } finally {
        active--;
        waiting.shift()?.();
      }
    })();
    p.catch(() => {});
    return p;
  });
}

async function hashFile(path: string, hash: Hash): Promise<number> {
  let n = 0;
  const f = await Deno.open(path);
  for await (const chunk of f.readable) {
    hash.update(chunk);
    n += chunk.length;
  }
  return n;
}

/**
 * Download blob `desc` of `repository` into the store, resuming from a
 * partial file; the digest and size are checked as the bytes arrive.
 */
async function downloadBlob(
  store: ImageStore,
  client: RegistryClient,
  repository: string,
  desc: Descriptor,
  what: string,
  attempts: number,
  onBytes: (done: number) => void,
  signal?: AbortSignal,
): Promise<{ downloaded: number; resumedFrom: number }> {
  if (await store.hasBlob(desc.digest)) return { downloaded: 0, resumedFrom: 0 };
  const partial = join(store.tmpDir, `${digestHex(desc.digest)}.partial`);
  const hash = createHash("sha256");
  let have = 0;
  try {
    have = await hashFile(partial, hash);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let h = hash;
  if (have > desc.size) {
    await Deno.truncate(partial, 0);
    have = 0;
    h = createHash("sha256");
  }
  const resumedFrom = have;
  let downloaded = 0;
  for (let attempt = 1;; attempt++) {
    signal?.throwIfAborted();
    if (have === desc.size) break;
    try {
      const { body, start } = await client.getBlob(repository, desc.digest, have);
      if (start !== have) { // the registry ignored the range: start over
        have = 0;
        h = createHash("sha256");
      }
      const f = await Deno.open(partial, { write: true, create: true, mode: 0o600 });
      try {
        await f.truncate(have);
        await f.seek(have, Deno.SeekMode.Start);
        for await (const chunk of body) {
          signal?.throwIfAborted(); // fetch's signal does not always reach a body being read
          if (have + chunk.length > desc.size) {
            throw new DigestMismatchError(
              what,
              desc.digest,
              "",
              `more than the announced ${desc.size} bytes`,
            );
          }
          let off = 0;
          while (off < chunk.length) off += await f.write(chunk.subarray(off));
          h.update(chunk);
          have += chunk.length;
          downloaded += chunk.length;
          onBytes(have);
        }
      } finally {
        f.close();
      }
      if (have < desc.size) throw new Error(`connection ended at byte ${have} of ${desc.size}`);
      break;
    } catch (e) {
      // Only broken connections are retried here (the client already retried 5xx).
      const fatal = e instanceof DigestMismatchError || e instanceof RegistryError;
      if (fatal || signal?.aborted || attempt >= attempts) {
        if (e instanceof DigestMismatchError) await Deno.remove(partial).catch(() => {});
        throw e instanceof DigestMismatchError
          ? e
          : new Error(`${what}: ${(e as Error).message}`, { cause: e });
      }
      await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
    }
  }
  const digest = "sha256:" + h.digest("hex");
  if (digest !== desc.digest) {
    await Deno.remove(partial).catch(() => {});
    throw new DigestMismatchError(what, desc.digest, digest);
  }
  const f = await Deno.open(partial, { write: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
  await store.adoptBlob(partial, desc.digest);
  return { downloaded, resumedFrom };
}

/** Fetch a small blob (config) fully, checked. */
async function fetchSmallBlob(
  client: RegistryClient,
  repository: string,
  desc: Descriptor,
  what: string,
): Promise<Uint8Array> {
  if (desc.size > 16 << 20) throw new Error(`${what}: ${desc.size} bytes is too big`);
  const { body } = await client.getBlob(repository, desc.digest);
  const bytes = new Uint8Array(await new Response(body).arrayBuffer());
  const got = "sha256:" + createHash("sha256").update(bytes).digest("hex");
  if (got !== desc.digest || bytes.length !== desc.size) {
    throw new DigestMismatchError(
      what,
      desc.digest,
      got,
      `${bytes.length} bytes, announced ${desc.size}`,
    );
  }
  return bytes;
}

/**
 * Pull `ref` (`host/repo[:tag][@digest]`) into the store, named by `ref`.
 *
 * @example
 * ```ts
 * import { openDriver } from "../../mod.ts";
 * import { ImageStore } from "./store.ts";
 * import { pullImage } from "./pull.ts";
 * const store = await ImageStore.open(await openDriver("auto", "/var/lib/strata"));
 * const r = await pullImage(store, "127.0.0.1:5000/app:1");
 * console.log(r.image.digest);
 * ```
 */
export async function pullImage(
  store: ImageStore,
  ref: string,
  opts: TransferOptions = {},
): Promise<PullResult> {
  const parsed = parseImageRef(ref);
  const client = new RegistryClient(parsed.host, opts);
  const repo = parsed.repository;
  const where = `${parsed.host}/${repo}`;
  let m = await client.getManifest(repo, parsed.digest ?? parsed.tag!);
  let doc = parseManifestOrIndex(m.bytes, `manifest ${m.digest} of ${where}`, m.mediaType);
  for (let depth = 0; doc.kind === "index"; depth++) {
    if (depth > 4) throw new Error(`${where}: indexes nested too deep`);
    const pick = pickPlatform(doc.index, `index ${m.digest} of ${where}`, opts.platform);
    m = await client.getManifest(repo, pick.digest);
    doc = parseManifestOrIndex(m.bytes, `manifest ${m.digest} of ${where}`, pick.mediaType);
  }
  const manifest: Manifest = doc.manifest;
  const what = `image ${m.digest} of ${where}`;
  const configBytes = await fetchSmallBlob(
    client,
    repo,
    manifest.config,
    `config ${manifest.config.digest} of ${where}`,
  );
  const config = parseConfig(configBytes, `${what} config`, manifest.layers.length);
  const chains = chainIds(config.rootfs.diff_ids);
  const attempts = opts.blobAttempts ?? 4;
  const progress = (i: number, done: number, phase: string) =>
    opts.onProgress?.({
      index: i,
      digest: manifest.layers[i].digest,
      done,
      total: manifest.layers[i].size,
      phase,
    });

  // Downloads: bounded parallel; a blob already in the store is not fetched.
  const needed = await Promise.all(
    manifest.layers.map(async (d) => !(await store.hasBlob(d.digest))),
  );
  const controller = new AbortController();
  const signal = opts.signal
    ? AbortSignal.any([opts.signal, controller.signal])
    : controller.signal;
  const downloads = bounded(manifest.layers, Math.max(1, opts.jobs ?? 3), (desc, i) => {
    if (!needed[i]) return Promise.resolve({ downloaded: 0, resumedFrom: 0 });
    progress(i, 0, "downloading");
    return downloadBlob(
      store,
      client,
      repo,
      desc,
      `layer ${i + 1} blob ${desc.digest} of ${where}`,
      attempts,
      (n) => progress(i, n, "downloading"),
      signal,
    ).catch((e) => {
      controller.abort(e); // stop the other downloads
      throw e;
    });
  });
  const layers: PullResult["layers"] = [];
  try {
    for (const [i, desc] of manifest.layers.entries()) {
      const dl = await downloads[i];
      progress(i, desc.size, "applying");
      const r = await ingestLayer(store, {
        chainId: chains[i],
        parent: i === 0 ? null : chains[i - 1],
        diffId: config.rootfs.diff_ids[i],
        desc,
        open: () => store.openBlob(desc.digest),
        what: `layer ${i + 1} of ${what}`,
        keepBlob: false,
        signal: opts.signal,
      });
      progress(i, desc.size, r.reused ? "reused" : "done");
      layers.push({ digest: desc.digest, ...dl, reused: r.reused });
    }
  } catch (e) {
    controller.abort(e);
    await Promise.allSettled(downloads);
    throw e;
  }
  await store.putBlob(configBytes);
  await store.putBlob(m.bytes);
  const image = await store.putImage({
    digest: m.digest,
    mediaType: doc.mediaType,
    size: m.bytes.length,
    config: manifest.config.digest,
    layers: chains,
    names: [formatImageRef(parsed)],
    created: new Date().toISOString(),
    sources: [where],
  });
  return { image, layers };
}

/** What {@linkcode pushImage} did. */
export interface PushResult {
  /** The manifest digest the registry has. */
  digest: string;
  /** Per blob: `exists`, `mounted` or `uploaded`. */
  blobs: { digest: string; how: "exists" | "mounted" | "uploaded" }[];
}

/**
 * Push image `image` of the store to `ref`. The manifest is pushed as it was
 * stored, so its digest stays the same.
 *
 * @example
 * ```ts
 * import { openDriver } from "../../mod.ts";
 * import { ImageStore } from "./store.ts";
 * import { pushImage } from "./pull.ts";
 * const store = await ImageStore.open(await openDriver("auto", "/var/lib/strata"));
 * await pushImage(store, "app:1", "127.0.0.1:5000/app:1");
 * ```
 */
export async function pushImage(
  store: ImageStore,
  image: string,
  ref: string,
  opts: TransferOptions = {},
): Promise<PushResult> {
  const img = await store.resolve(image);
  const { manifest, manifestBytes } = await imageDocuments(store, img);
  const parsed = parseImageRef(ref);
  const client = new RegistryClient(parsed.host, opts);
  const repo = parsed.repository;
  const where = `${parsed.host}/${repo}`;
  const mountFrom = (img.sources ?? []).filter((s) =>
    s.startsWith(`${parsed.host}/`) && s !== where
  )
    .map((s) => s.slice(parsed.host.length + 1));
  const blobs: PushResult["blobs"] = [];
  const pushBlob = async (desc: Descriptor, i: number | undefined) => {
    if (await client.hasBlob(repo, desc.digest)) {
      blobs.push({ digest: desc.digest, how: "exists" });
      return;
    }
    for (const from of mountFrom) {
      if (await client.mountBlob(repo, desc.digest, from)) {
        blobs.push({ digest: desc.digest, how: "mounted" });
        return;
      }
    }
    if (!(await store.hasBlob(desc.digest))) {
      throw new Error(
        `blob ${desc.digest} of image ${img.digest} is not in the store: cannot push it`,
      );
    }
    const path = store.blobPath(desc.digest);
    const f = await Deno.open(path);
    try {
      const size = (await f.stat()).size;
      await client.uploadBlob(repo, desc.digest, size, async (off, len) => {
        const buf = new Uint8Array(len);
        await f.seek(off, Deno.SeekMode.Start);
        let got = 0;
        while (got < len) {
          const n = await f.read(buf.subarray(got));
          if (n === null) throw new Error(`${path}: short read at ${off + got}`);
          got += n;
        }
        if (i !== undefined) {
          opts.onProgress?.({
            index: i,
            digest: desc.digest,
            done: off + len,
            total: size,
            phase: "uploading",
          });
        }
        return buf;
      }, opts.chunkSize);
    } finally {
      f.close();
    }
    blobs.push({ digest: desc.digest, how: "uploaded" });
  };
  const jobs = bounded(
    manifest.layers,
    Math.max(1, opts.jobs ?? 3),
    (d, i) => pushBlob(d, i),
  );
  await Promise.all(jobs);
  await pushBlob(manifest.config, undefined);
  const reference = parsed.tag ?? img.digest;
  if (parsed.digest && parsed.digest !== img.digest) {
    throw new Error(`push ${ref}: the image's digest is ${img.digest}, not ${parsed.digest}`);
  }
  const digest = await client.putManifest(repo, reference, manifestBytes, img.mediaType);
  if (digest !== img.digest) {
    throw new Error(
      `push ${ref}: the registry stored the manifest as ${digest}, not ${img.digest}`,
    );
  }
  await store.putImage({ ...img, names: [], sources: [where] });
  return { digest, blobs };
}
