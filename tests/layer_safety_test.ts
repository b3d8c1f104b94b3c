/**
 * Layer-level safety (issue 9 items 3–8, 11; issue 13's incomplete layers):
 * every test runs a real overlay driver on a tmpfs through the harness, which
 * unmounts everything it made even when the test fails.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { removingName } from "../lib/ids.ts";
import { checkRoot } from "../lib/check.ts";
import { sweepRemoving } from "../lib/remove.ts";
import { systemLibc } from "../ffi/libc.ts";
import { mountsBelow, withOverlay } from "./support/overlay_harness.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { LayerIncompleteError, LayerInUseError, LayerNotFoundError } from "../lib/errors.ts";
import { encodeHeader, END_OF_ARCHIVE, padding } from "../lib/archive/tar_writer.ts";
import { makeHeader, TarType } from "../lib/archive/tar_header.ts";

const libc = systemLibc();
const listing = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

// ------------------------------------------------------------ item 11: 255-byte ids

Deno.test("a 255-byte id is created, mounted and removed, leaving nothing behind", async () => {
  await withOverlay(async (driver, h) => {
    const long = "b".repeat(255);
    const child = "c".repeat(254) + "d"; // 255 bytes too
    await driver.create(long, "");
    await driver.create(child, long);
    const path = await driver.get(child);
    await Deno.writeTextFile(join(path, "f"), "x");
    await driver.put(child);
    await driver.remove(child);
    await driver.remove(long);
    for (const dir of ["diff", "mnt", "work", "layers"]) {
      assert.deepEqual(listing(join(h.root, dir)), [], dir);
    }
    assert.equal(await driver.exists(long), false);
  }, { tmpfs: true });
});

Deno.test("removingName keeps the seed's name where it fits and a short -removing name otherwise", async () => {
  assert.equal(removingName("abc"), "abc-removing");
  const fits = "a".repeat(255 - 9);
  assert.equal(removingName(fits), fits + "-removing");
  const a = removingName("a".repeat(247)), b = removingName("b".repeat(255));
  assert.ok(a.endsWith("-removing-removing") && b.endsWith("-removing-removing"));
  assert.ok(a.length <= 255 && b.length <= 255);
  assert.notEqual(a, b);
  // Init's sweep finds both kinds of leftover.
  const dir = await Deno.makeTempDir();
  try {
    for (const name of [removingName("x"), b]) {
      await Deno.mkdir(join(dir, name, "sub"), { recursive: true });
    }
    const removed = await sweepRemoving(libc, dir);
    assert.equal(removed.length, 2);
    assert.deepEqual(listing(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ------------------------------------------------------------ item 4: create vs rm of the parent

Deno.test("creating a child and removing its parent exclude each other (two drivers, 40 tries)", async () => {
  await withOverlay(async (d1, h) => {
    const d2 = await OverlayDriver.init(h.root, h.options);
    let created = 0, removed = 0;
    for (let i = 0; i < 40; i++) {
      const p = `p${i}`, k = `k${i}`;
      await d1.create(p, "");
      // Alternate which one starts first, so both orders are tried.
      const [c, r] = i % 2 === 0
        ? await Promise.allSettled([d2.create(k, p), d1.remove(p, { ifUnused: true })])
        : (await Promise.allSettled([d1.remove(p, { ifUnused: true }), d2.create(k, p)]))
          .reverse();
      assert.ok(
        !(c.status === "fulfilled" && r.status === "fulfilled"),
        `try ${i}: both the child's create and the parent's remove succeeded`,
      );
      if (c.status === "fulfilled") {
        created++;
        assert.ok(r.status === "rejected" && r.reason instanceof LayerInUseError, String(r));
        assert.equal(await d1.exists(p), true);
        await d1.remove(k);
        await d1.remove(p);
      } else {
        removed++;
        assert.ok(c.reason instanceof LayerNotFoundError, String(c.reason));
        assert.equal(await d1.exists(k), false);
      }
    }
    assert.equal(created + removed, 40);
    assert.deepEqual(listing(join(h.root, "layers")), []);
  }, { tmpfs: true });
});

// ------------------------------------------------------------ item 8: nothing under the root is followed

Deno.test("a dangling symlink at locks/<id> is a clear error, quickly, and its target is not created", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("base", "");
    await driver.create("top", "base");
    const outside = join(h.base, "outside-lock");
    await Deno.remove(join(h.root, "locks", "top")).catch(() => {});
    await Deno.symlink(outside, join(h.root, "locks", "top"));
    for (const op of [() => driver.get("top"), () => driver.remove("top")]) {
      await assert.rejects(op(), /locks\/top is a symbolic link, not a regular file/);
    }
    assert.throws(() => Deno.lstatSync(outside), Deno.errors.NotFound);
    await Deno.remove(join(h.root, "locks", "top"));
    await driver.remove("top");
  }, { tmpfs: true });
});

Deno.test("a symlink at mnt/<id> or diff/<id> is refused; nothing is mounted or written through it", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("base", "");
    await driver.create("top", "base");
    const elsewhere = join(h.base, "elsewhere");
    await Deno.mkdir(elsewhere);
    await Deno.remove(join(h.root, "mnt", "top"));
    await Deno.symlink(elsewhere, join(h.root, "mnt", "top"));
    await assert.rejects(driver.get("top"), /mnt\/top is a symbolic link, not a directory/);
    assert.deepEqual(mountsBelow(elsewhere), []);
    assert.equal(await driver.mountCount("top"), 0, "the failed get took no reference");

    await Deno.remove(join(h.root, "diff", "base"), { recursive: true });
    await Deno.symlink(elsewhere, join(h.root, "diff", "base"));
    await assert.rejects(driver.get("base"), /diff\/base is a symbolic link/);
    await assert.rejects(driver.diff("base", ""), /diff\/base is a symbolic link/);
    await assert.rejects(driver.changes("top", "base"), /diff\/base is a symbolic link/);
    assert.deepEqual(listing(elsewhere), []);
    // Removal deletes the links themselves, never what they point to.
    await driver.remove("top");
    await driver.remove("base");
    assert.ok(Deno.statSync(elsewhere).isDirectory);
    assert.deepEqual(listing(join(h.root, "mnt")), []);
  }, { tmpfs: true });
});

Deno.test("a symlink at layers/<id> is refused, never read as a chain", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    const decoy = join(h.base, "decoy");
    await Deno.writeTextFile(decoy, "secret-first-line\n");
    await Deno.remove(join(h.root, "layers", "a"));
    await Deno.symlink(decoy, join(h.root, "layers", "a"));
    for (const op of [() => driver.parentChain("a"), () => driver.exists("a")]) {
      await assert.rejects(op(), (e: Error) => {
        assert.match(e.message, /layers\/a is a symbolic link, not a regular file/);
        assert.doesNotMatch(e.message, /secret/);
        return true;
      });
    }
    await Deno.remove(join(h.root, "layers", "a"));
    await driver.remove("a");
  }, { tmpfs: true });
});

// ------------------------------------------------------------ item 7: damaged layers

Deno.test("diff, changes and diffSize of a layer whose diff/<id> is missing fail naming the directory", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("base", "");
    await driver.create("top", "base");
    await Deno.remove(join(h.root, "diff", "top"), { recursive: true });
    const missing = new RegExp(`${join(h.root, "diff", "top")}: the layer's directory is missing`);
    await assert.rejects(driver.diff("top", "base"), missing);
    await assert.rejects(driver.changes("top", "base"), missing);
    await assert.rejects(driver.diffSize("top", "base"), missing);
    await assert.rejects(driver.get("top"), missing);
    // An ancestor's missing dir is named too.
    await Deno.remove(join(h.root, "diff", "base"), { recursive: true });
    await assert.rejects(driver.diff("base", ""), /diff\/base: the layer's directory is missing/);
  }, { tmpfs: true });
});

// ------------------------------------------------------------ items 5, 6: apply paths and incomplete layers

/** A tar of regular files `name -> content`. */
function tarOf(files: Record<string, string>): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const [name, text] of Object.entries(files)) {
    const body = new TextEncoder().encode(text);
    out.push(encodeHeader(makeHeader({ name, size: body.length, mode: 0o644 })));
    out.push(body, new Uint8Array(padding(body.length)));
  }
  out.push(END_OF_ARCHIVE);
  return out;
}

