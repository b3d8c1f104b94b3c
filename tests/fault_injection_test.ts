/**
 * Fault injection over the CLI's store-changing commands (create, apply into a
 * direct child, apply through the naive path, import, rm, mount, umount,
 * check --repair). Every file and mount call a command makes inside the
 * root goes through the seam of `support/fault_seam.ts`; at a chosen call the
 * command is killed (SIGKILL, in a child process) or the call fails (ENOSPC
 * for a change, EIO for a read; in this process). After each fault:
 *
 * - `check` reports everything left in the root or mounted under it that
 *   belongs to no layer (leftovers no check names are a failure);
 * - `check --repair` leaves a clean store and a second `check` finds nothing;
 * - no layer other than the one in flight changed (chain file and content
 *   hash), and the one in flight is as before, as after a successful run, or
 *   (where repair may delete an incomplete layer) gone;
 * - nothing is mounted under the root that was not before (or, for mount and
 *   umount, the layer itself), and nothing is left in it;
 * - a command that exits 0 did all of its work; a failing one names the
 *   error; it leaks no file descriptor or lock.
 *
 * The points: every call a command makes inside the root is numbered; kill
 * points are calls that change something, failure points any call. By
 * default a seeded sample of each (first and last always included) keeps the
 * suite short; `STRATA_FAULT_POINTS=all` runs every point,
 * `STRATA_FAULT_POINTS=N` samples N of each kind per command.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { MNT, systemLibc } from "../ffi/libc.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { tarDirectory } from "../lib/archive/tar_dir.ts";
import type { CheckReport } from "../lib/check.ts";
import { type CliRun, runCli, runCliChild } from "./support/fault_run.ts";
import type { SeamCall } from "./support/fault_seam.ts";
import { reportKnown, triage } from "./support/known_defects.ts";
import { mulberry32 } from "./support/rng.ts";
import {
  type LayerState,
  leftovers,
  lockHeld,
  mountsIn,
  type Snapshot,
  snapshot,
  topNames,
} from "./support/store_probe.ts";
import { unmountAllBelow } from "./support/overlay_harness.ts";

const POINTS = Deno.env.get("STRATA_FAULT_POINTS") ?? "";
/** `STRATA_FAULT_ONLY=NAME` runs only the commands whose name starts with NAME. */
const ONLY = Deno.env.get("STRATA_FAULT_ONLY") ?? "";
const KILL_SAMPLE = 5;
const FAIL_SAMPLE = 8;

/** Files of the test trees: path → content (a trailing `/` makes a directory). */
type Tree = Record<string, string>;

const TREE_A: Tree = { "etc/": "", "etc/hosts": "127.0.0.1 a\n", "bin/": "", "bin/sh": "#!a\n" };
const TREE_B: Tree = { "etc/": "", "etc/hosts": "127.0.0.1 b\n", "usr/": "", "usr/b": "b\n" };
const TREE_C: Tree = {
  "srv/": "",
  "srv/c1": "c1\n",
  "srv/c2": "c2\n",
  "srv/d/": "",
  "srv/d/c3": "",
  // Deletions: a whiteout of B's file and an opaque directory over B's usr/.
  "etc/": "",
  "etc/.wh.hosts": "",
  "usr/": "",
  "usr/.wh..wh..opq": "",
  "usr/c": "c\n",
};
const TREE_Z: Tree = { "z": "zzz\n" };

interface Ctx {
  /** Driver root. */
  root: string;
  /** Tars by name, made once per suite. */
  tars: Record<string, string>;
}

interface Scenario {
  name: string;
  /** Builds the store (with the library) before the command. */
  setup(d: OverlayDriver, c: Ctx): Promise<void>;
  /** The command line after `--root R`. */
  args(c: Ctx): string[];
  /** Layers the command may change; `"*new*"` admits any layer that did not exist before. */
  inflight: string[];
  /** Whether repair may delete an in-flight layer (an interrupted apply or import). */
  mayVanish: boolean;
  /** In-flight layers that may stay mounted afterwards (mount/umount). */
  mayBeMounted?: string[];
  /**
   * Run the command again right after a fault that left it undone (no repair
   * first): it must succeed and leave the state of a successful run.
   */
  retry?: boolean;
}

