/**
 * `checkRoot` on a real overlay driver: each kind of crash leftover is made
 * by hand, found, and repaired (or refused when repairing would lose data).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { checkRoot, type Finding } from "../lib/check.ts";
import { openDriver, UnionDriver } from "../mod.ts";

async function withDriver(fn: (d: UnionDriver) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-check-test-" });
  let driver: UnionDriver | undefined;
  try {
    const d = await openDriver("overlay", join(dir, "root"));
    assert.ok(d instanceof UnionDriver);
    driver = d;
    await fn(d);
  } finally {
    await driver?.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
}

const summary = (fs: Finding[]) => fs.map((f) => [f.kind, f.id ?? "", f.state]);

Deno.test("a healthy root has no findings", async () => {
  await withDriver(async (d) => {
    await d.create("base", "");
    await d.create("top", "base");
    await d.get("top");
    const report = await checkRoot(d);
    assert.deepEqual(report.findings, []);
    assert.equal(report.clean, true);
    assert.equal(report.layers, 2);
    await d.put("top");
  });
});

Deno.test("an incomplete layer is found, and removed by repair", async () => {
  await withDriver(async (d) => {
    await d.create("half", "");
    await d.store.markIncomplete("half", "apply");
    const found = await checkRoot(d);
    assert.deepEqual(summary(found.findings), [["incomplete", "half", "found"]]);
    assert.match(found.findings[0].detail, /apply/);
    assert.equal(found.clean, false);
    const fixed = await checkRoot(d, { repair: true });
    assert.deepEqual(summary(fixed.findings), [["incomplete", "half", "repaired"]]);
    assert.equal(fixed.clean, true);
    assert.deepEqual(await d.store.incomplete(), []);
    await assert.rejects(Deno.lstat(d.diffDir("half")), Deno.errors.NotFound);
  });
});

Deno.test("an incomplete layer others build on is not removed", async () => {
  await withDriver(async (d) => {
    await d.create("base", "");
    await d.create("child", "base");
    await d.store.markIncomplete("base", "apply");
    const report = await checkRoot(d, { repair: true });
    const f = report.findings.find((x) => x.kind === "incomplete");
    assert.equal(f?.state, "unsafe");
    assert.match(f!.detail, /child build on it/);
    assert.equal(report.clean, false);
    assert.ok(await d.store.parents("base").then(() => true));
    // The child's chain names a layer that is not complete: reported too.
    assert.ok(report.findings.some((x) => x.kind === "missing-parent" && x.id === "child"));
  });
});

Deno.test("a chain naming a removed layer is reported, never repaired", async () => {
  await withDriver(async (d) => {
    await d.create("base", "");
    await d.create("child", "base");
    await Deno.remove(d.store.fileOf("base")); // as if removed behind the child's back
    const report = await checkRoot(d, { repair: true });
    const f = report.findings.find((x) => x.kind === "missing-parent");
    assert.equal(f?.id, "child");
    assert.match(f!.detail, /base do not exist/);
    assert.notEqual(f!.state, "repaired");
    assert.equal(report.clean, false);
    assert.ok(await d.exists("child"));
  });
});

Deno.test("a union mounted with no reference recorded is unmounted by repair", async () => {
  await withDriver(async (d) => {
    await d.create("base", "");
    await d.create("top", "base");
    const path = await d.get("top");
    await Deno.remove(join(d.root, "counts", "top")); // the reference got lost
    const found = await checkRoot(d);
    assert.deepEqual(summary(found.findings), [["stale-mount", "top", "found"]]);
    const fixed = await checkRoot(d, { repair: true });
    assert.deepEqual(summary(fixed.findings), [["stale-mount", "top", "repaired"]]);
    assert.equal(d.isMounted(path), false);
  });
});

Deno.test("references recorded for an unmounted union are reset by repair", async () => {
  await withDriver(async (d) => {
    await d.create("base", "");
    await d.create("top", "base");
    await Deno.mkdir(join(d.root, "counts"), { recursive: true });
    await Deno.writeTextFile(join(d.root, "counts", "top"), "3\n");
    await Deno.writeTextFile(join(d.root, "counts", "gone"), "1\n");
    const found = await checkRoot(d);
    assert.deepEqual(summary(found.findings), [["stale-count", "gone", "found"], [
      "stale-count",
      "top",
      "found",
    ]]);
    const fixed = await checkRoot(d, { repair: true });
    assert.equal(fixed.clean, true);
    assert.deepEqual((await checkRoot(d)).findings, []);
    assert.equal(await d.mountCount("top"), 0);
  });
});

Deno.test("leftover -removing dirs and orphan layer dirs are deleted by repair", async () => {
  await withDriver(async (d) => {
    await d.create("keep", "");
    await Deno.mkdir(join(d.root, "diff", "old-removing", "deep"), { recursive: true });
    await Deno.mkdir(join(d.root, "mnt", "ghost"));
    await Deno.writeTextFile(join(d.root, "diff", "keep", "file"), "x");
    const found = await checkRoot(d);
    assert.deepEqual(summary(found.findings), [["orphan-dir", "", "found"], [
      "removing-leftover",
      "",
      "found",
    ]]);
    const fixed = await checkRoot(d, { repair: true });
    assert.equal(fixed.clean, true);
    await assert.rejects(Deno.lstat(join(d.root, "diff", "old-removing")), Deno.errors.NotFound);
    await assert.rejects(Deno.lstat(join(d.root, "mnt", "ghost")), Deno.errors.NotFound);
    assert.equal(await Deno.readTextFile(join(d.root, "diff", "keep", "file")), "x");
  });
});
