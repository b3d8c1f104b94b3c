/**
 * tar-split: reassembly of the original tar (`diff` with `source:
 * "original"`) against the Go code's reassembly (`storagepeer tarsplit-asm`,
 * vbatts/tar-split's `asm.NewOutputTarStream` over `NewPathFileGetter`) of
 * the same layer from the same record, and what recording costs an
 * extraction.
 *
 * Setup (once, on a tmpfs in a temp dir): a rootfs-shaped tree ("small":
 * `STRATA_BENCH_TS_FILES` files, default 10,000, in a tenth as many dirs) and
 * big files ("big": `STRATA_BENCH_TS_BIG_COUNT` × `STRATA_BENCH_TS_BIG_MIB`
 * MiB, default 4 × 64), packed by GNU tar and applied with `applyDiff` to an
 * overlay driver rooted in the tmpfs, which records each tar's tar-split.
 *
 * Groups (the Go peer, or plain extraction, is the baseline):
 * - "reassemble small/big": `driver.diff(layer, "")` (the original bytes)
 *   drained in-process vs `storagepeer tarsplit-asm <diff dir> <record>`
 *   writing to /dev/null (a whole process: its start-up, ~5 ms, is counted);
 *   the rebuilt tar (`source: "rebuilt"`) beside them;
 * - "record small/big": `untar` of the tar file into a fresh dir with a
 *   `TarSplitRecorder` (JSON lines, not gzip'd) vs without.
 *
 * At the end a table of medians and MB/s (tar bytes per second) is printed.
 *
 * Run: `deno bench --allow-all bench/tar_split_bench.ts` (as root: mounts).
 *
 * @module
 */

import { join } from "node:path";
import { OverlayDriver, systemLibc, TarSplitRecorder, untar } from "../mod.ts";
import { recursiveUnmount } from "../lib/mounts.ts";
import { makeTrees, run } from "./support/trees.ts";

const envNumber = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const FILES = envNumber("STRATA_BENCH_TS_FILES", 10000);
const BIG_COUNT = envNumber("STRATA_BENCH_TS_BIG_COUNT", 4);
const BIG_MIB = envNumber("STRATA_BENCH_TS_BIG_MIB", 64);
const PEER = Deno.env.get("STRATA_PEER") ?? "/tmp/peers/bin/storagepeer";
const hasPeer = (() => {
  try {
    return Deno.statSync(PEER).isFile;
  } catch {
    return false;
  }
})();
if (!hasPeer) console.log(`tar_split_bench: ${PEER} missing: the Go baseline is left out`);

const libc = systemLibc();
const base = await Deno.makeTempDir({ prefix: "strata-bench-ts-" });
try {
  libc.mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
} catch (e) {
  Deno.removeSync(base);
  throw new Error(`tar_split_bench: cannot mount a tmpfs on ${base} (run as root)`, { cause: e });
}

const samples = new Map<string, number[]>();
const sizes = new Map<string, number>();
let driver: OverlayDriver | undefined;

globalThis.addEventListener("unload", () => {
  printTable();
  try {
    recursiveUnmount(libc, base);
    Deno.removeSync(base, { recursive: true });
  } catch (e) {
    console.error(`tar_split_bench: cleanup of ${base}: ${e}`);
  }
});

function timed(key: string, fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    const t = performance.now();
    await fn();
    const list = samples.get(key) ?? [];
    list.push(performance.now() - t);
    samples.set(key, list);
  };
}

async function drain(s: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const c of s) n += c.length;
  return n;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function printTable(): void {
  if (samples.size === 0) return;
  console.log("\n| case | median ms | MB/s |\n| --- | ---: | ---: |");
  for (const [key, xs] of samples) {
    const tree = key.split(" ").at(-1)!;
    const bytes = sizes.get(tree) ?? 0;
    const ms = median(xs.slice(1)); // the first run warms up
    console.log(`| ${key} | ${ms.toFixed(1)} | ${(bytes / 1e6 / (ms / 1000)).toFixed(0)} |`);
  }
}

const d = await (async () => {
  try {
    const trees = await makeTrees(join(base, "trees"), {
      files: FILES,
      dirs: Math.max(1, Math.floor(FILES / 10)),
      bigCount: BIG_COUNT,
      bigMib: BIG_MIB,
    });
    const drv = await OverlayDriver.init(join(base, "root"), { onWarning: () => {} });
    driver = drv;
    for (const [name, tree] of [["small", trees.rootfs], ["big", trees.bigfiles]] as const) {
      const tar = join(base, `${name}.tar`);
      await run("tar", ["-C", tree, "--numeric-owner", "--xattrs", "-cf", tar, "."]);
      sizes.set(name, Deno.statSync(tar).size);
      await drv.create(name, "");
      await drv.applyDiff(name, "", (await Deno.open(tar)).readable);
      const out = await drv.diff(name, "");
      if (out.source !== "original") throw new Error(`${name}: no tar-split record`);
      await out.cancel();
      await Deno.remove(tree, { recursive: true });
    }
    return drv;
  } catch (e) {
    await driver?.cleanup().catch(() => {});
    throw e;
  }
})();

for (const tree of ["small", "big"]) {
  const group = `reassemble ${tree}`;
  const record = d.tarSplit.pathOf(tree);
  if (hasPeer) {
    Deno.bench({
      name: `storagepeer tarsplit-asm ${tree}`,
      group,
      baseline: true,
      fn: timed(`Go tarsplit-asm ${tree}`, async () => {
        const out = await new Deno.Command(PEER, {
          args: ["tarsplit-asm", d.diffDir(tree), record],
          stdout: "null",
          stderr: "null",
        }).output();
        if (!out.success) throw new Error("storagepeer tarsplit-asm failed");
      }),
    });
  }
  Deno.bench({
    name: `strata diff (original) ${tree}`,
    group,
    baseline: !hasPeer,
    fn: timed(`strata diff original ${tree}`, async () => {
      const n = await drain(await d.diff(tree, "", { source: "original" }));
      if (n !== sizes.get(tree)) throw new Error(`${tree}: ${n} bytes`);
    }),
  });
  Deno.bench({
    name: `strata diff (rebuilt) ${tree}`,
    group,
    fn: timed(`strata diff rebuilt ${tree}`, async () => {
      await drain(await d.diff(tree, "", { source: "rebuilt" }));
    }),
  });
}

for (const tree of ["small", "big"]) {
  const group = `record ${tree}`;
  const tar = join(base, `${tree}.tar`);
  let i = 0;
  const extract = async (record: boolean) => {
    const dest = join(base, `x${i++}`);
    const rec = record ? new TarSplitRecorder(() => {}) : undefined;
    await untar((await Deno.open(tar)).readable, dest, { tarSplit: rec });
    await Deno.remove(dest, { recursive: true });
  };
  Deno.bench({
    name: `untar ${tree}`,
    group,
    baseline: true,
    fn: timed(`untar ${tree}`, () => extract(false)),
  });
  Deno.bench({
    name: `untar + tar-split record ${tree}`,
    group,
    fn: timed(`untar + record ${tree}`, () => extract(true)),
  });
}
