/**
 * strata against a real registry (Debian's docker-registry on 127.0.0.1),
 * with skopeo as the independent client: what skopeo pushes strata pulls to
 * the same tree as `skopeo copy … oci:` + import; what strata pushes skopeo
 * copies out and GNU tar unpacks to the tree strata mounts; pull → push to
 * another repository keeps the manifest digest (and mounts the blobs); and
 * basic auth from an auth file.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { importOciLayout } from "../lib/image/oci_layout.ts";
import { pullImage, pushImage } from "../lib/image/pull.ts";
import { layerIdOf } from "../lib/image/store.ts";
import { sha256Digest } from "../lib/image/digest.ts";
import { ok, toolsPresent, withCliRoot } from "./support/image_cli.ts";
import {
  buildImage,
  type LayerFiles,
  treeOf,
  withImageStore,
  writeLayout,
} from "./support/oci_build.ts";
import type { LayerCompression } from "../lib/image/compression.ts";
import { withRegistry } from "./support/registry.ts";
import { runCommand } from "./support/run.ts";

const present = toolsPresent("image_registry_test", ["docker-registry", "skopeo", "htpasswd"]);

async function skopeo(...args: string[]): Promise<string> {
  const r = await runCommand("skopeo", ["--insecure-policy", ...args]);
  assert.equal(r.code, 0, `skopeo ${args.join(" ")}: ${r.err}`);
  return r.out;
}

async function mountedTree(
  driver: { get(id: string): Promise<string>; put(id: string): Promise<void> },
  chainId: string,
): Promise<string[]> {
  const id = layerIdOf(chainId);
  const root = await driver.get(id);
  try {
    return await treeOf(root);
  } finally {
    await driver.put(id);
  }
}

const LAYERS: { files: LayerFiles; compression?: LayerCompression }[] = [
  { files: { "etc/os": "reg\n", "bin/a": "a\n", "var/old": "old\n" } },
  { files: { "var/old": null, "etc/os": "reg2\n" }, compression: "zstd" },
  { files: { "srv/data": "x".repeat(70_000) }, compression: "none" },
];

Deno.test({
  name:
    "registry: skopeo push → strata pull equals skopeo copy to oci: + import; pull → push elsewhere keeps the digest",
  ignore: !present,
  fn: async () => {
    await withRegistry(async ({ host, dir }) => {
      const img = await buildImage(LAYERS);
      const layout = join(dir, "layout");
      await writeLayout(layout, img, "t");
      await skopeo(
        "copy",
        "--dest-tls-verify=false",
        `oci:${layout}:t`,
        `docker://${host}/src/app:t`,
      );
      // skopeo may recompress on the way (the plain layer): the registry's manifest is the reference.
      const served = await skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        `docker://${host}/src/app:t`,
      );
      const servedDigest = sha256Digest(served);
      await withImageStore(async (store, driver) => {
        const pulled = await pullImage(store, `${host}/src/app:t`, { jobs: 2 });
        assert.equal(pulled.image.digest, servedDigest);
        assert.deepEqual(pulled.image.names, [`${host}/src/app:t`]);
        const tree = await mountedTree(driver, pulled.image.layers[2]);
        assert.ok(tree.includes("etc/os f 644 reg2\n"));
        assert.ok(!tree.some((l) => l.startsWith("var/old")));

        // The same image by skopeo into an OCI layout, imported into another root.
        const copy = join(dir, "copy");
        await skopeo(
          "copy",
          "--src-tls-verify=false",
          `docker://${host}/src/app:t`,
          `oci:${copy}:t`,
        );
        await withImageStore(async (store2, driver2) => {
          const r = await importOciLayout(store2, { dir: copy, tag: "t" });
          // skopeo may convert the manifest on the way; the layers (chain ids) and the tree match.
          assert.deepEqual(r.image.layers, pulled.image.layers);
          assert.deepEqual(await mountedTree(driver2, r.image.layers[2]), tree);
        });

        // Pull again: everything is there, nothing is downloaded.
        const again = await pullImage(store, `${host}/src/app:t`);
        assert.deepEqual(again.layers.map((l) => [l.downloaded, l.reused]), [[0, true], [0, true], [
          0,
          true,
        ]]);

        // Push to another repository: same manifest digest; the blobs are mounted, not uploaded.
        const pushed = await pushImage(store, `${host}/src/app:t`, `${host}/other/copy:v2`);
        assert.equal(pushed.digest, servedDigest);
        assert.deepEqual(
          pushed.blobs.filter((b) => b.how !== "mounted"),
          [],
        );
        const raw = await skopeo(
          "inspect",
          "--raw",
          "--tls-verify=false",
          `docker://${host}/other/copy:v2`,
        );
        assert.equal(raw, served);
        // Pushed again: every blob is found by HEAD, nothing is sent.
        const again2 = await pushImage(store, `${host}/src/app:t`, `${host}/other/copy:v2`);
        assert.deepEqual([...new Set(again2.blobs.map((b) => b.how))], ["exists"]);
      });
    });
  },
});

Deno.test({
  name:
    "registry: strata push → skopeo copy out → GNU tar unpacks the layers to the tree strata mounts",
  ignore: !present,
  fn: async () => {
    await withRegistry(async ({ host, dir }) => {
      // No whiteouts here: GNU tar does not apply them.
      const img = await buildImage([
        { files: { "etc/os": "p\n", "bin/a": "a\n" } },
        { files: { "etc/os": "p2\n", "opt/b": "b\n".repeat(40_000) }, compression: "none" },
      ]);
      const layout = join(dir, "layout");
      await writeLayout(layout, img, "t");
      await withImageStore(async (store, driver) => {
        const r = await importOciLayout(store, { dir: layout, tag: "t" }, { names: ["local"] });
        // 16 KiB chunks: the 80 KiB plain layer goes up in PATCHes, the small ones in one PUT.
        const pushed = await pushImage(store, "local", `${host}/pushed:1`, { chunkSize: 16 << 10 });
        assert.equal(pushed.digest, img.manifest.digest);
        assert.deepEqual(pushed.blobs.map((b) => b.how), ["uploaded", "uploaded", "uploaded"]);
        const out = join(dir, "out");
        await skopeo(
          "copy",
          "--preserve-digests",
          "--dest-oci-accept-uncompressed-layers",
          "--src-tls-verify=false",
          `docker://${host}/pushed:1`,
          `oci:${out}:1`,
        );
        const index = JSON.parse(await Deno.readTextFile(join(out, "index.json")));
        assert.equal(index.manifests[0].digest, img.manifest.digest);
        const manifest = JSON.parse(
          await Deno.readTextFile(join(out, "blobs", "sha256", img.manifest.digest.slice(7))),
        );
        const rootfs = join(dir, "rootfs");
        await Deno.mkdir(rootfs);
        for (const l of manifest.layers) {
          const blob = join(out, "blobs", "sha256", l.digest.slice(7));
          const z = l.mediaType.endsWith("+zstd")
            ? ["--zstd"]
            : l.mediaType.endsWith("+gzip")
            ? ["-z"]
            : [];
          const t = await runCommand("tar", ["-x", ...z, "-f", blob, "-C", rootfs]);
          assert.equal(t.code, 0, t.err);
        }
        assert.deepEqual(await treeOf(rootfs), await mountedTree(driver, r.image.layers[1]));
      });
    });
  },
});

Deno.test({
  name:
    "registry: htpasswd basic auth — credentials from $REGISTRY_AUTH_FILE-style file push and pull; none is refused clearly",
  ignore: !present,
  fn: async () => {
    const auth = { username: "strata", password: "s3cret" };
    await withRegistry(async ({ host, dir }) => {
      const img = await buildImage([{ files: { "a": "1\n" } }]);
      const layout = join(dir, "layout");
      await writeLayout(layout, img, "t");
      const authFile = join(dir, "auth.json");
      await Deno.writeTextFile(
        authFile,
        JSON.stringify({ auths: { [host]: { auth: btoa(`${auth.username}:${auth.password}`) } } }),
      );
      await withImageStore(async (store) => {
        await importOciLayout(store, { dir: layout, tag: "t" }, { names: ["local"] });
        await assert.rejects(
          () => pushImage(store, "local", `${host}/secure:1`, { authFile: join(dir, "none.json") }),
          /HTTP 401.*no credentials/,
        );
        const pushed = await pushImage(store, "local", `${host}/secure:1`, { authFile });
        assert.equal(pushed.digest, img.manifest.digest);
        await assert.rejects(
          () =>
            pullImage(store, `${host}/secure:1`, {
              credentials: { username: "strata", password: "wrong" },
            }),
          /HTTP 401/,
        );
      });
      await withImageStore(async (store) => {
        const pulled = await pullImage(store, `${host}/secure:1`, { authFile });
        assert.equal(pulled.image.digest, img.manifest.digest);
      });
      // The CLI: --creds, and a one-line 401 without them.
      await withCliRoot(async (strata) => {
        const denied = await strata(
          "image",
          "pull",
          `${host}/secure:1`,
          "--authfile",
          authFile + ".none",
        );
        assert.equal(denied.code, 1);
        assert.match(denied.err, /^strata: .*HTTP 401.*\n$/);
        assert.equal(
          (await strata("image", "pull", `${host}/secure:1`, "--creds", "nocolon")).code,
          2,
        );
        const out = ok(
          await strata("image", "pull", `${host}/secure:1`, "--creds", "strata:s3cret"),
        );
        assert.equal(out.split("\n")[0], img.manifest.digest);
      });
      // skopeo reads what strata pushed with the same credentials.
      await skopeo(
        "inspect",
        "--tls-verify=false",
        "--creds",
        `${auth.username}:${auth.password}`,
        `docker://${host}/secure:1`,
      );
    }, auth);
  },
});
