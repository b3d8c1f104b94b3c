/**
 * `strata image import|export|ls|inspect|rm` end to end as a subprocess, and
 * umoci (an independent OCI implementation) unpacking what strata exports to
 * the same tree strata mounts.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { runCommand } from "./support/run.ts";
import { ok, toolsPresent, withCliRoot } from "./support/image_cli.ts";
import { buildImage, treeOf, writeLayout } from "./support/oci_build.ts";
import { withRegistry } from "./support/registry.ts";

const BASE = { "etc/os": "cli\n", "usr/bin/tool": "t\n", "tmp/old": "o\n" };
const umoci = toolsPresent("image_cli_test", ["umoci"]);

Deno.test("strata image import, ls, inspect, export (same manifest digest), rm", async () => {
  await withCliRoot(async (strata, dir) => {
    const img = await buildImage([
      { files: BASE },
      { files: { "tmp/old": null, "app": "a\n" }, compression: "zstd" },
    ]);
    const src = join(dir, "src");
    await writeLayout(src, img, "v1");
    const imported = JSON.parse(
      ok(await strata("--json", "image", "import", `oci:${src}:v1`, "--name", "demo:v1")),
    );
    assert.equal(imported.image.digest, img.manifest.digest);
    const ls = JSON.parse(ok(await strata("--json", "image", "ls")));
    assert.deepEqual(ls.images.map((i: { names: string[] }) => i.names), [["demo:v1"]]);
    const inspect = JSON.parse(ok(await strata("--json", "image", "inspect", "demo:v1")));
    assert.equal(inspect.layers.length, 2);
    assert.equal(inspect.layers[0].diffId, img.layers[0].diffId);
    assert.equal(inspect.config.config.Labels.test, "strata");
    const out = join(dir, "out");
    assert.equal(
      ok(await strata("image", "export", "demo:v1", `oci:${out}:v1`)).trim(),
      img.manifest.digest,
    );
    const index = JSON.parse(await Deno.readTextFile(join(out, "index.json")));
    assert.equal(index.manifests[0].digest, img.manifest.digest);
    // Unknown image, bad reference: one-line errors, exit 1 / 2.
    const missing = await strata("image", "inspect", "nope");
    assert.equal(missing.code, 1);
    assert.match(missing.err, /image "nope": not found/);
    const usage = await strata("image", "frobnicate");
    assert.equal(usage.code, 2);
    const rm = JSON.parse(ok(await strata("--json", "image", "rm", "demo:v1")));
    assert.equal(rm.layers.length, 2);
    assert.equal(ok(await strata("layers")), "");
    assert.deepEqual(JSON.parse(ok(await strata("--json", "image", "ls"))).images, []);
  });
});

Deno.test({
  name: "umoci unpacks strata's OCI export to the tree strata mounts",
  ignore: !umoci,
  fn: async () => {
    await withCliRoot(async (strata, dir) => {
      const img = await buildImage([
        { files: BASE },
        { files: { "tmp/old": null, "etc/os": "v2\n", "srv/x": "x\n" } },
      ]);
      const src = join(dir, "src");
      await writeLayout(src, img, "t");
      ok(await strata("image", "import", `oci:${src}:t`, "--name", "u"));
      const out = join(dir, "out");
      ok(await strata("image", "export", "u", `oci:${out}:t`));
      const bundle = join(dir, "bundle");
      const r = await runCommand("umoci", ["unpack", "--image", `${out}:t`, bundle]);
      assert.equal(r.code, 0, r.err);
      const inspect = JSON.parse(ok(await strata("--json", "image", "inspect", "u")));
      const top = inspect.layers[1].layer;
      const mnt = ok(await strata("mount", top)).trim();
      try {
        assert.deepEqual(await treeOf(join(bundle, "rootfs")), await treeOf(mnt));
      } finally {
        ok(await strata("umount", top));
      }
    });
  },
});

const registry = toolsPresent("image_cli_test", ["docker-registry", "skopeo"]);

Deno.test({
  name:
    "strata image pull → create --image → mount → change → umount → commit → image push; a fresh root pulls the same tree",
  ignore: !registry,
  fn: async () => {
    await withRegistry(async ({ host, dir: regDir }) => {
      const img = await buildImage([{ files: BASE }]);
      const layout = join(regDir, "layout");
      await writeLayout(layout, img, "t");
      const sk = await runCommand("skopeo", [
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        `oci:${layout}:t`,
        `docker://${host}/base:1`,
      ]);
      assert.equal(sk.code, 0, sk.err);
      let tree: string[] = [];
      await withCliRoot(async (strata) => {
        ok(await strata("image", "pull", `${host}/base:1`));
        ok(await strata("create", "ctr", "--image", `${host}/base:1`));
        const mnt = ok(await strata("mount", "ctr")).trim();
        try {
          await Deno.writeTextFile(join(mnt, "etc/os"), "changed\n");
          await Deno.remove(join(mnt, "tmp/old"));
          await Deno.writeTextFile(join(mnt, "new"), "n\n");
          tree = await treeOf(mnt);
        } finally {
          ok(await strata("umount", "ctr"));
        }
        const committed = JSON.parse(ok(await strata("--json", "commit", "ctr", "app:2")));
        assert.equal(committed.image.layers.length, 2);
        const pushed = JSON.parse(
          ok(await strata("--json", "image", "push", "app:2", `${host}/app:2`)),
        );
        assert.equal(pushed.digest, committed.image.digest);
        // The base layer was already in the registry (another repository): mounted.
        assert.deepEqual(pushed.blobs.map((b: { how: string }) => b.how), [
          "mounted",
          "uploaded",
          "uploaded",
        ]);
      });
      await withCliRoot(async (strata) => {
        const pulled = JSON.parse(ok(await strata("--json", "image", "pull", `${host}/app:2`)));
        const top = pulled.image.layers[1].slice(7);
        const mnt = ok(await strata("mount", top)).trim();
        try {
          assert.deepEqual(await treeOf(mnt), tree);
        } finally {
          ok(await strata("umount", top));
        }
      });
    });
  },
});

Deno.test({
  name: "strata image import draws a line per layer on a terminal, none without one",
  ignore: !toolsPresent("image_cli_test", ["script"]),
  fn: async () => {
    await withCliRoot(async (strata, dir, root) => {
      const img = await buildImage([{ files: BASE }, { files: { "p": "p\n" } }]);
      const src = join(dir, "src");
      await writeLayout(src, img, "t");
      const cli = new URL("../cli.ts", import.meta.url).pathname;
      const cmd = [
        Deno.execPath(),
        "run",
        "-A",
        cli,
        "--root",
        root,
        "image",
        "import",
        `oci:${src}:t`,
      ]
        .map((a) => `'${a}'`).join(" ");
      // script(1) gives the command a terminal; its output is the terminal's.
      const r = await runCommand("script", ["-qefc", cmd, "/dev/null"]);
      assert.equal(r.code, 0, r.err + r.out);
      for (const [i, l] of img.layers.entries()) {
        assert.match(r.out, new RegExp(`import layer ${i + 1} ${l.digest.slice(7, 19)}: done`));
      }
      const plain = ok(await strata("image", "import", `oci:${src}:t`));
      assert.doesNotMatch(plain, /import layer/);
    });
  },
});