/**
 * A tar stream that sends one whole file, then the header of a big one, and
 * waits: `fail()` then errors it (an interrupted transfer).
 */
function stalledTar(): { stream: ReadableStream<Uint8Array>; sent: Promise<void>; fail(): void } {
  let fail!: () => void, sent!: () => void;
  const failed = new Promise<void>((r) => fail = r);
  const sentP = new Promise<void>((r) => sent = r);
  let step = 0;
  const first = tarOf({ "partial.txt": "p" }).slice(0, 3);
  const stream = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (step < first.length) c.enqueue(first[step++]);
      else if (step++ === first.length) {
        c.enqueue(encodeHeader(makeHeader({ name: "big", size: 1 << 20, mode: 0o644 })));
      } else {
        sent();
        await failed;
        c.error(new Error("connection reset"));
      }
    },
  }, { highWaterMark: 0 });
  return { stream, sent: sentP, fail };
}

Deno.test("the naive apply path (--parent not the direct parent) marks the layer incomplete and releases its mount on error", async () => {
  await withOverlay(async (d, h) => {
    await d.create("A", "");
    await d.create("B", "A");
    await d.create("C", "B");
    const t = stalledTar();
    const applying = d.applyDiff("C", "A", t.stream);
    await t.sent;
    assert.equal(await d.store.marker("C"), "apply into an empty layer", "marked while running");
    assert.deepEqual(mountsBelow(join(h.root, "mnt")), [join(h.root, "mnt", "C")]);
    t.fail();
    await assert.rejects(applying, /connection reset/);
    assert.equal(await d.store.marker("C"), "apply into an empty layer", "the mark stays");
    assert.equal(await d.mountCount("C"), 0, "the apply's reference is released");
    assert.deepEqual(mountsBelow(join(h.root, "mnt")), []);
    // Re-applying starts over from the empty layer; the partial file is gone.
    await d.applyDiff("C", "A", ReadableStream.from(tarOf({ "whole.txt": "w" })));
    assert.equal(await d.store.marker("C"), undefined);
    assert.deepEqual(listing(d.diffDir("C")), ["whole.txt"]);
    assert.equal(await d.mountCount("C"), 0);
    assert.deepEqual(mountsBelow(join(h.root, "mnt")), []);
  }, { tmpfs: true });
});

