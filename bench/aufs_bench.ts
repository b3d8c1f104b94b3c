/**
 * aufs driver costs on a kernel without aufs (the recording libc double fakes
 * the aufs mounts; directories, files, locks and the root's bind mount are
 * real): packing the branches of 1,000 layers, creating and removing 1,000
 * layers, and get/put of a 126-layer chain (mount with remounts, unmount).
 * The driver root lives on a tmpfs (disk timings here swing 3x run to run; on
 * a disk, each create also pays the fsyncs of its crash-safe metadata).
 *
 * @module
 */

import { MNT, systemLibc } from "../ffi/libc.ts";
import { packAufsBranches } from "../lib/aufs/branches.ts";
import { isMountpoint } from "../lib/mounts.ts";
import { openHarness } from "../tests/support/aufs_harness.ts";

const hex = (i: number) => i.toString(16).padStart(64, "0");

const ro = Array.from({ length: 1000 }, (_, i) => `/var/lib/strata/aufs/diff/${hex(i)}`);

Deno.bench("packAufsBranches: 1,000 layers, 4 KiB page, dirperm1 and a label", () => {
  packAufsBranches("/var/lib/strata/aufs/diff/top", ro, {
    pageSize: 4096,
    dirperm1: true,
    mountLabel: "system_u:object_r:container_file_t:s0:c1,c2",
  });
});

// A tmpfs for the driver root: the harness makes its temp dir under TMPDIR.
const scratch = Deno.makeTempDirSync({ prefix: "strata-aufs-bench-" });
systemLibc().mount("tmpfs", scratch, "tmpfs", 0n, "mode=0700");
const oldTmp = Deno.env.get("TMPDIR");
Deno.env.set("TMPDIR", scratch);
const h = await openHarness({ libc: { pageSize: 4096 } });
if (oldTmp === undefined) Deno.env.delete("TMPDIR");
else Deno.env.set("TMPDIR", oldTmp);
globalThis.addEventListener("unload", () => {
  // Synchronous teardown: the root's bind mount, the tmpfs and the temp dir.
  for (let i = 0; i < 8 && isMountpoint(h.root); i++) systemLibc().umount2(h.root, MNT.DETACH);
  systemLibc().umount2(scratch, MNT.DETACH);
  Deno.removeSync(scratch, { recursive: true });
});
const driver = await h.reopen();

const chain: string[] = [];
for (let i = 0; i < 126; i++) {
  const id = hex(1_000_000 + i);
  await driver.create(id, chain.at(-1) ?? "");
  chain.push(id);
}
const top = chain[chain.length - 1];

Deno.bench("get + put of a 126-layer chain (mount, remounts, unmount)", async () => {
  await driver.get(top);
  await driver.put(top);
});

let round = 0;
Deno.bench(
  "create + remove of 1,000 layers (each on the previous)",
  { n: 1, warmup: 0 },
  async () => {
    const ids = Array.from({ length: 1000 }, (_, i) => `r${round}-${i}`);
    round++;
    let parent = "";
    for (const id of ids) {
      await driver.create(id, parent);
      parent = id;
    }
    for (const id of ids.reverse()) await driver.remove(id);
  },
);
