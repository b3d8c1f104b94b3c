/**
 * tar-split: the record written while a tar is applied, and the original
 * tar given back by `diff`. The format is checked against the Go code
 * (vbatts/tar-split as containers/storage uses it, `storagepeer
 * tarsplit-disasm` / `tarsplit-asm`) both ways; the round trip is checked
 * for tars from GNU tar, from the Go code and from strata.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { withAufs } from "./support/aufs_harness.ts";
import { untar } from "../lib/archive/untar.ts";
import { tarDirectory } from "../lib/archive/tar_dir.ts";
import { encodeHeader, END_OF_ARCHIVE, padding } from "../lib/archive/tar_writer.ts";
import { makeHeader, TarType } from "../lib/archive/tar_header.ts";
import { Crc64 } from "../lib/archive/crc64.ts";
import {
  assembleTar,
  dirFileGetter,
  TarSplitReader,
  TarSplitRecorder,
} from "../lib/archive/tar_split.ts";
import { TarSplitUnavailableError } from "../lib/errors.ts";
import type { LayerTar } from "../lib/driver.ts";
import { checkRoot } from "../lib/check.ts";
import { mountpointsUnder } from "../lib/mounts.ts";
import { MKTREE, PEER, peerAvailable } from "./support/peer.ts";
import { runCommand } from "./support/run.ts";
import { randomTar, randomTree, tarSplitRoundTrip } from "./support/random_tars.ts";

const CI = Deno.env.get("CI") === "true";
const peer = peerAvailable() && isFile("/usr/bin/tar");
if (!peer && !CI) {
  console.log(`tar_split_test: ${PEER}, ${MKTREE} or GNU tar missing: peer tests ignored`);
}
/** Peer tests run when the peer is there, and fail under CI when it is not. */
const ignorePeer = !peer && !CI;

