/**
 * Layer tars out and in through the driver, side by side with GNU tar and
 * find on the same trees, in the same run.
 *
 * Setup (once per run, on a tmpfs mounted in a temp dir: this machine's disk
 * makes extraction timings swing 3× run to run): a rootfs-shaped tree
 * (30,000 files in 3,000 dirs; `STRATA_BENCH_FILES` / `STRATA_BENCH_DIRS`
 * override) and 8 × 128 MiB files (`STRATA_BENCH_BIG_COUNT` /
 * `STRATA_BENCH_BIG_MIB`), made by `../shared/peers/go-storage/mktree.sh`
 * or, without it, by the generator in `support/trees.ts`. Each is packed
 * once with GNU tar into a file on the tmpfs and imported, as a user would,
 * with `applyDiff` into a base layer of an overlay driver rooted in the
 * tmpfs ("small", "big"). A child of "small" gets a change set of about
 * 2,000 entries: mktree's `aufs-rw` layer applied as a layer tar, or (without
 * mktree) scripted writes through the overlay mount.
 *
 * Groups (GNU tar / find is the baseline of each, so deno bench prints the
 * ratio):
 * - "diff small", "diff big": `driver.diff(layer, "")` drained in-process vs
 *   `tar -cf - .` in the layer's diff dir, piped into this process and
 *   drained (GNU tar skips reading data when it writes to /dev/null);
 * - "applyDiff small", "applyDiff big": `applyDiff` of the tar file into a
 *   fresh layer vs GNU `tar -xf` of the same file into a fresh dir on the
 *   same tmpfs (numeric owners and xattrs, as applyDiff restores them);
 *   the layer or dir is removed after each run, outside the timed part;
 * - "changes", "diffSize": `driver.changes` / `driver.diffSize` of the child
 *   vs `find <child diff dir> -printf '%p %s %T@ %m %u %g\n' > /dev/null`.
 *
 * Before the benches, `peak_rss.ts` measures the peak RSS of a fresh process
 * diffing and applying the big layer. When the run ends, a markdown table of
 * the medians (this file's own timing of the measured runs) and the targets
 * of the layer-tar issue is printed, then the tmpfs is unmounted and removed
 * (an `unload` listener; a failing setup cleans up before it rethrows).
 *
 * Run: `deno bench --allow-all bench/layer_tars_bench.ts` (as root: mounts).
 *
 * @module
 */

import { join } from "node:path";
import { MNT, openDriver, OverlayDriver, systemLibc, tarDirectory } from "../mod.ts";
import { recursiveUnmount } from "../lib/mounts.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";
import { makeTrees, run, scriptedChanges } from "./support/trees.ts";
import { peakRssLine } from "./peak_rss.ts";

const envNumber = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const FILES = envNumber("STRATA_BENCH_FILES", 30000);
const DIRS = envNumber("STRATA_BENCH_DIRS", 3000);
const BIG_COUNT = envNumber("STRATA_BENCH_BIG_COUNT", 8);
const BIG_MIB = envNumber("STRATA_BENCH_BIG_MIB", 128);

/** Iterations: the big cases take about a second each, so fewer of them. */
const SMALL = { n: 12, warmup: 2 };
const BIG = { n: 6, warmup: 1 };
const WALK = { n: 30, warmup: 3 };

/** The targets: strata time over GNU time. */
const TARGETS: Record<string, number | undefined> = {
  "diff small": 1.1,
  "applyDiff small": 1.3,
  "diff big": 1.1,
  "applyDiff big": 1.1,
};

const libc = systemLibc();
const base = await Deno.makeTempDir({ prefix: "strata-bench-layers-" });
try {
  libc.mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
} catch (e) {
  Deno.removeSync(base);
  throw new Error(`layer_tars_bench: cannot mount a tmpfs on ${base} (run as root)`, { cause: e });
}

/** Measured milliseconds per group and contender, warm-up runs included (dropped later). */
const samples = new Map<string, number[]>();
const warmups = new Map<string, number>();
let peakLine = "";
let treeNote = "";
let childLabel = "child";

