/**
 * Pull of a many-layer image (24 gzip layers of small files, ~6 MiB in all)
 * from Debian's docker-registry on 127.0.0.1: `strata`'s `pullImage` (3
 * layer downloads in flight, each layer applied as soon as it and its parent
 * are there) against the two-step route of `skopeo copy docker://… oci:`
 * followed by `importOciLayout` — same registry, same image, each run into a
 * fresh overlay root on a tmpfs.
 *
 * Run: `deno bench --allow-all bench/image_pull_bench.ts` (needs root,
 * docker-registry and skopeo; without them it says so and benches nothing).
 *
 * @module
 */

import { join } from "node:path";
import { systemLibc } from "../ffi/libc.ts";
import { recursiveUnmount } from "../lib/mounts.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { ImageStore } from "../lib/image/store.ts";
import { pullImage } from "../lib/image/pull.ts";
import { importOciLayout } from "../lib/image/oci_layout.ts";
import { buildImage, type LayerFiles, writeLayout } from "../tests/support/oci_build.ts";
import { startRegistry } from "../tests/support/registry.ts";
import { onPath } from "../tests/support/image_cli.ts";
import { mulberry32 } from "../tests/support/rng.ts";

const LAYERS = 24;
const ready = onPath("docker-registry") && onPath("skopeo");

if (!ready) {
  console.log("image_pull_bench: docker-registry or skopeo absent: nothing benched");
} else {
  const libc = systemLibc();
  const base = await Deno.makeTempDir({ prefix: "strata-image-bench-" });
  libc.mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
  const reg = await startRegistry();
  globalThis.addEventListener("unload", () => {
    recursiveUnmount(libc, base);
    Deno.removeSync(base, { recursive: true });
  });

  const rand = mulberry32(12);
  const layers: { files: LayerFiles }[] = [];
  for (let i = 0; i < LAYERS; i++) {
    const files: LayerFiles = {};
    for (let f = 0; f < 40; f++) {
      let s = "";
      while (s.length < 6000) s += Math.floor(rand() * 2 ** 32).toString(16);
      files[`l${i}/d${f % 5}/f${f}`] = s;
    }
    layers.push({ files });
  }
  const img = await buildImage(layers);
  const layout = join(base, "layout");
  await writeLayout(layout, img, "t");
  const push = await new Deno.Command("skopeo", {
    args: [
      "--insecure-policy",
      "copy",
      "--dest-tls-verify=false",
      `oci:${layout}:t`,
      `docker://${reg.host}/bench/many:t`,
    ],
    stdout: "null",
  }).output();
  if (!push.success) throw new Error("skopeo could not push the bench image");

  let n = 0;
  const freshStore = async () => {
    const driver = await OverlayDriver.init(join(base, `root-${n++}`), {
      loadModule: () => Promise.resolve(),
      onWarning: () => {},
    });
    return { driver, store: await ImageStore.open(driver) };
  };
  const drop = async (driver: OverlayDriver) => {
    await driver.cleanup();
    recursiveUnmount(libc, driver.root);
    await Deno.remove(driver.root, { recursive: true });
  };

  Deno.bench({
    name: `strata pullImage, ${LAYERS} layers`,
    group: "pull",
    baseline: true,
    n: 5,
    warmup: 1,
    async fn(b) {
      const { driver, store } = await freshStore();
      b.start();
      await pullImage(store, `${reg.host}/bench/many:t`, { jobs: 3 });
      b.end();
      await drop(driver);
    },
  });

  Deno.bench({
    name: `skopeo copy docker:// oci: + importOciLayout, ${LAYERS} layers`,
    group: "pull",
    n: 5,
    warmup: 1,
    async fn(b) {
      const { driver, store } = await freshStore();
      const dir = join(base, `oci-${n}`);
      b.start();
      const cp = await new Deno.Command("skopeo", {
        args: [
          "--insecure-policy",
          "copy",
          "--src-tls-verify=false",
          `docker://${reg.host}/bench/many:t`,
          `oci:${dir}:t`,
        ],
        stdout: "null",
      }).output();
      if (!cp.success) throw new Error("skopeo copy failed");
      await importOciLayout(store, { dir, tag: "t" });
      b.end();
      await drop(driver);
      await Deno.remove(dir, { recursive: true });
    },
  });

  globalThis.addEventListener("unload", () => {
    reg.stop(); // its first step, the kill, is synchronous; the rest cannot run at unload
    Deno.removeSync(reg.dir, { recursive: true });
  });
}