async function base(d: OverlayDriver, c: Ctx): Promise<void> {
  await d.create("A", "");
  await d.applyDiff("A", "", (await Deno.open(c.tars.A)).readable);
  await d.create("B", "A");
  await d.applyDiff("B", "A", (await Deno.open(c.tars.B)).readable);
  await d.create("Z", "");
  await d.applyDiff("Z", "", (await Deno.open(c.tars.Z)).readable);
}

const SCENARIOS: Scenario[] = [
  {
    name: "create",
    setup: base,
    args: () => ["create", "N", "--parent", "B"],
    inflight: ["N"],
    mayVanish: false,
    retry: true,
  },
  {
    name: "apply (native, into a direct child)",
    setup: async (d, c) => {
      await base(d, c);
      await d.create("C", "B");
    },
    args: (c) => ["apply", "C", c.tars.C],
    inflight: ["C"],
    mayVanish: true,
  },
  {
    name: "apply (naive, --parent not the direct parent)",
    setup: async (d, c) => {
      await base(d, c);
      await d.create("C", "B");
    },
    args: (c) => ["apply", "C", "--parent", "A", c.tars.C],
    inflight: ["C"],
    mayVanish: true,
  },
  {
    name: "import",
    setup: base,
    args: (c) => ["import", c.tars.C, c.tars.Z2],
    inflight: ["*new*"],
    mayVanish: true,
    retry: true,
  },
  {
    name: "rm",
    setup: async (d, c) => {
      await base(d, c);
      await d.create("R", "B");
      await d.applyDiff("R", "B", (await Deno.open(c.tars.C)).readable);
    },
    args: () => ["rm", "R"],
    inflight: ["R"],
    mayVanish: true,
    retry: true,
  },
  {
    name: "mount",
    setup: base,
    args: () => ["mount", "B"],
    inflight: ["B"],
    mayVanish: false,
    mayBeMounted: ["B"],
  },
  {
    name: "umount",
    setup: async (d, c) => {
      await base(d, c);
      await d.get("B");
    },
    args: () => ["umount", "B"],
    inflight: ["B"],
    mayVanish: false,
    mayBeMounted: ["B"],
  },
  {
    name: "cleanup",
    setup: async (d, c) => {
      await base(d, c);
      await d.get("B");
    },
    args: () => ["cleanup"],
    inflight: [],
    mayVanish: false,
    mayBeMounted: ["B"],
  },
  {
    name: "check --repair",
    setup: async (d, c) => {
      await base(d, c);
      // Crash leftovers for repair to work on: an import cut short, an orphan
      // layer dir, a removal cut short, a reference count of no mount.
      await d.create("I", "B", { incomplete: "import" });
      await Deno.mkdir(join(c.root, "diff", "ghost"));
      await Deno.writeTextFile(join(c.root, "diff", "ghost", "f"), "x");
      await Deno.mkdir(join(c.root, "work", "old-removing"));
      await Deno.mkdir(join(c.root, "counts"), { recursive: true });
      await Deno.writeTextFile(join(c.root, "counts", "B"), "2\n");
    },
    args: () => ["check", "--repair"],
    inflight: ["I"],
    mayVanish: true,
  },
];

/** Write `tree` under `dir`. */
async function writeTree(dir: string, tree: Tree): Promise<void> {
  for (const [path, content] of Object.entries(tree)) {
    if (path.endsWith("/")) await Deno.mkdir(join(dir, path), { recursive: true });
    else await Deno.writeTextFile(join(dir, path), content);
  }
}

/** A tar of `tree`, written to `file`. */
async function makeTar(tmp: string, name: string, tree: Tree): Promise<string> {
  const src = join(tmp, `src-${name}`);
  await Deno.mkdir(src);
  await writeTree(src, tree);
  const file = join(tmp, `${name}.tar`);
  await tarDirectory(src).pipeTo((await Deno.create(file)).writable);
  return file;
}