function isFile(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

async function bytesOf(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

async function sha256(b: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>));
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function run(cmd: string, args: string[], stdin?: string): Promise<Uint8Array> {
  const r = await runCommand(cmd, args, { stdin: stdin ? { file: stdin } : undefined });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.err}`);
  return r.stdout;
}

/** Untar `tar` into `dir`, recording; returns the record's JSON lines (not gzip'd). */
async function untarRecording(tar: Uint8Array, dir: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const rec = new TarSplitRecorder((b) => parts.push(b));
  await untar(new Blob([tar as Uint8Array<ArrayBuffer>]).stream(), dir, { tarSplit: rec });
  assert.ok(rec.usable);
  return new Uint8Array(await new Blob(parts as Uint8Array<ArrayBuffer>[]).arrayBuffer());
}

function gunzip(b: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([b as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new DecompressionStream("gzip"),
  );
  return bytesOf(s);
}

/** The record's objects with neighbouring segments merged (readers cannot tell the difference). */
async function normalized(jsonLines: Uint8Array): Promise<string[]> {
  const r = new TarSplitReader(new Blob([jsonLines as Uint8Array<ArrayBuffer>]).stream(), "t", {
    gzip: false,
  });
  const out: string[] = [];
  let seg: number[] = [];
  for (let e = await r.next(); e !== null; e = await r.next()) {
    if (e.type === 2) {
      seg.push(...e.payload);
      continue;
    }
    if (seg.length > 0) out.push(`seg ${seg.length} ${await sha256(new Uint8Array(seg))}`);
    seg = [];
    out.push(`file ${JSON.stringify([...e.name])} ${e.size} ${e.crc?.toHex() ?? "-"}`);
  }
  if (seg.length > 0) out.push(`seg ${seg.length} ${await sha256(new Uint8Array(seg))}`);
  return out;
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-ts-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function withOverlay(fn: (d: OverlayDriver, dir: string) => Promise<void>): Promise<void> {
  await withTemp(async (dir) => {
    let d: OverlayDriver | undefined;
    try {
      d = await OverlayDriver.init(join(dir, "root"), { onWarning: () => {} });
      await fn(d, dir);
    } finally {
      try {
        await d?.cleanup();
      } finally {
        assert.deepEqual(mountpointsUnder(dir), [], "no mount left behind");
      }
    }
  });
}

const enc = new TextEncoder();

/** The tar's `source`; the stream itself is cancelled (it holds the layer open). */
async function expectSource(tar: Promise<LayerTar>, source: string): Promise<void> {
  const t = await tar;
  await t.cancel();
  assert.equal(t.source, source);
}

function streamOf(b: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([b as Uint8Array<ArrayBuffer>]).stream();
}

/** A small tar by hand: a dir, files of sizes around the block, a symlink, a hard link. */
function handTar(): Uint8Array {
  const parts: Uint8Array[] = [];
  const file = (name: string, body: Uint8Array) => {
    parts.push(encodeHeader(makeHeader({ name, size: body.length, mtimeSec: 1e9 })));
    parts.push(body, new Uint8Array(padding(body.length)));
  };
  parts.push(encodeHeader(makeHeader({ name: "d/", type: TarType.DIR, mode: 0o755 })));
  file("d/empty", new Uint8Array(0));
  file("d/511", new Uint8Array(511).fill(1));
  file("d/512", new Uint8Array(512).fill(2));
  file("d/513", new Uint8Array(513).fill(3));
  file("a<b>&c", enc.encode("html-escaped name\n"));
  parts.push(encodeHeader(makeHeader({ name: "l", type: TarType.SYMLINK, linkname: "d/512" })));
  parts.push(encodeHeader(makeHeader({ name: "h", type: TarType.LINK, linkname: "d/513" })));
  parts.push(END_OF_ARCHIVE, new Uint8Array(3000)); // trailing zeros, as tar's records leave
  return new Uint8Array(parts.flatMap((p) => [...p]));
}

Deno.test("crc64: Go's CRC-64/ISO (hash/crc64 with crc64.ISO)", () => {
  // Values from Go: crc64.Checksum(data, crc64.MakeTable(crc64.ISO)).
  const c = new Crc64();
  assert.equal(c.hex(), "0000000000000000");
  c.update(enc.encode("hello\n"));
  assert.equal(c.hex(), "614c3eeee2d81000");
  // Chunked the same as whole, across the 8-byte fast path.
  const data = new Uint8Array(1000).map((_, i) => (i * 7919) & 0xff);
  const whole = new Crc64();
  whole.update(data);
  const parts = new Crc64();
  for (let i = 0; i < data.length; i += 13) parts.update(data.subarray(i, i + 13));
  assert.equal(parts.hex(), whole.hex());
});

Deno.test("recorder: a hand-made tar reassembles to its own bytes, and the JSON is Go's", async () => {
  await withTemp(async (dir) => {
    const tar = handTar();
    const json = await untarRecording(tar, join(dir, "x"));
    const lines = new TextDecoder().decode(json).trimEnd().split("\n");
    assert.equal(lines[0].slice(0, 21), '{"type":2,"payload":"');
    assert.equal(lines[1], '{"type":1,"name":"d/","payload":null,"position":1}');
    assert.ok(lines.includes('{"type":1,"name":"d/empty","payload":null,"position":3}'));
    assert.ok(lines.some((l) => l.startsWith('{"type":1,"name":"a\\u003cb\\u003e\\u0026c"')));
    assert.equal(lines.at(-1), `{"type":2,"payload":"","position":${lines.length - 1}}`);
    const back = await bytesOf(
      assembleTar(streamOf(json), dirFileGetter(join(dir, "x")), { gzip: false }),
    );
    assert.equal(await sha256(back), await sha256(tar));
    // A BYOB reader recycling one small buffer gets the same bytes, and its
    // last read ends (the stream is a byte stream; strata diff reads it so).
    const reader = assembleTar(streamOf(json), dirFileGetter(join(dir, "x")), { gzip: false })
      .getReader({ mode: "byob" });
    let buf = new Uint8Array(700);
    const parts: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read(buf);
      if (done || !value) break;
      parts.push(value.slice());
      buf = new Uint8Array(value.buffer);
    }
    const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (joined.set(p, at), at + p.length), 0);
    assert.equal(await sha256(joined), await sha256(tar));
    if (peer) {
      // The Go packer writes the very same lines for the same tar.
      await Deno.writeFile(join(dir, "t.tar"), tar);
      await run(PEER, ["tarsplit-disasm", join(dir, "go"), join(dir, "go.gz")], join(dir, "t.tar"));
      assert.deepEqual(await gunzip(await Deno.readFile(join(dir, "go.gz"))), json);
    }
  });
});

/** The three producers' tars of one mktree tree (made once). */
let fixture: Promise<{ dir: string; tars: Record<string, string> }> | undefined;
function peerTars(): Promise<{ dir: string; tars: Record<string, string> }> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "strata-ts-fix-" });
    const tree = join(dir, "tree");
    await run(MKTREE, ["--files", "120", "--dirs", "12", "--nasty", "rootfs", tree]);
    const tars: Record<string, string> = {
      gnu: join(dir, "gnu.tar"),
      pax: join(dir, "pax.tar"),
      go: join(dir, "go.tar"),
      strata: join(dir, "strata.tar"),
    };
    await Deno.writeFile(tars.gnu, await run("tar", ["-C", tree, "-cf", "-", "."]));
    await Deno.writeFile(
      tars.pax,
      await run("tar", ["-C", tree, "--format=pax", "--xattrs", "-cf", "-", "."]),
    );
    await Deno.writeFile(tars.go, await run(PEER, ["tar", tree]));
    await Deno.writeFile(tars.strata, await bytesOf(await tarDirectory(tree)));
    return { dir, tars };
  })();
  return fixture;
}

Deno.test({
  name: "peer: strata's record equals Go's (segments merged) for GNU, PAX, Go and strata tars",
  ignore: ignorePeer,
  async fn() {
    const { tars } = await peerTars();
    for (const [who, path] of Object.entries(tars)) {
      await withTemp(async (dir) => {
        const tar = await Deno.readFile(path);
        const ours = await untarRecording(tar, join(dir, "ours"));
        await run(PEER, ["tarsplit-disasm", join(dir, "go"), join(dir, "go.gz")], path);
        const go = await gunzip(await Deno.readFile(join(dir, "go.gz")));
        assert.deepEqual(await normalized(ours), await normalized(go), `${who} tar`);
      });
    }
  },
});

Deno.test({
  name:
    "peer: applyDiff → diff gives the same sha256 for GNU, PAX, Go and strata tars; both readers agree",
  ignore: ignorePeer,
  async fn() {
    const { tars } = await peerTars();
    for (const [who, path] of Object.entries(tars)) {
      await withOverlay(async (d, dir) => {
        const tar = await Deno.readFile(path);
        await d.create("l", "");
        await d.applyDiff("l", "", (await Deno.open(path)).readable);
        const out = await d.diff("l", "");
        assert.equal(out.source, "original", who);
        assert.equal(await sha256(await bytesOf(out)), await sha256(tar), `${who}: strata diff`);
        // Go reassembles strata's record from the layer's files.
        const record = d.tarSplit.pathOf("l");
        const goOut = await run(PEER, ["tarsplit-asm", d.diffDir("l"), record]);
        assert.equal(await sha256(goOut), await sha256(tar), `${who}: Go tarsplit-asm`);
        // strata reassembles Go's record from Go's extraction.
        await run(PEER, ["tarsplit-disasm", join(dir, "go"), join(dir, "go.gz")], path);
        const back = assembleTar(
          (await Deno.open(join(dir, "go.gz"))).readable,
          dirFileGetter(join(dir, "go")),
        );
        assert.equal(await sha256(await bytesOf(back)), await sha256(tar), `${who}: Go's record`);
      });
    }
  },
});