Deno.test("applying into a layer that others build on is refused up front, touching nothing", async () => {
  await withOverlay(async (d) => {
    await d.create("A", "");
    await d.applyDiff("A", "", ReadableStream.from(tarOf({ "a.txt": "a" })));
    await d.create("B", "A");
    for (const parent of ["", "B"]) {
      await assert.rejects(
        d.applyDiff("A", parent, ReadableStream.from(tarOf({ "x.txt": "x" }))),
        /layer "A": apply: refusing: 1 layer\(s\) build on it \(B\)/,
      );
    }
    assert.equal(await d.store.marker("A"), undefined);
    assert.deepEqual(listing(d.diffDir("A")), ["a.txt"]);
  }, { tmpfs: true });
});

Deno.test("an interrupted apply into a populated layer says so; re-apply is refused, remove works", async () => {
  await withOverlay(async (d) => {
    await d.create("A", "");
    await d.applyDiff("A", "", ReadableStream.from(tarOf({ "old.txt": "o" })));
    const t = stalledTar();
    const applying = d.applyDiff("A", "", t.stream);
    await t.sent;
    t.fail();
    await assert.rejects(applying, /connection reset/);
    const state = await d.layerState("A");
    assert.equal(state?.state, "incomplete");
    assert.equal(state?.reason, "apply into a populated layer");
    assert.match(state?.remedy ?? "", /cannot be restored: remove the layer and create it again/);
    await assert.rejects(
      d.applyDiff("A", "", ReadableStream.from(tarOf({ "x.txt": "x" }))),
      (e: unknown) => {
        assert.ok(e instanceof LayerIncompleteError);
        assert.match(e.message, /apply into a populated layer did not finish.*remove the layer/);
        return true;
      },
    );
    assert.ok(listing(d.diffDir("A")).includes("old.txt"), "the refusal changed nothing");
    await d.remove("A");
    assert.equal(await d.exists("A"), false);
  }, { tmpfs: true });
});