/** Seeded choice of up to `k` of `items`, always with the first and the last. */
function sample<T>(items: T[], k: number, seed: number): T[] {
  if (POINTS === "all" || items.length <= k) return items;
  const want = /^\d+$/.test(POINTS) ? Number(POINTS) : k;
  if (items.length <= want) return items;
  const rand = mulberry32(seed);
  const picked = new Set([0, items.length - 1]);
  while (picked.size < want) picked.add(Math.floor(rand() * items.length));
  return [...picked].sort((a, b) => a - b).map((i) => items[i]);
}

/** A call with the root and the random parts of its path (probe and temp names, fd numbers) blanked. */
function shape(c: SeamCall, root: string): string {
  return `${c.op} ${
    c.path.replaceAll(root, "R").replace(/-probe-[a-z0-9]+/g, "-probe-*").replace(
      /\.[0-9a-f]{16}\.tmp/g,
      ".*.tmp",
    )
      .replace(/fd \d+/g, "fd *")
  }`;
}

/** How many calls `a` and `b` have in common at their start. */
function commonPrefix(a: SeamCall[], rootA: string, b: SeamCall[], rootB: string): number {
  let i = 0;
  while (i < a.length && i < b.length && shape(a[i], rootA) === shape(b[i], rootB)) i++;
  return i;
}

function seedOf(s: string): number {
  let h = 2166136261;
  for (const ch of s) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  return h >>> 0;
}

/** A fresh root below `dir` with `scenario`'s store in it. */
async function freshStore(
  dir: string,
  n: number,
  scenario: Scenario,
  tars: Record<string, string>,
) {
  const root = join(dir, `r${n}`, "root");
  const c: Ctx = { root, tars };
  const d = await OverlayDriver.init(root, {
    loadModule: () => Promise.resolve(),
    onWarning: () => {},
  });
  await scenario.setup(d, c);
  return c;
}

function isNew(id: string, before: Snapshot): boolean {
  return !before.has(id);
}

function sameState(a: { chain: string; hash: string } | undefined, b: typeof a): boolean {
  return a === undefined ? b === undefined : b !== undefined && a.chain === b.chain &&
    a.hash === b.hash;
}

function describe(s: LayerState | undefined): string {
  return s === undefined ? "gone" : `chain ${JSON.stringify(s.chain)} tree ${s.hash.slice(0, 8)}`;
}

function parseReport(run: CliRun, what: string): CheckReport {
  try {
    return JSON.parse(run.out) as CheckReport;
  } catch {
    throw new Error(`${what}: exit ${run.code}, no report; stderr: ${run.err.trim()}`);
  }
}