Deno.test({
  name: "peer: a child layer with whiteouts (aufs-rw tree, Go tar) diffs to its original bytes",
  ignore: ignorePeer,
  async fn() {
    const { dir: fix, tars } = await peerTars();
    const rw = join(fix, "rw");
    await run(MKTREE, ["--files", "120", "--dirs", "12", "aufs-rw", rw, join(fix, "tree")]);
    const childTar = join(fix, "child.tar");
    await Deno.writeFile(childTar, await run(PEER, ["tar", rw]));
    await withOverlay(async (d) => {
      await d.create("base", "");
      await d.applyDiff("base", "", (await Deno.open(tars.go)).readable);
      await d.create("child", "base");
      await d.applyDiff("child", "base", (await Deno.open(childTar)).readable);
      const out = await d.diff("child", "base");
      assert.equal(out.source, "original");
      assert.equal(await sha256(await bytesOf(out)), await sha256(await Deno.readFile(childTar)));
      // Against another parent the record does not apply: rebuilt, and "original" refuses.
      const flat = await d.diff("child", "");
      assert.equal(flat.source, "rebuilt");
      await flat.cancel();
      await assert.rejects(
        d.diff("child", "", { source: "original" }),
        (e) => e instanceof TarSplitUnavailableError && /not its direct parent/.test(e.message),
      );
      // The naive read paths kept the record.
      assert.ok(d.tarSplit.has("child"));
    });
  },
});