Deno.test("an incomplete layer is listed with its state; get, create and diff on it say what is wrong", async () => {
  await withOverlay(async (d) => {
    await d.create("A", "");
    await d.create("imp", "A", { incomplete: "image import" });
    // exists/listLayers mean "usable as it is"; the states show it.
    assert.equal(await d.exists("imp"), false);
    assert.deepEqual(await d.listLayers(), ["A"]);
    assert.deepEqual((await d.listLayerStates()).map((l) => [l.id, l.state, l.reason]), [
      ["A", "ok", undefined],
      ["imp", "incomplete", "image import"],
    ]);
    const incomplete = (op: string) => (e: unknown) => {
      assert.ok(e instanceof LayerIncompleteError, String(e));
      assert.match(
        e.message,
        new RegExp(`layer "imp": ${op}.*image import did not finish\\): apply its tar again`),
      );
      return true;
    };
    await assert.rejects(d.get("imp"), incomplete("get"));
    await assert.rejects(d.create("imp", "A"), incomplete("create"));
    await assert.rejects(d.create("kid", "imp"), incomplete("create kid on it"));
    await assert.rejects(d.diff("imp", "A"), incomplete("diff"));
    await assert.rejects(d.changes("imp", "A"), incomplete("changes"));
    assert.equal(await d.exists("kid"), false);
    assert.equal(await d.mountCount("imp"), 0);
    // Its own apply is what completes it.
    await d.applyDiff("imp", "A", ReadableStream.from(tarOf({ "f": "1" })));
    assert.deepEqual(await d.layerState("imp"), { id: "imp", state: "ok" });
    assert.ok((await d.get("imp")).endsWith("/mnt/imp"));
    await d.put("imp");
  }, { tmpfs: true });
});

// ------------------------------------------------------------ item 7: check finds damaged layers

Deno.test("check finds missing layer dirs; repair remakes mnt/ and work/, never fakes diff/", async () => {
  await withOverlay(async (d, h) => {
    await d.create("A", "");
    await d.create("B", "A");
    for (const p of ["diff/A", "mnt/B", "work/B"]) await Deno.remove(join(h.root, p));
    const found = await checkRoot(d);
    const missing = found.findings.filter((f) => f.kind === "missing-dir");
    assert.deepEqual(missing.map((f) => f.path).sort(), [
      join(h.root, "diff", "A"),
      join(h.root, "mnt", "B"),
      join(h.root, "work", "B"),
    ]);
    assert.equal(found.clean, false);
    const repaired = await checkRoot(d, { repair: true });
    const state = (p: string) => repaired.findings.find((f) => f.path === join(h.root, p))?.state;
    assert.equal(state("diff/A"), "unsafe");
    assert.equal(state("mnt/B"), "repaired");
    assert.equal(state("work/B"), "repaired");
    assert.ok(Deno.statSync(join(h.root, "mnt", "B")).isDirectory);
    assert.throws(() => Deno.statSync(join(h.root, "diff", "A")), Deno.errors.NotFound);
  }, { tmpfs: true });
});