/** Everything the suite asserts after one fault; returns the problems found. */
async function verify(
  scenario: Scenario,
  c: Ctx,
  before: Snapshot,
  beforeMounts: string[],
  reference: Snapshot,
  ran: CliRun,
  top: string[],
): Promise<string[]> {
  const problems: string[] = [];
  const root = c.root;
  const inflight = (id: string) =>
    scenario.inflight.includes(id) || (scenario.inflight.includes("*new*") && isNew(id, before));

  // A command that says it succeeded did all its work.
  if (ran.code === 0) {
    const now = snapshot(root);
    for (const [id, ref] of reference) {
      if (!inflight(id)) continue;
      const got = now.get(id);
      if (!sameState(got, ref) || got?.incomplete) {
        problems.push(`exit 0 but in-flight layer ${id} is not as after a successful run`);
      }
    }
    for (const id of now.keys()) {
      if (inflight(id) && !reference.has(id)) problems.push(`exit 0 but ${id} still exists`);
    }
  } else if (ran.code !== null && ran.injected && ran.err.trim() === "") {
    problems.push(`exit ${ran.code} after the fault with nothing on stderr`);
  }
  if (ran.leakedFds.length > 0) problems.push(`fds left open in the root: ${ran.leakedFds}`);
  for (const id of snapshot(root).keys()) {
    if (lockHeld(join(root, "locks", id))) problems.push(`lock of ${id} still held`);
  }
  if (problems.some((p) => p.startsWith("lock of"))) return problems; // check would wait forever

  // check names everything that is left over or mounted without a reason.
  const checked = await runCli(["--root", root, "check", "--json"]);
  const report = parseReport(checked, "check");
  const named = (p: string) =>
    report.findings.some((f) =>
      p === f.path || p.startsWith(f.path + "/") ||
      (f.id !== undefined && p.split(" ")[0].endsWith("/" + f.id))
    );
  const mounted = mountsIn(root);
  const layers = new Set(snapshot(root).keys());
  for (const left of leftovers(root, layers, top, mounted)) {
    if (!named(left)) problems.push(`left in the root, not reported by check: ${left}`);
  }
  const real = Deno.realPathSync(root);
  for (const mp of mounted) {
    if (beforeMounts.includes(mp)) continue;
    const id = mp.startsWith(real + "/mnt/") ? mp.slice(real.length + 5) : undefined;
    if (id !== undefined && scenario.mayBeMounted?.includes(id)) continue;
    if (!named(mp)) problems.push(`mounted, not reported by check: ${mp}`);
  }

  // The same command again, without a repair first.
  let retried = false;
  if (scenario.retry) {
    const now = snapshot(root);
    const done = [...now.keys(), ...reference.keys()].filter(inflight).every((id) =>
      sameState(now.get(id), reference.get(id)) && !now.get(id)?.incomplete
    );
    if (!done) {
      const again = await runCli(["--root", root, ...scenario.args(c)]);
      if (again.code !== 0) {
        problems.push(`the command run again after the fault failed: ${again.err.trim()}`);
      } else retried = true;
    }
  }

  // repair, then a clean check.
  const repaired = await runCli(["--root", root, "check", "--repair", "--json"]);
  const repairReport = parseReport(repaired, "check --repair");
  if (!repairReport.clean) {
    const left = repairReport.findings.filter((f) =>
      f.state !== "repaired" && f.state !== "vanished"
    );
    problems.push(
      `check --repair not clean: ${left.map((f) => `${f.kind} ${f.path}: ${f.detail}`).join("; ")}`,
    );
  }
  const again = parseReport(
    await runCli(["--root", root, "check", "--json"]),
    "check after repair",
  );
  if (again.findings.length > 0) {
    problems.push(
      `check after repair: ${again.findings.map((f) => `${f.kind} ${f.path}`).join("; ")}`,
    );
  }

  // Other layers untouched; the one in flight as before, as after, or (if allowed) gone.
  const after = snapshot(root);
  for (const [id, was] of before) {
    const now = after.get(id);
    if (inflight(id)) {
      const ok = sameState(now, was) || sameState(now, reference.get(id)) ||
        (scenario.mayVanish && now === undefined);
      if (!ok) {
        problems.push(
          `in-flight layer ${id} is neither as before nor as after: ${describe(now)} ` +
            `(before ${describe(was)}, after ${describe(reference.get(id))})`,
        );
      }
    } else if (!sameState(now, was)) {
      problems.push(`layer ${id} changed (${now === undefined ? "gone" : "content or chain"})`);
    }
  }
  for (const [id, now] of after) {
    if (before.has(id)) continue;
    if (!inflight(id)) problems.push(`layer ${id} appeared`);
    else if (!sameState(now, reference.get(id))) problems.push(`new layer ${id} is not as after`);
  }
  for (const [id, s] of after) if (s.incomplete) problems.push(`layer ${id} still incomplete`);
  if (retried) {
    for (const id of [...after.keys(), ...reference.keys()].filter(inflight)) {
      if (!sameState(after.get(id), reference.get(id))) {
        problems.push(
          `run again, the command succeeded but ${id} is not as after a successful run`,
        );
      }
    }
  }

  // Nothing left in the root, nothing mounted but what was (or the layer itself).
  const mountedAfter = mountsIn(root);
  for (const mp of mountedAfter) {
    if (beforeMounts.includes(mp)) continue;
    const id = mp.startsWith(real + "/mnt/") ? mp.slice(real.length + 5) : undefined;
    if (id !== undefined && scenario.mayBeMounted?.includes(id) && after.has(id)) continue;
    problems.push(`still mounted after repair: ${mp}`);
  }
  for (const mp of beforeMounts) {
    if (
      !mountedAfter.includes(mp) && !scenario.mayBeMounted?.some((id) => mp.endsWith(`/mnt/${id}`))
    ) {
      problems.push(`unmounted by the fault or the repair: ${mp}`);
    }
  }
  for (const left of leftovers(root, new Set(after.keys()), top, mountedAfter)) {
    problems.push(`left in the root after repair: ${left}`);
  }
  return problems;
}

