/**
 * Whole-process comparison of strata with GNU tar/find/gzip and the Go peer
 * (`storagepeer`, containers/storage's archive code), every tool timed the
 * same way in the same run.
 *
 * Fairness rules (issue 11):
 * - every contender is a fresh process started through `sh -c` and timed from
 *   spawn to exit (its start-up included), writing to the same kind of sink:
 *   a file on the tmpfs, or a pipe drained by `cat` (never a pipe into this
 *   Deno process);
 * - the rounds are interleaved: each round runs every contender of a group
 *   once, the starting contender rotating, so load swings hit all of them;
 *   the table shows medians;
 * - beside the processes, the in-process library figure (`driver.diff`
 *   drained, `applyDiff` of the file's `readable`, `changes`, `diffSize`)
 *   shows what start-up and the CLI add.
 *
 * Setup: a tmpfs mounted on a temp dir (unmounted and removed at the end,
 * also on failure), trees by `mktree.sh` (or the built-in generator), tars
 * made by GNU tar, an overlay driver root on the tmpfs with layers "small",
 * "big" and a child "changed" of "small" (mktree's aufs-rw change set).
 *
 * Run (root: tmpfs and overlay mounts):
 *
 *   deno task bench:cli            # all groups, 5 rounds
 *   deno run -A bench/cli_compare.ts --rounds 7 --only export,apply
 *
 * Groups: `export` (small and big, to a file and to a pipe), `apply` (small
 * and big, plain), `gzip` (apply of the gzipped small tar), `zstd`, `changes`,
 * `size`, `readonly` (`exists`, `layers`, `status` vs `deno eval 0`).
 * `STRATA_BENCH_FILES`, `STRATA_BENCH_DIRS`, `STRATA_BENCH_BIG_COUNT`,
 * `STRATA_BENCH_BIG_MIB` shrink the trees.
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { AT, MNT, O, openDriver, OverlayDriver, systemLibc, tarDirectory } from "../mod.ts";
import { TarStream } from "../lib/archive/tar_appender.ts";
import { recursiveUnmount } from "../lib/mounts.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";
import { makeTrees, run } from "./support/trees.ts";

const envNumber = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const FILES = envNumber("STRATA_BENCH_FILES", 30000);
const DIRS = envNumber("STRATA_BENCH_DIRS", 3000);
const BIG_COUNT = envNumber("STRATA_BENCH_BIG_COUNT", 8);
const BIG_MIB = envNumber("STRATA_BENCH_BIG_MIB", 128);

const PEER = "/tmp/peers/bin/storagepeer";
const CLI = new URL("../cli.ts", import.meta.url).pathname;
const DENO = Deno.execPath();

const ALL_GROUPS = ["export", "apply", "gzip", "zstd", "changes", "size", "readonly"];

/** One contender of a group. */
interface Contender {
  /** Row label, e.g. "GNU tar -cf FILE". */
  label: string;
  /** Shell command timed as a whole process, or an in-process function. */
  sh?: string;
  fn?: () => Promise<unknown>;
  /** Untimed work before / after each run (fresh destination, removal). */
  before?: () => Promise<void> | void;
  after?: () => Promise<void> | void;
  /** A failure drops the contender (with a note) instead of failing the run. */
  optional?: boolean;
}

/** A comparison: contenders timed side by side, ratios against `baseline`. */
interface Group {
  name: string;
  contenders: Contender[];
  /** Ratio rows: [numerator label, denominator label, target or undefined]. */
  ratios: [string, string, number | undefined][];
}

function shq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

