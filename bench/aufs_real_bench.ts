/**
 * aufs get/put on a real aufs kernel (the aufs guest: `deno task bench:aufs`,
 * which `deno task bench` runs after the host benchmarks; ignored on a
 * kernel without aufs). One chain of 126 layers (64-hex ids, so the mount
 * data needs `append:` remounts beyond a page) on a tmpfs; the layers at
 * depth 42 and 126 are the tops benched. For each: the first `get` (mount(2)
 * and its remounts) and the last `put` (umount), and, in the same run on the
 * same data, the raw mount(2)+remount syscalls and umount2(2) they stand on.
 *
 * @module
 */

import { join } from "node:path";
import { MS, systemLibc } from "../ffi/libc.ts";
import { packAufsBranches } from "../lib/aufs/branches.ts";
import { AufsDriver } from "../lib/aufs/driver.ts";
import { recursiveUnmount } from "../lib/mounts.ts";

const HAS_AUFS = Deno.readTextFileSync("/proc/filesystems").includes("aufs");
const DEPTHS = [42, 126];
const opts = { n: 20, warmup: 3 };

if (!HAS_AUFS) {
  for (const depth of DEPTHS) {
    Deno.bench({
      name:
        `aufs get/put, ${depth} layers [ignored: this kernel has no aufs; deno task bench:aufs]`,
      ignore: true,
      fn() {},
    });
  }
} else {
  const libc = systemLibc();
  const base = await Deno.makeTempDir({ prefix: "strata-aufs-bench-" });
  libc.mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
  globalThis.addEventListener("unload", () => {
    recursiveUnmount(libc, base);
    Deno.removeSync(base, { recursive: true });
  });
  const driver = await AufsDriver.init(join(base, "aufs"), {
    loadModule: () => Promise.resolve(),
    auplink: null,
    onWarning: () => {},
  });
  const ids = Array.from({ length: 126 }, (_, i) => i.toString(16).padStart(64, "0"));
  for (let i = 0; i < ids.length; i++) await driver.create(ids[i], i === 0 ? "" : ids[i - 1]);
  const dirperm1 = new Map(await driver.status()).get("Dirperm1 Supported") === "true";

  for (const depth of DEPTHS) {
    const id = ids[depth - 1];
    const group = `${depth} layers`;
    const chain = ids.slice(0, depth - 1).reverse().map((p) => driver.diffDir(p));
    const { data, appends } = packAufsBranches(driver.diffDir(id), chain, {
      pageSize: libc.getpagesize(),
      dirperm1,
    });
    const target = driver.mountDir(id);
    const mount = () => {
      libc.mount("none", target, "aufs", 0n, data);
      for (const a of appends) libc.mount("none", target, "aufs", MS.REMOUNT, a);
    };

    Deno.bench({
      name: `aufs get, first reference (mount + ${appends.length} remounts) — ${group}`,
      group: `aufs ${group}: get`,
      ...opts,
      async fn(b) {
        b.start();
        await driver.get(id);
        b.end();
        await driver.put(id);
      },
    });
    Deno.bench({
      name: `raw mount(2) + ${appends.length} remounts, same data — ${group}`,
      group: `aufs ${group}: get`,
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
      name: `aufs put, last reference (umount) — ${group}`,
      group: `aufs ${group}: put`,
      ...opts,
      async fn(b) {
        await driver.get(id);
        b.start();
        await driver.put(id);
        b.end();
      },
    });
    Deno.bench({
      name: `raw umount2(2) — ${group}`,
      group: `aufs ${group}: put`,
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
}