let cleaned = false;
/** Unmount everything under the temp dir (the driver's mounts, the tmpfs) and remove it. */
function cleanup(): void {
  if (cleaned) return;
  cleaned = true;
  try {
    recursiveUnmount(libc, base);
  } catch (e) {
    console.error(`layer_tars_bench: ${(e as Error).message}; detaching ${base}`);
    libc.umount2(base, MNT.DETACH);
  }
  Deno.removeSync(base, { recursive: true });
}
globalThis.addEventListener("unload", () => {
  try {
    printTable();
  } finally {
    cleanup();
  }
});

const smallTar = join(base, "rootfs.tar");
const bigTar = join(base, "bigfiles.tar");
let driver: OverlayDriver;
try {
  const started = performance.now();
  const trees = await makeTrees(join(base, "trees"), {
    files: FILES,
    dirs: DIRS,
    bigCount: BIG_COUNT,
    bigMib: BIG_MIB,
  });
  for (const [tree, tar] of [[trees.rootfs, smallTar], [trees.bigfiles, bigTar]]) {
    await run("tar", ["--sort=name", "--xattrs", "-cf", tar, "-C", tree, "."]);
  }
  const opened = await openDriver("overlay", join(base, "overlay"));
  if (!(opened instanceof OverlayDriver)) throw new Error("openDriver gave no OverlayDriver");
  driver = opened;
  for (const [id, tar] of [["small", smallTar], ["big", bigTar]]) {
    await driver.create(id, "");
    await driver.applyDiff(id, "", (await Deno.open(tar)).readable);
  }
  await driver.create("changed", "small");
  let changeNote: string;
  if (trees.aufsRw !== undefined) {
    const layerTar = tarDirectory(trees.aufsRw, {
      excludePatterns: [...AUFS_DIFF_EXCLUDES],
      whiteoutFormat: "aufs",
    });
    await driver.applyDiff("changed", "small", layerTar);
    changeNote = "mktree aufs-rw applied as a layer tar";
  } else {
    const ops = scriptedChanges(await driver.get("changed"));
    await driver.put("changed");
    changeNote = `${ops} scripted changes through the overlay mount`;
  }
  await Deno.remove(join(base, "trees"), { recursive: true });
  const changedEntries = countEntries(driver.diffDir("changed"));
  childLabel = `child of small (${changedEntries} entries)`;
  treeNote = `trees by ${trees.source}: ${FILES} files / ${DIRS} dirs ` +
    `(tar ${mib(Deno.statSync(smallTar).size)} MiB), ${BIG_COUNT} × ${BIG_MIB} MiB; ` +
    `child layer: ${changedEntries} entries (${changeNote}); ` +
    `setup ${((performance.now() - started) / 1000).toFixed(1)} s`;
  console.log(treeNote);
  peakLine = await peakRssLine(driver.root, "big");
  console.log(peakLine);
} catch (e) {
  cleanup();
  throw e;
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(0);
}

function countEntries(dir: string): number {
  let n = 0;
  for (const e of Deno.readDirSync(dir)) {
    n++;
    if (e.isDirectory) n += countEntries(join(dir, e.name));
  }
  return n;
}

/** Read a stream to its end; the byte count. */
async function drain(stream: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of stream) n += chunk.length;
  return n;
}

/** Time `work` between `b.start()` and `b.end()`, and keep the time for the table. */
async function timed(
  b: Deno.BenchContext,
  key: string,
  work: () => Promise<unknown>,
): Promise<void> {
  b.start();
  const t = performance.now();
  await work();
  const ms = performance.now() - t;
  b.end();
  let list = samples.get(key);
  if (!list) samples.set(key, list = []);
  list.push(ms);
}

