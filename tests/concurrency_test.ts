/**
 * Several processes on one root at once: four library workers
 * (`support/concurrency_child.ts`: create, mount, write, umount, rm of their
 * own layers on a shared layer, children of a layer one of them tries to
 * remove, a fresh Init every iteration) and a CLI process doing the same by
 * command, all started together. Afterwards: every worker finished with no
 * unexpected error, `check` finds nothing, nothing is mounted under the root,
 * the shared layers are unchanged, each kept layer holds what its worker
 * wrote, and nothing else is left in the root.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { checkRoot } from "../lib/check.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { unmountAllBelow } from "./support/overlay_harness.ts";
import { runCommand } from "./support/run.ts";
import { reportKnown, triage } from "./support/known_defects.ts";
import { leftovers, mountsIn, snapshot, topNames, treeHash } from "./support/store_probe.ts";

const CHILD = new URL("./support/concurrency_child.ts", import.meta.url).pathname;
const CLI = new URL("../cli.ts", import.meta.url).pathname;
const WORKERS = 4;
const ITERATIONS = 4;

const options = { loadModule: () => Promise.resolve(), onWarning: () => {} };

Deno.test("create/rm/mount/umount from five processes at once leave a clean store and no mounts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-concurrency-" });
  const root = join(dir, "root");
  try {
    const d = await OverlayDriver.init(root, options);
    await d.create("A", "");
    await Deno.writeTextFile(join(d.diffDir("A"), "a"), "base\n");
    await d.create("S", "A");
    await Deno.writeTextFile(join(d.diffDir("S"), "s"), "shared\n");
    await d.create("P", "A");
    const top = [...topNames(root), "counts", "locks", "incomplete", "refs"];
    const sharedBefore = treeHash(d.diffDir("S"));

    const cli = (...args: string[]) =>
      runCommand(Deno.execPath(), ["run", "-A", "--no-prompt", CLI, "--root", root, ...args]);
    const cliWorker = async () => {
      const out: string[] = [];
      for (
        const args of [["create", "c1", "--parent", "S"], ["mount", "c1"], ["umount", "c1"], [
          "rm",
          "c1",
        ]]
      ) {
        const r = await cli(...args);
        if (r.code !== 0) out.push(`cli ${args.join(" ")}: exit ${r.code}: ${r.err.trim()}`);
      }
      return out;
    };
    const workers = Array.from(
      { length: WORKERS },
      (_, w) =>
        runCommand(Deno.execPath(), [
          "run",
          "-A",
          "--no-prompt",
          CHILD,
          root,
          String(w),
          String(ITERATIONS),
        ]),
    );
    const [cliProblems, ...ran] = await Promise.all([cliWorker(), ...workers]);

    const problems = [...cliProblems];
    ran.forEach((r, w) => {
      if (r.code !== 0) problems.push(`worker ${w} exit ${r.code}: ${r.err.trim()}`);
      else problems.push(...JSON.parse(r.out.trim().split("\n").at(-1)!).unexpected);
    });
    assert.deepEqual(problems, []);

    const report = await checkRoot(await OverlayDriver.init(root, options));
    assert.deepEqual(report.findings, [], "check after the workers");
    assert.deepEqual(mountsIn(root), [], "mounts left under the root");
    const layers = snapshot(root);
    const keeps = Array.from({ length: WORKERS }, (_, w) => `w${w}-keep`);
    const expected = ["A", "S", ...keeps];
    assert.deepEqual(
      [...layers.keys()].filter((id) => id !== "P").sort(),
      expected.sort(),
      "layers left (P may have been removed by worker 0)",
    );
    assert.equal(treeHash(d.diffDir("S")), sharedBefore, "S changed");
    for (let w = 0; w < WORKERS; w++) {
      assert.equal(await Deno.readTextFile(join(d.diffDir(`w${w}-keep`), "who")), `worker ${w}\n`);
    }
    const known = new Map<string, number>();
    const left = leftovers(root, new Set(layers.keys()), top, []).map((p) =>
      `left in the root: ${p}`
    );
    assert.deepEqual(triage(left, "concurrency", known), []);
    reportKnown(known);
  } finally {
    unmountAllBelow(dir);
    await Deno.remove(dir, { recursive: true });
  }
});