Deno.test("diff falls back to a rebuilt tar once the layer may have changed, and says so", async () => {
  await withOverlay(async (d) => {
    const tar = handTar();
    const stream = () => new Blob([tar as Uint8Array<ArrayBuffer>]).stream();
    await d.create("a", "");
    await d.applyDiff("a", "", stream());
    assert.ok(d.tarSplit.has("a"));

    // A get that promises not to write keeps the record.
    await d.get("a", { keepTarSplit: true });
    await d.put("a");
    await expectSource(d.diff("a", ""), "original");

    // "rebuilt" is built from the files even with a record.
    const rebuilt = await d.diff("a", "", { source: "rebuilt" });
    assert.equal(rebuilt.source, "rebuilt");
    assert.notEqual(await sha256(await bytesOf(rebuilt)), await sha256(tar));

    // A writable get drops it: what the caller gets is rebuilt, and "original" refuses.
    const root = await d.get("a");
    await Deno.writeTextFile(join(root, "new"), "x");
    await d.put("a");
    assert.equal(d.tarSplit.has("a"), false);
    const after = await d.diff("a", "");
    assert.equal(after.source, "rebuilt");
    assert.ok(new TextDecoder().decode(await bytesOf(after)).includes("new"));
    await assert.rejects(
      d.diff("a", "", { source: "original" }),
      (e) => e instanceof TarSplitUnavailableError && e.id === "a",
    );

    // A second apply onto a non-empty layer records nothing.
    await d.create("b", "");
    await d.applyDiff("b", "", stream());
    await d.applyDiff("b", "", stream());
    assert.equal(d.tarSplit.has("b"), false);
    await expectSource(d.diff("b", ""), "rebuilt");

    // A layer made through the mount never had one.
    await d.create("c", "b");
    const mnt = await d.get("c");
    await Deno.writeTextFile(join(mnt, "f"), "y");
    await d.put("c");
    await expectSource(d.diff("c", "b"), "rebuilt");

    // A record left behind for an id (a removal cut short) is not the next layer's.
    await d.create("a0", "");
    await d.applyDiff("a0", "", stream());
    await Deno.copyFile(d.tarSplit.pathOf("a0"), d.tarSplit.pathOf("z"));
    await d.create("z", "");
    assert.equal(d.tarSplit.has("z"), false);

    // remove deletes the record with the layer.
    await d.create("e", "");
    await d.applyDiff("e", "", stream());
    assert.ok(d.tarSplit.has("e"));
    await d.remove("e");
    assert.equal(d.tarSplit.has("e"), false);
  });
});

Deno.test("a tar that names a path twice is applied, but keeps no record", async () => {
  await withOverlay(async (d) => {
    const body = enc.encode("one");
    const tar = new Uint8Array([
      ...encodeHeader(makeHeader({ name: "f", size: body.length })),
      ...body,
      ...new Uint8Array(padding(body.length)),
      ...encodeHeader(makeHeader({ name: "./f", size: body.length })),
      ...body,
      ...new Uint8Array(padding(body.length)),
      ...END_OF_ARCHIVE,
    ]);
    await d.create("a", "");
    await d.applyDiff("a", "", streamOf(tar));
    assert.equal(await Deno.readTextFile(join(d.diffDir("a"), "f")), "one");
    assert.equal(d.tarSplit.has("a"), false);
    assert.deepEqual(d.tarSplit.list(), { records: [], temps: [], other: [] }, "no temp left");
  });
});

