/**
 * Overlay get/put against the floor: one chain of 500 layers on a tmpfs;
 * the layers at depth 1, 42, 128 and 500 are the tops benched. For each
 * depth: the first `get` (mount), the last `put` (umount), a `get`+`put`
 * pair while another reference holds the union (bookkeeping only), and,
 * measured in the same run on the same data, the raw mount(2) and umount2(2)
 * the driver's calls stand on (the short form's chdir included). Depth 1 is
 * a base layer: never mounted, so it has no floor.
 *
 * Run: `deno bench --allow-all bench/overlay_bench.ts` (needs root).
 *
 * @module
 */

import { join } from "node:path";
import { systemLibc } from "../ffi/libc.ts";
import { recursiveUnmount } from "../lib/mounts.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import type { UnionMount } from "../lib/union.ts";

const libc = systemLibc();
const base = await Deno.makeTempDir({ prefix: "strata-overlay-bench-" });
libc.mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
globalThis.addEventListener("unload", () => {
  recursiveUnmount(libc, base);
  Deno.removeSync(base, { recursive: true });
});

const driver = await OverlayDriver.init(join(base, "overlay"), {
  loadModule: () => Promise.resolve(),
  onWarning: () => {},
});
const ids = Array.from({ length: 500 }, (_, i) => i.toString(16).padStart(64, "0"));
for (let i = 0; i < ids.length; i++) await driver.create(ids[i], i === 0 ? "" : ids[i - 1]);
for (let i = 0; i < ids.length; i += 7) {
  Deno.writeTextFileSync(join(driver.diffDir(ids[i]), `file-${i}`), `layer ${i}\n`);
}

/** The mount(2) the driver makes for `id` (data, and the cwd of the short form). */
function rawMount(id: string): () => void {
  const chain = ids.slice(0, ids.indexOf(id)).reverse();
  const req: UnionMount = {
    id,
    target: driver.mountDir(id),
    upper: driver.diffDir(id),
    lowers: chain.map((p) => driver.diffDir(p)),
    layerDirs: { work: driver.layerDir("work", id) },
  };
  const plan = driver.backend.plan(req);
  return () => {
    if (plan.cwd === undefined) {
      libc.mount("overlay", req.target, "overlay", 0n, plan.data);
      return;
    }
    const saved = Deno.cwd();
    Deno.chdir(plan.cwd);
    try {
      libc.mount("overlay", req.target, "overlay", 0n, plan.data);
    } finally {
      Deno.chdir(saved);
    }
  };
}

const opts = { n: 40, warmup: 5 };

for (const depth of [1, 42, 128, 500]) {
  const id = ids[depth - 1];
  const group = `${depth} layer${depth === 1 ? "" : "s"}`;

  Deno.bench({
    name: `get, first reference (mount) — ${group}`,
    group: `${group}: get`,
    baseline: depth === 1,
    ...opts,
    async fn(b) {
      b.start();
      await driver.get(id);
      b.end();
      await driver.put(id);
    },
  });
  Deno.bench({
    name: `put, last reference (umount) — ${group}`,
    group: `${group}: put`,
    baseline: depth === 1,
    ...opts,
    async fn(b) {
      await driver.get(id);
      b.start();
      await driver.put(id);
      b.end();
    },
  });
  Deno.bench({
    name: `get+put while held (no mount) — ${group}`,
    group: `${group}: held`,
    ...opts,
    async fn(b) {
      await driver.get(id);
      b.start();
      await driver.get(id);
      await driver.put(id);
      b.end();
      await driver.put(id);
    },
  });
  if (depth === 1) continue;

  const mount = rawMount(id);
  const target = driver.mountDir(id);
  Deno.bench({
    name: `raw mount(2), same data — ${group}`,
    group: `${group}: get`,
    baseline: true,
    ...opts,
    fn(b) {
      b.start();
      mount();
      b.end();
      libc.umount2(target, 0);
    },
  });
  Deno.bench({
    name: `raw umount2(2) — ${group}`,
    group: `${group}: put`,
    baseline: true,
    ...opts,
    fn(b) {
      mount();
      b.start();
      libc.umount2(target, 0);
      b.end();
    },
  });
}