async function timeShell(cmd: string): Promise<number> {
  const t = performance.now();
  const out = await new Deno.Command("sh", {
    args: ["-c", `set -e; ${cmd}`],
    stdout: "null",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t;
  if (!out.success) {
    throw new Error(`${cmd}: exit ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return ms;
}

async function timeFn(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Run `rounds` interleaved rounds of `g` (plus one untimed warm-up round); medians by label. */
async function runGroup(g: Group, rounds: number): Promise<Map<string, number[]>> {
  const times = new Map<string, number[]>(g.contenders.map((c) => [c.label, []]));
  for (let r = -1; r < rounds; r++) {
    const n = g.contenders.length;
    for (let k = 0; k < n; k++) {
      const c = g.contenders[(k + Math.max(r, 0)) % n];
      await c.before?.();
      if (!times.has(c.label)) continue;
      let ms: number;
      try {
        ms = c.sh !== undefined ? await timeShell(c.sh) : await timeFn(c.fn!);
      } catch (e) {
        if (!c.optional) throw e;
        console.log(`${g.name}: ${c.label} left out: ${(e as Error).message.trim()}`);
        times.delete(c.label);
        continue;
      } finally {
        await c.after?.();
      }
      if (r >= 0) times.get(c.label)!.push(ms);
    }
  }
  return times;
}

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "5" },
    only: { type: "string" },
    before: { type: "string" },
  },
});
const ROUNDS = Number(flags.rounds);
const ONLY = new Set(flags.only ? flags.only.split(",") : ALL_GROUPS);
/** A checkout of an older strata whose CLI runs beside (`--before DIR`), for before/after rows. */
const CLI_BEFORE = flags.before ? join(flags.before, "cli.ts") : undefined;
const hasPeer = (() => {
  try {
    return Deno.statSync(PEER).isFile;
  } catch {
    return false;
  }
})();
const hasZstd = await new Deno.Command("sh", { args: ["-c", "command -v zstd"], stdout: "null" })
  .output().then((o) => o.success);
if (!hasPeer) console.log(`${PEER} not found: the Go peer's rows are left out`);

const libc = systemLibc();
const base = await Deno.makeTempDir({ prefix: "strata-cli-compare-" });
libc.mount("tmpfs", base, "tmpfs", 0n, "mode=0700");

let cleaned = false;
function cleanup(): void {
  if (cleaned) return;
  cleaned = true;
  try {
    recursiveUnmount(libc, base);
  } catch (e) {
    console.error(`cli_compare: ${(e as Error).message}; detaching ${base}`);
    libc.umount2(base, MNT.DETACH);
  }
  Deno.removeSync(base, { recursive: true });
}

try {
  const started = performance.now();
  const treesDir = join(base, "trees");
  const trees = await makeTrees(treesDir, {
    files: FILES,
    dirs: DIRS,
    bigCount: BIG_COUNT,
    bigMib: BIG_MIB,
  });
  const tars = { small: join(base, "small.tar"), big: join(base, "big.tar") };
  await run("tar", ["--sort=name", "--xattrs", "-cf", tars.small, "-C", trees.rootfs, "."]);
  await run("tar", ["--sort=name", "--xattrs", "-cf", tars.big, "-C", trees.bigfiles, "."]);
  await Deno.remove(trees.bigfiles, { recursive: true });
  const root = join(base, "overlay");
  const driver = await openDriver("overlay", root);
  if (!(driver instanceof OverlayDriver)) throw new Error("openDriver gave no OverlayDriver");
  for (const id of ["small", "big"] as const) {
    await driver.create(id, "");
    await driver.applyDiff(id, "", (await Deno.open(tars[id])).readable);
  }
  await driver.create("changed", "small");
  if (trees.aufsRw === undefined) throw new Error("cli_compare needs mktree.sh (aufs-rw tree)");
  await driver.applyDiff(
    "changed",
    "small",
    tarDirectory(trees.aufsRw, { excludePatterns: [...AUFS_DIFF_EXCLUDES] }),
  );
  const gz = join(base, "small.tar.gz"), zst = join(base, "small.tar.zst");
  if (ONLY.has("gzip")) await run("sh", ["-c", `gzip -1 -c ${shq(tars.small)} > ${shq(gz)}`]);
  if (ONLY.has("zstd") && hasZstd) {
    await run("sh", ["-c", `zstd -q -1 -c ${shq(tars.small)} > ${shq(zst)}`]);
  }
  console.log(
    `setup ${((performance.now() - started) / 1000).toFixed(1)} s; trees by ${trees.source}: ` +
      `${FILES} files / ${DIRS} dirs, ${BIG_COUNT} × ${BIG_MIB} MiB`,
  );

  const strata = (args: string) =>
    `${shq(DENO)} run --allow-all --no-prompt ${shq(CLI)} --root ${shq(root)} --driver overlay ` +
    `-q ${args}`;
  const strataBefore = (args: string) =>
    `${shq(DENO)} run --allow-all --no-prompt ${shq(CLI_BEFORE!)} --root ${shq(root)} ` +
    `--driver overlay -q ${args}`;
  /** Contenders of the older CLI, when `--before` names one. */
  const before = (cs: Contender[]): Contender[] => (CLI_BEFORE ? cs : []);
  const out = join(base, "out.tar");
  /** Write a layer's tar to `out` the way strata diff does (in this process). */
  const libraryExport = async (tar: ReadableStream<Uint8Array>) => {
    const fd = libc.openat(AT.FDCWD, out, O.WRONLY | O.CREAT | O.TRUNC, 0o644);
    try {
      if (tar instanceof TarStream) tar.writeToFd(fd);
      else {
        const reader = tar.getReader({ mode: "byob" });
        let buf = new Uint8Array(1 << 20);
        for (;;) {
          const { done, value } = await reader.read(buf);
          if (done || !value) break;
          libc.writeAll(fd, value);
          buf = new Uint8Array(value.buffer);
        }
      }
    } finally {
      libc.close(fd);
    }
  };
  const rmOut = () => Deno.remove(out).catch(() => {});
  let fresh = 0;
  let dest = "";
  const freshDir = () => {
    dest = join(base, `x-${fresh++}`);
    Deno.mkdirSync(dest);
  };
  const rmDest = () => Deno.remove(dest, { recursive: true });
  let layer = "";
  const freshLayer = async () => {
    layer = `apply-${fresh++}`;
    await driver.create(layer, "");
  };
  const rmLayer = () => driver.remove(layer);
  const timeShellWith = (sh: string) => timeShell(`D=${shq(dest)}; L=${shq(layer)}; ${sh}`);

  /** Give apply contenders a fresh dir ($D) or fresh layer ($L), removed after the run. */
  const withDest = (c: Contender): Contender => {
    const usesLayer = c.label.includes("strata") || c.label.includes("library");
    if (c.sh !== undefined) {
      const sh = c.sh;
      return usesLayer
        ? { ...c, before: freshLayer, after: rmLayer, sh: undefined, fn: () => timeShellWith(sh) }
        : { ...c, before: freshDir, after: rmDest, sh: undefined, fn: () => timeShellWith(sh) };
    }
    return { ...c, before: freshLayer, after: rmLayer };
  };

  const groups: Group[] = [];
  if (ONLY.has("export")) {
    for (const id of ["small", "big"] as const) {
      const dir = driver.diffDir(id);
      groups.push({
        name: `export ${id}`,
        contenders: [
          { label: "GNU tar -cf FILE", sh: `tar -cf ${shq(out)} -C ${shq(dir)} .`, after: rmOut },
          { label: "GNU tar | cat", sh: `tar -cf - -C ${shq(dir)} . | cat > /dev/null` },
          ...(hasPeer
            ? [
              { label: "peer tar > FILE", sh: `${PEER} tar ${shq(dir)} > ${shq(out)} 2>/dev/null` },
              {
                label: "peer tar | cat",
                sh: `${PEER} tar ${shq(dir)} 2>/dev/null | cat >/dev/null`,
              },
            ]
            : []),
          { label: "strata diff -o FILE", sh: strata(`diff ${id} -o ${shq(out)}`), after: rmOut },
          { label: "strata diff | cat", sh: `${strata(`diff ${id}`)} | cat > /dev/null` },
          {
            label: "strata diff --source rebuilt -o FILE",
            sh: strata(`diff ${id} --source rebuilt -o ${shq(out)}`),
            after: rmOut,
          },
          {
            label: "strata diff --source rebuilt | cat",
            sh: `${strata(`diff ${id} --source rebuilt`)} | cat > /dev/null`,
          },
          ...before([
            {
              label: "before: strata diff -o FILE",
              sh: strataBefore(`diff ${id} -o ${shq(out)}`),
              after: rmOut,
            },
            {
              label: "before: strata diff | cat",
              sh: `${strataBefore(`diff ${id}`)} | cat > /dev/null`,
            },
          ]),
          {
            label: "library diff > FILE (in-process)",
            fn: async () => libraryExport(await driver.diff(id, "")),
            after: rmOut,
          },
          {
            label: "library diff rebuilt > FILE (in-process)",
            fn: async () => libraryExport(await driver.diff(id, "", { source: "rebuilt" })),
            after: rmOut,
          },
        ],
        ratios: [
          ["strata diff -o FILE", "GNU tar -cf FILE", id === "big" ? 1.0 : 1.1],
          ["strata diff | cat", "GNU tar | cat", id === "big" ? 1.0 : 1.1],
          ["strata diff -o FILE", "peer tar > FILE", undefined],
          ["strata diff --source rebuilt -o FILE", "GNU tar -cf FILE", undefined],
          ["strata diff --source rebuilt | cat", "GNU tar | cat", undefined],
          ["library diff rebuilt > FILE (in-process)", "GNU tar -cf FILE", undefined],
          ["before: strata diff -o FILE", "GNU tar -cf FILE", undefined],
          ["before: strata diff | cat", "GNU tar | cat", undefined],
        ],
      });
    }
  }
  if (ONLY.has("apply")) {
    for (const id of ["small", "big"] as const) {
      const tar = tars[id];
      groups.push({
        name: `apply ${id}`,
        contenders: [
          {
            label: "GNU tar -xf",
            sh: `tar --numeric-owner --xattrs --xattrs-include='*' -xf ${shq(tar)} -C "$D"`,
          },
          ...(hasPeer
            ? [{
              label: "peer untar --plain",
              sh: `${PEER} untar --plain "$D" < ${shq(tar)} 2>/dev/null`,
            }]
            : []),
          { label: "strata apply FILE", sh: `${strata(`apply "$L" ${shq(tar)}`)}` },
          { label: "cat | strata apply -", sh: `cat ${shq(tar)} | ${strata(`apply "$L" -`)}` },
          ...before([{
            label: "before: strata apply FILE",
            sh: strataBefore(`apply "$L" ${shq(tar)}`),
          }]),
          {
            label: "library applyDiff (in-process)",
            fn: async () => driver.applyDiff(layer, "", (await Deno.open(tar)).readable),
          },
        ].map((c) => withDest(c)),
        ratios: [
          ["strata apply FILE", "GNU tar -xf", id === "big" ? 1.0 : 1.2],
          ["cat | strata apply -", "GNU tar -xf", undefined],
          ["strata apply FILE", "library applyDiff (in-process)", 1.05],
          ["strata apply FILE", "peer untar --plain", undefined],
          ["before: strata apply FILE", "GNU tar -xf", undefined],
        ],
      });
    }
  }
  if (ONLY.has("gzip")) {
    groups.push({
      name: "apply small.tar.gz",
      contenders: [
        {
          label: "gzip -dc | tar -x",
          sh: `gzip -dc ${shq(gz)} | tar --numeric-owner --xattrs --xattrs-include='*' -x -C "$D"`,
        },
        { label: "strata apply FILE.gz", sh: strata(`apply "$L" ${shq(gz)}`) },
        ...before([{
          label: "before: strata apply FILE.gz",
          sh: strataBefore(`apply "$L" ${shq(gz)}`),
        }]),
        {
          label: "library applyDiff (in-process, gunzip)",
          fn: async () =>
            driver.applyDiff(
              layer,
              "",
              (await Deno.open(gz)).readable.pipeThrough(new DecompressionStream("gzip")),
            ),
        },
      ].map((c) => withDest(c)),
      ratios: [
        ["strata apply FILE.gz", "gzip -dc | tar -x", 1.1],
        ["before: strata apply FILE.gz", "gzip -dc | tar -x", undefined],
      ],
    });
  }
  if (ONLY.has("zstd") && hasZstd) {
    groups.push({
      name: "apply small.tar.zst",
      contenders: [
        {
          label: "zstd -dc | tar -x",
          sh: `zstd -q -dc ${
            shq(zst)
          } | tar --numeric-owner --xattrs --xattrs-include='*' -x -C "$D"`,
        },
        { label: "strata apply FILE.zst", sh: strata(`apply "$L" ${shq(zst)}`) },
      ].map((c) => withDest(c)),
      ratios: [["strata apply FILE.zst", "zstd -dc | tar -x", undefined]],
    });
  }
  const findCmd = (dir: string) => `find ${shq(dir)} -printf '%p %s %T@ %m %u %g\\n' > /dev/null`;
  if (ONLY.has("changes")) {
    groups.push({
      name: "changes (child of small)",
      contenders: [
        { label: "find -printf", sh: findCmd(driver.diffDir("changed")) },
        ...(hasPeer
          ? [{
            label: "peer changes",
            // Go's Changes stats lower paths following symlinks: some seeds' loops fail it.
            optional: true,
            sh: `${PEER} changes ${shq(trees.aufsRw)} ${shq(trees.rootfs)} > /dev/null`,
          }]
          : []),
        { label: "strata changes (CLI)", sh: strata("changes changed") },
        { label: "library changes (in-process)", fn: () => driver.changes("changed", "small") },
      ],
      ratios: [
        ["library changes (in-process)", "find -printf", 2.0],
        ["library changes (in-process)", "peer changes", 1.0],
      ],
    });
  }
  if (ONLY.has("size")) {
    groups.push({
      name: "size (small)",
      contenders: [
        { label: "find -printf", sh: findCmd(driver.diffDir("small")) },
        ...(hasPeer
          ? [{
            label: "peer size",
            sh: `${PEER} size ${shq(driver.diffDir("small"))} > /dev/null 2>&1`,
          }]
          : []),
        { label: "strata diff-size (CLI)", sh: strata("diff-size small") },
        { label: "library diffSize (in-process)", fn: () => driver.diffSize("small", "") },
      ],
      ratios: [
        ["library diffSize (in-process)", "find -printf", 1.5],
        ["library diffSize (in-process)", "peer size", 1.0],
      ],
    });
  }
  if (ONLY.has("readonly")) {
    groups.push({
      name: "read-only commands",
      contenders: [
        { label: "deno eval 0", sh: `${shq(DENO)} eval 0` },
        { label: "strata exists", sh: strata("exists small") },
        { label: "strata layers", sh: strata("layers") },
        { label: "strata status", sh: strata("status") },
        ...before([{ label: "before: strata exists", sh: strataBefore("exists small") }]),
      ],
      ratios: [
        ["strata exists", "deno eval 0", 1.3],
        ["strata layers", "deno eval 0", 1.3],
        ["strata status", "deno eval 0", 1.3],
        ["before: strata exists", "deno eval 0", undefined],
      ],
    });
  }

  const lines: string[] = [];
  const load = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  lines.push(
    `strata vs GNU tools and the Go peer (${new Date().toISOString().slice(0, 16)}Z; ` +
      `medians of ${ROUNDS} interleaved rounds; load at start ${load()})`,
    "",
    "| group | contender | median ms | min ms |",
    "|---|---|---:|---:|",
  );
  const ratioLines = ["", "| ratio | value | target |", "|---|---:|---|"];
  for (const g of groups) {
    const times = await runGroup(g, ROUNDS);
    const med = new Map([...times].map(([k, v]) => [k, median(v)]));
    for (const [label, v] of times) {
      const row = `| ${g.name} | ${label} | ${median(v).toFixed(0)} | ${
        Math.min(...v).toFixed(0)
      } |`;
      lines.push(row);
      console.log(row);
    }
    for (const [num, den, target] of g.ratios) {
      const a = med.get(num), b = med.get(den);
      if (a === undefined || b === undefined) continue;
      const r = a / b;
      const verdict = target === undefined
        ? "—"
        : `≤ ${target.toFixed(2)} ${r <= target ? "met" : "MISSED"}`;
      ratioLines.push(`| ${g.name}: ${num} / ${den} | ${r.toFixed(2)} | ${verdict} |`);
    }
  }
  lines.push(...ratioLines, "", `load at end ${load()}`);
  console.log(`\n${lines.join("\n")}`);
} finally {
  cleanup();
}