Deno.test("overlay: a body under a .wh. name (not on disk by that name) keeps no record", async () => {
  await withOverlay(async (d) => {
    const body = enc.encode("pseudo-link target");
    const tar = new Uint8Array([
      ...encodeHeader(makeHeader({ name: ".wh..wh.plnk/1.2", size: body.length })),
      ...body,
      ...new Uint8Array(padding(body.length)),
      ...encodeHeader(makeHeader({ name: "f", type: TarType.LINK, linkname: ".wh..wh.plnk/1.2" })),
      ...END_OF_ARCHIVE,
    ]);
    await d.create("a", "");
    await d.applyDiff("a", "", streamOf(tar));
    assert.equal(await Deno.readTextFile(join(d.diffDir("a"), "f")), "pseudo-link target");
    assert.equal(d.tarSplit.has("a"), false);
    await expectSource(d.diff("a", ""), "rebuilt");
  });
});

Deno.test("aufs: a layer tar with whiteouts and pseudo-links diffs to its original bytes", async () => {
  await withAufs(async (d) => {
    const body = enc.encode("kept literally on aufs\n");
    const tar = new Uint8Array([
      ...encodeHeader(makeHeader({ name: "dir/", type: TarType.DIR, mode: 0o755 })),
      ...encodeHeader(makeHeader({ name: "dir/.wh..wh..opq" })),
      ...encodeHeader(makeHeader({ name: ".wh.gone" })),
      ...encodeHeader(makeHeader({ name: ".wh..wh.plnk/7.8", size: body.length })),
      ...body,
      ...new Uint8Array(padding(body.length)),
      ...encodeHeader(makeHeader({ name: "f", type: TarType.LINK, linkname: ".wh..wh.plnk/7.8" })),
      ...END_OF_ARCHIVE,
    ]);
    await d.create("base", "");
    await d.applyDiff("base", "", streamOf(handTar()));
    await d.create("child", "base");
    await d.applyDiff("child", "base", streamOf(tar));
    const out = await d.diff("child", "base");
    assert.equal(out.source, "original");
    assert.equal(await sha256(await bytesOf(out)), await sha256(tar));
    const rebuilt = await d.diff("child", "base", { source: "rebuilt" });
    assert.notEqual(await sha256(await bytesOf(rebuilt)), await sha256(tar));
  });
});

Deno.test("a failed apply leaves no record and no temp file", async () => {
  await withOverlay(async (d) => {
    const tar = handTar().subarray(0, 1536 + 100); // cut inside a body
    await d.create("a", "");
    await assert.rejects(d.applyDiff("a", "", streamOf(tar)));
    assert.equal(d.tarSplit.has("a"), false);
    assert.deepEqual(d.tarSplit.list(), { records: [], temps: [], other: [] });
  });
});

Deno.test("check reports records of no layer and temp leftovers; repair removes them", async () => {
  await withOverlay(async (d) => {
    await d.create("a", "");
    await d.applyDiff("a", "", streamOf(handTar()));
    await Deno.writeFile(d.tarSplit.pathOf("ghost"), new Uint8Array(1));
    await Deno.writeFile(d.tarSplit.tempPathOf("a"), new Uint8Array(1));
    await Deno.writeFile(join(d.tarSplit.dir, "junk"), new Uint8Array(1));
    // A temp record of an incomplete layer belongs to that layer's finding.
    await d.create("half", "", { incomplete: "import" });
    await Deno.writeFile(d.tarSplit.tempPathOf("half"), new Uint8Array(1));
    const report = await checkRoot(d);
    const found = report.findings.filter((f) => f.kind === "orphan-tar-split");
    assert.deepEqual(found.map((f) => f.path).sort(), [
      d.tarSplit.tempPathOf("a"),
      d.tarSplit.pathOf("ghost"),
      join(d.tarSplit.dir, "junk"),
    ]);
    const repaired = await checkRoot(d, { repair: true });
    assert.ok(repaired.clean, JSON.stringify(repaired.findings));
    assert.deepEqual(d.tarSplit.list(), { records: ["a"], temps: [], other: [] });
    await expectSource(d.diff("a", ""), "original");
  });
});