/** Unmount everything below `dir` (deepest first). */
function unmountBelow(dir: string): void {
  unmountAllBelow(dir);
}

Deno.test({
  name: "fault injection: kill and ENOSPC/EIO at the Nth store call of every command",
  sanitizeResources: false, // the drivers this test opens keep their lock dir handles in caches
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "strata-faults-" });
    const libc = systemLibc();
    libc.mount("tmpfs", dir, "tmpfs", 0n, "mode=0700");
    let points = 0;
    try {
      const tmp = join(dir, "tars");
      await Deno.mkdir(tmp);
      const tars = {
        A: await makeTar(tmp, "A", TREE_A),
        B: await makeTar(tmp, "B", TREE_B),
        C: await makeTar(tmp, "C", TREE_C),
        Z: await makeTar(tmp, "Z", TREE_Z),
        Z2: await makeTar(tmp, "Z2", { ...TREE_Z, "z2": "2\n" }),
      };
      let n = 0;
      for (const scenario of SCENARIOS) {
        if (!scenario.name.startsWith(ONLY)) continue;
        await t.step(scenario.name, async () => {
          // The reference run: no fault; tells the points and the state after success.
          const ref = await freshStore(dir, n++, scenario, tars);
          const top = [...topNames(ref.root), "counts", "locks", "incomplete", "refs"];
          const counted = await runCli(["--root", ref.root, ...scenario.args(ref)], ref.root, {
            kind: "count",
          });
          assert.equal(counted.code, 0, `reference run failed: ${counted.err}`);
          const reference = snapshot(ref.root);
          unmountBelow(join(dir, `r${n - 1}`));
          const calls = counted.calls;
          // The calls every command makes first (Init: layout, sweeps, probes) are
          // sampled in one scenario; the others sample the calls that are their own.
          const baseline = await freshStore(dir, n++, scenario, tars);
          const opened = await runCli(["--root", baseline.root, "exists", "A"], baseline.root, {
            kind: "count",
          });
          unmountBelow(join(dir, `r${n - 1}`));
          const common = commonPrefix(calls, ref.root, opened.calls, baseline.root);
          const own = calls.slice(common);
          const init = calls.slice(0, common);
          const seed = seedOf(scenario.name);
          const kills = [
            ...(scenario.name === "create" ? sample(init.filter((x) => x.mutates), 4, seed) : []),
            ...sample(own.filter((x) => x.mutates), KILL_SAMPLE, seed),
          ];
          const fails = [
            ...(scenario.name === "create" ? sample(init, 6, seed + 1) : []),
            ...sample(own, FAIL_SAMPLE, seed + 1),
          ];
          const failures: string[] = [];
          const known = new Map<string, number>();
          const tryPoint = async (kind: "kill" | "fail", call: SeamCall) => {
            const c = await freshStore(dir, n++, scenario, tars);
            const here = join(dir, `r${n - 1}`);
            try {
              const before = snapshot(c.root);
              const beforeMounts = mountsIn(c.root);
              const args = ["--root", c.root, ...scenario.args(c)];
              const ran = kind === "kill"
                ? await runCliChild(args, c.root, call.n)
                : await runCli(args, c.root, { kind: "fail", at: call.n });
              if (kind === "kill" && ran.code !== null) {
                failures.push(`${kind} at #${call.n} (${call.op}): the child was not killed`);
              }
              const problems = await verify(scenario, c, before, beforeMounts, reference, ran, top);
              for (const p of triage(problems, scenario.name, known)) {
                failures.push(`${kind} at #${call.n} ${call.op} ${call.path}: ${p}`);
              }
              points++;
            } finally {
              unmountBelow(here);
              await Deno.remove(here, { recursive: true });
            }
          };
          for (const call of kills) await tryPoint("kill", call);
          for (const call of fails) await tryPoint("fail", call);
          reportKnown(known);
          assert.deepEqual(failures, [], `${scenario.name}: ${calls.length} calls`);
        });
      }
    } finally {
      console.log(`fault injection: ${points} points`);
      unmountBelow(dir);
      try {
        libc.umount2(dir, MNT.DETACH);
      } catch {
        // already gone
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});