/** GNU `tar -cf - .` in `dir`, its output drained by this process. */
async function gnuTarCreate(dir: string): Promise<void> {
  const child = new Deno.Command("tar", {
    args: ["-cf", "-", "."],
    cwd: dir,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const n = await drain(child.stdout);
  const status = await child.status;
  if (status.code > 1 || n === 0) throw new Error(`tar -cf - . in ${dir}: exit ${status.code}`);
}

let fresh = 0;

for (
  const [label, id, tar, iters] of [
    ["small", "small", smallTar, SMALL],
    ["big", "big", bigTar, BIG],
  ] as const
) {
  const diffGroup = `diff ${label}`;
  warmups.set(diffGroup, iters.warmup);
  Deno.bench({
    name: `GNU tar -cf - . (${label})`,
    group: diffGroup,
    baseline: true,
    ...iters,
    async fn(b) {
      await timed(b, `${diffGroup}|gnu`, () => gnuTarCreate(driver.diffDir(id)));
    },
  });
  Deno.bench({
    name: `driver.diff (${label})`,
    group: diffGroup,
    ...iters,
    async fn(b) {
      await timed(b, `${diffGroup}|strata`, async () => {
        if ((await drain(await driver.diff(id, ""))) === 0) throw new Error("empty diff");
      });
    },
  });

  const applyGroup = `applyDiff ${label}`;
  warmups.set(applyGroup, iters.warmup);
  Deno.bench({
    name: `GNU tar -xf (${label})`,
    group: applyGroup,
    baseline: true,
    ...iters,
    async fn(b) {
      const dest = join(base, `gnu-x-${fresh++}`);
      Deno.mkdirSync(dest);
      await timed(b, `${applyGroup}|gnu`, () =>
        run("tar", [
          "--numeric-owner",
          "--xattrs",
          "--xattrs-include=*",
          "-xf",
          tar,
          "-C",
          dest,
        ]));
      Deno.removeSync(dest, { recursive: true });
    },
  });
  Deno.bench({
    name: `driver.applyDiff into a fresh layer (${label})`,
    group: applyGroup,
    ...iters,
    async fn(b) {
      const layer = `apply-${fresh++}`;
      await driver.create(layer, "");
      await timed(b, `${applyGroup}|strata`, async () => {
        await driver.applyDiff(layer, "", (await Deno.open(tar)).readable);
      });
      await driver.remove(layer);
    },
  });
}

/** find over the child's diff dir, printing what a change walk looks at. */
function gnuFind(): Promise<void> {
  return run("find", [driver.diffDir("changed"), "-printf", "%p %s %T@ %m %u %g\n"]);
}

for (const op of ["changes", "diffSize"] as const) {
  warmups.set(op, WALK.warmup);
  Deno.bench({
    name: `find -printf (${op})`,
    group: op,
    baseline: true,
    ...WALK,
    async fn(b) {
      await timed(b, `${op}|gnu`, gnuFind);
    },
  });
  Deno.bench({
    name: `driver.${op}(child, base)`,
    group: op,
    ...WALK,
    async fn(b) {
      await timed(b, `${op}|strata`, async () => {
        const result = op === "changes"
          ? (await driver.changes("changed", "small")).length
          : await driver.diffSize("changed", "small");
        if (result === 0) throw new Error(`${op} found nothing`);
      });
    },
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The markdown table of medians (warm-up runs dropped), ratios and targets. */
function printTable(): void {
  const rows: string[] = [];
  for (const [group, warm] of warmups) {
    const gnu = samples.get(`${group}|gnu`)?.slice(warm) ?? [];
    const ours = samples.get(`${group}|strata`)?.slice(warm) ?? [];
    if (gnu.length === 0 || ours.length === 0) continue;
    const [operation, tree] = group.includes(" ") ? group.split(" ") : [group, childLabel];
    const g = median(gnu), s = median(ours), ratio = s / g;
    const target = TARGETS[group];
    const verdict = target === undefined
      ? "—"
      : ratio <= target
      ? `≤ ${target.toFixed(2)} met`
      : `≤ ${target.toFixed(2)} MISSED by ${((ratio / target - 1) * 100).toFixed(0)}%`;
    rows.push(
      `| ${operation} | ${tree} | ${s.toFixed(1)} | ${g.toFixed(1)} | ${
        ratio.toFixed(2)
      } | ${verdict} |`,
    );
  }
  if (rows.length === 0) return;
  const load = Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(`\nlayer tars vs GNU tools (medians; ${treeNote}; load ${load})\n`);
  console.log("| operation | tree | strata ms | GNU ms | ratio | target |");
  console.log("|---|---|---:|---:|---:|---|");
  for (const r of rows) console.log(r);
  if (peakLine) console.log(`\n${peakLine}`);
}