Deno.test("diffGetter reads a layer's files by tar name, confined to the layer", async () => {
  await withOverlay(async (d) => {
    await d.create("a", "");
    await d.applyDiff("a", "", streamOf(handTar()));
    const g = await d.diffGetter("a");
    try {
      assert.equal(
        new TextDecoder().decode(await bytesOf(await g.get("./a<b>&c"))),
        "html-escaped name\n",
      );
      assert.equal((await bytesOf(await g.get("/d/512"))).length, 512);
    } finally {
      await g.close();
    }
  });
});

Deno.test("random tars (USTAR/PAX/GNU/v7 headers, odd endings) reassemble to their bytes", async () => {
  // A bounded sample; `deno task fuzz:tarsplit` runs thousands.
  await withTemp(async (dir) => {
    let recorded = 0;
    const n = 40;
    for (let i = 0; i < n; i++) {
      const seed = 20261202 + i;
      const { bytes } = randomTar(seed);
      const mode = i % 2 === 0 ? "untar" : "overlay";
      const r = await tarSplitRoundTrip(bytes, join(dir, `t${i}`), mode);
      assert.ok(r.same, `seed ${seed} (${mode}): first difference at byte ${r.firstDiff}`);
      if (r.recorded) recorded++;
    }
    assert.ok(recorded >= n * 0.9, `only ${recorded} of ${n} tars were recorded`);
  });
});

Deno.test({
  name: "random trees through GNU tar (gnu, pax, ustar, v7) reassemble to their bytes",
  ignore: !isFile("/usr/bin/tar"),
  async fn() {
    await withTemp(async (dir) => {
      const formats = ["gnu", "pax", "ustar", "v7"];
      for (let i = 0; i < formats.length; i++) {
        const seed = 7000 + i;
        const tree = join(dir, `tree${i}`);
        await randomTree(seed, tree);
        const tar = await run("tar", [
          "-C",
          tree,
          `--format=${formats[i]}`,
          "-cf",
          "-",
          ".",
        ]).catch(() => null); // v7/ustar refuse some long names: then skip that format
        if (tar === null) continue;
        const r = await tarSplitRoundTrip(tar, join(dir, `x${i}`), "untar");
        assert.ok(r.recorded, `seed ${seed} ${formats[i]}`);
        assert.ok(r.same, `seed ${seed} ${formats[i]}: first difference at ${r.firstDiff}`);
      }
    });
  },
});

Deno.test("strata diff gives the applied tar back, says so, and takes --source", async () => {
  const CLI = new URL("../cli.ts", import.meta.url).pathname;
  await withTemp(async (dir) => {
    const root = join(dir, "root");
    const tarPath = join(dir, "in.tar");
    await Deno.writeFile(tarPath, handTar());
    const strata = (...args: string[]) =>
      runCommand(Deno.execPath(), ["run", "-A", CLI, "--root", root, ...args]);
    try {
      assert.equal((await strata("create", "l")).code, 0);
      assert.equal((await strata("apply", "l", tarPath)).code, 0);
      const out = join(dir, "out.tar");
      const r = await strata("--json", "diff", "l", "-o", out);
      assert.equal(r.code, 0, r.err);
      assert.equal(JSON.parse(r.out).source, "original");
      assert.equal(await sha256(await Deno.readFile(out)), await sha256(handTar()));
      const rebuilt = await strata("--json", "diff", "l", "-o", out, "--source", "rebuilt");
      assert.equal(JSON.parse(rebuilt.out).source, "rebuilt");
      const bad = await strata("diff", "l", "-o", out, "--source", "bogus");
      assert.equal(bad.code, 2);
      assert.match(bad.err, /--source must be auto, original or rebuilt/);
      assert.equal((await strata("mount", "l")).code, 0);
      assert.equal((await strata("umount", "l")).code, 0);
      const gone = await strata("diff", "l", "-o", out, "--source", "original");
      assert.equal(gone.code, 1);
      assert.match(gone.err, /layer "l": diff \(original bytes\) .*no tar-split record/);
    } finally {
      await strata("-q", "cleanup");
      assert.deepEqual(mountpointsUnder(dir), []);
    }
  });
});

Deno.test({
  name: "peer fixture cleanup",
  ignore: ignorePeer,
  async fn() {
    if (fixture) await Deno.remove((await fixture).dir, { recursive: true });
  },
});
