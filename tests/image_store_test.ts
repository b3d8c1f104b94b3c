/**
 * The image store with OCI image layouts: import (gzip, zstd, plain and
 * Docker schema 2 layers; an index resolved to this host's platform), shared
 * base layers keyed by chain id, byte-exact export, removal that keeps what
 * others use, and blobs that do not match their digest or diff id refused
 * with nothing left behind. Images are built in the test by GNU tar.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { chainIds } from "../lib/image/digest.ts";
import { exportOciLayout, importOciLayout } from "../lib/image/oci_layout.ts";
import { layerIdOf } from "../lib/image/store.ts";
import { buildImage, treeOf, withImageStore, writeLayout } from "./support/oci_build.ts";
import { MEDIA } from "../lib/image/compression.ts";
import { checkRoot } from "../lib/check.ts";

const BASE = { "etc/os": "strata-test\n", "bin/sh": "#!sh\n", "etc/gone": "x\n" };

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("image import: gzip, zstd and plain layers give the merged tree; chain ids name the layers", async () => {
  await withImageStore(async (store, driver, base) => {
    const img = await buildImage([
      { files: BASE, compression: "gzip" },
      { files: { "etc/os": "v2\n", "etc/gone": null, "app/run": "go\n" }, compression: "zstd" },
      { files: { "app/data": "d\n" }, compression: "none" },
    ]);
    const dir = join(base, "layout");
    await writeLayout(dir, img, "v1");
    const r = await importOciLayout(store, { dir, tag: "v1" });
    assert.equal(r.image.digest, img.manifest.digest);
    assert.deepEqual(r.image.names, ["v1"]);
    const chains = chainIds(img.layers.map((l) => l.diffId));
    assert.deepEqual(r.image.layers, chains);
    assert.equal(chains[0], img.layers[0].diffId);
    const expected1 = "sha256:" +
      createHash("sha256").update(`${chains[0]} ${img.layers[1].diffId}`).digest("hex");
    assert.equal(chains[1], expected1);
    assert.deepEqual(await driver.listLayers(), chains.map(layerIdOf).sort());
    const top = layerIdOf(chains[2]);
    const root = await driver.get(top);
    try {
      assert.deepEqual(await treeOf(root), [
        "app d 755",
        "app/data f 644 d\n",
        "app/run f 644 go\n",
        "bin d 755",
        "bin/sh f 644 #!sh\n",
        "etc d 755",
        "etc/os f 644 v2\n",
      ]);
    } finally {
      await driver.put(top);
    }
    // Blobs kept as they came.
    for (const l of img.layers) assert.ok(await store.hasBlob(l.digest), l.digest);
    assert.equal((await store.resolve("v1")).digest, img.manifest.digest);
    assert.equal(
      (await store.resolve(img.manifest.digest.slice(7, 19))).digest,
      img.manifest.digest,
    );
  });
});

Deno.test("image import: a second image on the same base reuses its layer; rm keeps what the other uses", async () => {
  await withImageStore(async (store, driver, base) => {
    const a = await buildImage([{ files: BASE }, { files: { "a": "a\n" } }], { label: "a" });
    const b = await buildImage([{ files: BASE }, { files: { "b": "b\n" } }], { label: "b" });
    const dir = join(base, "layout");
    await writeLayout(dir, a, "a");
    await writeLayout(dir, b, "b");
    const ra = await importOciLayout(store, { dir, tag: "a" });
    const rb = await importOciLayout(store, { dir, tag: "b" });
    assert.deepEqual(ra.layers.map((l) => l.reused), [false, false]);
    assert.deepEqual(rb.layers.map((l) => l.reused), [true, false]);
    assert.equal(ra.image.layers[0], rb.image.layers[0]);
    assert.equal((await driver.listLayers()).length, 3);
    // A container layer on b keeps b's layers after b is removed.
    await driver.create("ctr", layerIdOf(rb.image.layers[1]));
    const gone = await store.remove("a");
    assert.deepEqual(gone.layers, [ra.image.layers[1]]);
    assert.ok(!(await store.hasBlob(a.layers[1].digest)));
    assert.ok(await store.hasBlob(a.layers[0].digest)); // b's manifest names it too
    const gone2 = await store.remove("b");
    assert.deepEqual(gone2.layers, []);
    assert.deepEqual(
      await driver.listLayers(),
      ["ctr", ...rb.image.layers.map(layerIdOf)].sort(),
    );
    await driver.remove("ctr");
    await assert.rejects(() => store.resolve("b"), /not found/);
  });
});

Deno.test("image export: import → export gives the same manifest digest and blobs; a re-import reuses all", async () => {
  await withImageStore(async (store, _driver, base) => {
    const img = await buildImage([
      { files: BASE, compression: "zstd" },
      { files: { "x": "1\n" }, compression: "gzip" },
    ]);
    const src = join(base, "src");
    await writeLayout(src, img, "t");
    await importOciLayout(store, { dir: src, tag: "t" }, { names: ["app:1"] });
    const out = join(base, "out");
    const desc = await exportOciLayout(store, "app:1", { dir: out });
    assert.equal(desc.digest, img.manifest.digest);
    assert.equal(desc.annotations?.["org.opencontainers.image.ref.name"], "1");
    assert.deepEqual(
      await names(join(out, "blobs", "sha256")),
      await names(join(src, "blobs", "sha256")),
    );
    for (const b of [img.manifest, img.config, ...img.layers]) {
      const bytes = await Deno.readFile(join(out, "blobs", "sha256", b.digest.slice(7)));
      assert.deepEqual(bytes, b.bytes);
    }
    const again = await importOciLayout(store, { dir: out, tag: "1" });
    assert.equal(again.image.digest, img.manifest.digest);
    assert.deepEqual(again.layers.map((l) => l.reused), [true, true]);
    assert.deepEqual((await store.resolve("app:1")).names, ["app:1", "1"]);
  });
});

Deno.test("image import: Docker schema 2 media types, and an index resolved to this platform", async () => {
  await withImageStore(async (store, driver, base) => {
    const img = await buildImage([{ files: BASE }], { docker: true });
    const dir = join(base, "layout");
    await writeLayout(dir, img, "d");
    // Wrap the manifest in an index with a foreign platform beside it.
    const index = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociIndex,
      manifests: [
        {
          mediaType: MEDIA.dockerManifest,
          digest: "sha256:" + "0".repeat(64),
          size: 10,
          platform: { os: "linux", architecture: "s390x" },
        },
        {
          mediaType: MEDIA.dockerManifest,
          digest: img.manifest.digest,
          size: img.manifest.size,
          platform: { os: "linux", architecture: Deno.build.arch === "x86_64" ? "amd64" : "arm64" },
        },
      ],
    }));
    const indexDigest = "sha256:" + createHash("sha256").update(index).digest("hex");
    await Deno.writeFile(join(dir, "blobs", "sha256", indexDigest.slice(7)), index);
    await Deno.writeTextFile(
      join(dir, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{
          mediaType: MEDIA.ociIndex,
          digest: indexDigest,
          size: index.length,
          annotations: { "org.opencontainers.image.ref.name": "multi" },
        }],
      }),
    );
    const r = await importOciLayout(store, { dir, tag: "multi" });
    assert.equal(r.image.digest, img.manifest.digest);
    assert.equal(r.image.mediaType, MEDIA.dockerManifest);
    assert.ok(await driver.exists(layerIdOf(img.layers[0].diffId)));
  });
});

Deno.test("image import: a blob that does not match its digest, or a tar that does not match its diff id, fails naming it and leaves nothing", async () => {
  await withImageStore(async (store, driver, base) => {
    const img = await buildImage([{ files: BASE }, { files: { "y": "y\n" } }]);
    const dir = join(base, "layout");
    await writeLayout(dir, img, "t");
    // Corrupt layer 2's blob in place (same size).
    const p = join(dir, "blobs", "sha256", img.layers[1].digest.slice(7));
    const bytes = await Deno.readFile(p);
    const bad = bytes.slice();
    bad[bad.length - 9] ^= 0xff; // inside the gzip trailer's CRC: the tar still decodes
    await Deno.writeFile(p, bad);
    await assert.rejects(
      () => importOciLayout(store, { dir, tag: "t" }),
      (e: Error) => e.message.includes(img.layers[1].digest) && /digest mismatch/.test(e.message),
    );
    // Layer 1 was fine and stays (shared base, reusable); layer 2 left nothing.
    assert.deepEqual(await driver.listLayers(), [layerIdOf(img.layers[0].diffId)]);
    assert.deepEqual(await driver.store.incomplete(), []);
    assert.ok(!(await store.hasBlob(img.layers[1].digest)));
    assert.deepEqual((await names(store.blobDir)).filter((n) => n.endsWith(".tmp")), []);
    assert.deepEqual(await store.images(), []);

    // A config whose diff id for layer 2 is wrong: the tar is refused by its diff id.
    await Deno.writeFile(p, bytes);
    const cfg = JSON.parse(new TextDecoder().decode(img.config.bytes));
    cfg.rootfs.diff_ids[1] = "sha256:" + "1".repeat(64);
    const cfgBytes = new TextEncoder().encode(JSON.stringify(cfg));
    const cfgDigest = "sha256:" + createHash("sha256").update(cfgBytes).digest("hex");
    const man = JSON.parse(new TextDecoder().decode(img.manifest.bytes));
    man.config = { ...man.config, digest: cfgDigest, size: cfgBytes.length };
    const manBytes = new TextEncoder().encode(JSON.stringify(man));
    const manDigest = "sha256:" + createHash("sha256").update(manBytes).digest("hex");
    await Deno.writeFile(join(dir, "blobs", "sha256", cfgDigest.slice(7)), cfgBytes);
    await Deno.writeFile(join(dir, "blobs", "sha256", manDigest.slice(7)), manBytes);
    await Deno.writeTextFile(
      join(dir, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: MEDIA.ociManifest, digest: manDigest, size: manBytes.length }],
      }),
    );
    await assert.rejects(
      () => importOciLayout(store, { dir }),
      (e: Error) => e.message.includes(img.layers[1].digest) && e.message.includes("diff id"),
    );
    assert.deepEqual(await driver.listLayers(), [layerIdOf(img.layers[0].diffId)]);
    assert.deepEqual(await driver.store.incomplete(), []);
  });
});

Deno.test("image export: a layer whose blob is gone is re-made from its original tar (tar-split), same diff id", async () => {
  await withImageStore(async (store, _driver, base) => {
    const img = await buildImage([{ files: BASE }, { files: { "z": "z\n" }, compression: "zstd" }]);
    const src = join(base, "src");
    await writeLayout(src, img, "t");
    const r = await importOciLayout(store, { dir: src, tag: "t" });
    await Deno.remove(store.blobPath(img.layers[1].digest));
    const out = join(base, "out");
    const desc = await exportOciLayout(store, "t", { dir: out, tag: "t" });
    assert.notEqual(desc.digest, img.manifest.digest); // a new gzip blob: a new manifest
    const manifest = JSON.parse(
      await Deno.readTextFile(join(out, "blobs", "sha256", desc.digest.slice(7))),
    );
    assert.equal(manifest.layers[0].digest, img.layers[0].digest); // kept as it was
    assert.equal(manifest.layers[1].mediaType, MEDIA.ociLayerGzip);
    const gz = await Deno.readFile(
      join(out, "blobs", "sha256", manifest.layers[1].digest.slice(7)),
    );
    const tar = new Uint8Array(
      await new Response(new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip")))
        .arrayBuffer(),
    );
    assert.equal("sha256:" + createHash("sha256").update(tar).digest("hex"), img.layers[1].diffId);
    // The re-made layout imports to the same layers.
    await withImageStore(async (store2) => {
      const again = await importOciLayout(store2, { dir: out, tag: "t" });
      assert.deepEqual(again.image.layers, r.image.layers);
    });
  });
});

Deno.test("image import: two imports at once of images sharing a base make the base once", async () => {
  await withImageStore(async (store, driver, base) => {
    const a = await buildImage([{ files: BASE }, { files: { "a": "a\n" } }], { label: "a" });
    const b = await buildImage([{ files: BASE }, { files: { "b": "b\n" } }], { label: "b" });
    const dir = join(base, "layout");
    await writeLayout(dir, a, "a");
    await writeLayout(dir, b, "b");
    const [ra, rb] = await Promise.all([
      importOciLayout(store, { dir, tag: "a" }),
      importOciLayout(store, { dir, tag: "b" }),
    ]);
    assert.deepEqual(
      [ra.layers[0].reused, rb.layers[0].reused].sort(),
      [false, true],
    );
    assert.equal((await driver.listLayers()).length, 3);
    assert.deepEqual(await driver.store.incomplete(), []);
  });
});

Deno.test("check reports what an interrupted image operation leaves (temp blob, partial download, record of no layer); repair removes it", async () => {
  await withImageStore(async (store, driver, base) => {
    const img = await buildImage([{ files: BASE }]);
    const dir = join(base, "layout");
    await writeLayout(dir, img, "t");
    const r = await importOciLayout(store, { dir, tag: "t" });
    assert.equal((await checkRoot(driver)).clean, true);
    await Deno.writeFile(join(store.blobDir, ".0123456789abcdef.tmp"), new Uint8Array(3));
    await Deno.writeFile(join(store.tmpDir, "ab".repeat(32) + ".partial"), new Uint8Array(3));
    await driver.remove(layerIdOf(r.image.layers[0])); // behind the image store's back
    const report = await checkRoot(driver);
    assert.equal(report.clean, false);
    assert.deepEqual(
      report.findings.map((f) => [f.kind, f.path.slice(store.dir.length + 1)]).sort(),
      [
        ["image-leftover", "blobs/sha256/.0123456789abcdef.tmp"],
        ["image-leftover", `layers/${layerIdOf(r.image.layers[0])}.json`],
        ["image-leftover", `tmp/${"ab".repeat(32)}.partial`],
      ],
    );
    assert.equal((await checkRoot(driver, { repair: true })).clean, true);
    assert.equal((await checkRoot(driver)).findings.length, 0);
  });
});