Deno.test("check finds an emptied or truncated chain by its parent's or child's, and repairs it", async () => {
  await withOverlay(async (d, h) => {
    await d.create("A", "");
    await d.create("B", "A");
    await d.create("C", "B");
    await d.create("D", "C");
    // B's chain emptied (B looks like a base layer); D's truncated to its first line.
    await Deno.writeTextFile(join(h.root, "layers", "B"), "");
    await Deno.writeTextFile(join(h.root, "layers", "D"), "C\n");
    const found = (await checkRoot(d)).findings.filter((f) => f.kind === "chain-mismatch");
    assert.deepEqual(found.map((f) => f.id).sort(), ["B", "D"]);
    const repaired = await checkRoot(d, { repair: true });
    assert.ok(repaired.findings.every((f) => f.state === "repaired"), JSON.stringify(repaired));
    assert.deepEqual(await d.parentChain("B"), ["A"]);
    assert.deepEqual(await d.parentChain("D"), ["C", "B", "A"]);
    assert.equal((await checkRoot(d)).clean, true);
  }, { tmpfs: true });
});

Deno.test("check reports a parent cycle and a chain that disagrees with its parent's, and leaves them", async () => {
  await withOverlay(async (d, h) => {
    await d.create("A", "");
    await d.create("X", "A");
    await d.create("Y", "A");
    await d.create("Z", "A");
    await Deno.writeTextFile(join(h.root, "layers", "X"), "Y\n");
    await Deno.writeTextFile(join(h.root, "layers", "Y"), "X\n");
    await Deno.writeTextFile(join(h.root, "layers", "Z"), "X\nA\n"); // X's chain says [Y]
    await d.create("P", "");
    await d.create("Q", "P");
    await d.create("R", "Q");
    await Deno.writeTextFile(join(h.root, "layers", "R"), "Q\nA\n"); // Q's chain says [P]
    const report = await checkRoot(d, { repair: true });
    assert.deepEqual(
      report.findings.filter((f) => f.kind === "chain-mismatch").map((f) => [f.id, f.state]),
      [["R", "unsafe"]],
    );
    const kinds = report.findings.map((f) => [f.kind, f.id, f.state]);
    assert.deepEqual(kinds.filter(([k]) => k === "chain-cycle").sort(), [
      ["chain-cycle", "X", "unsafe"],
      ["chain-cycle", "Y", "unsafe"],
    ]);
    assert.equal(report.clean, false);
    assert.equal(await Deno.readTextFile(join(h.root, "layers", "X")), "Y\n", "left alone");
    assert.equal(await Deno.readTextFile(join(h.root, "layers", "Z")), "X\nA\n", "left alone");
  }, { tmpfs: true });
});

// ------------------------------------------------------------ messages

Deno.test("a link out of the layer is named in the error, which says it points outside the layer", async () => {
  await withOverlay(async (d, h) => {
    // Targets inside this test's temp dir: were confinement to fail, nothing of the host is hit.
    for (const [i, link] of ["../../../outside", join(h.base, "outside")].entries()) {
      const id = `L${i}`;
      await d.create(id, "");
      const tar = ReadableStream.from<Uint8Array>([
        encodeHeader(makeHeader({ name: "evil", type: TarType.SYMLINK, linkname: link })),
        ...tarOf({ "evil/x": "x" }),
      ]);
      await assert.rejects(d.applyDiff(id, "", tar), (e: Error) => {
        assert.match(e.message, /entry "evil\/x"/);
        assert.ok(
          e.message.includes(
            `"evil" is a symbolic link to ${JSON.stringify(link)}, which points outside the layer`,
          ),
          e.message,
        );
        return true;
      });
      assert.throws(() => Deno.lstatSync(join(h.base, "outside")), Deno.errors.NotFound);
    }
  }, { tmpfs: true });
});
