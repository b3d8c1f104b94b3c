/**
 * The layer-tar methods of the union drivers, for real on this kernel's
 * overlay: when they go native and when naive (the seed's isParent), what an
 * interrupted apply leaves, and that the naive path releases its mounts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { isDirectParent } from "../lib/layer_archive.ts";
import { readTar } from "../lib/archive/tar_reader.ts";
import { mountpointsUnder } from "../lib/mounts.ts";

async function withOverlay(
  fn: (d: OverlayDriver, dir: string, warnings: string[]) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-la-" });
  const warnings: string[] = [];
  let d: OverlayDriver | undefined;
  try {
    d = await OverlayDriver.init(join(dir, "root"), { onWarning: (m) => warnings.push(m) });
    await fn(d, dir, warnings);
  } finally {
    try {
      await d?.cleanup();
    } finally {
      assert.deepEqual(mountpointsUnder(dir), [], "no mount left behind");
      await Deno.remove(dir, { recursive: true });
    }
  }
}

async function entries(stream: ReadableStream<Uint8Array>): Promise<string[]> {
  const names: string[] = [];
  await readTar(stream, {
    entry: (h) => names.push(new TextDecoder().decode(h.name)),
    data() {},
    end() {},
  });
  return names;
}

Deno.test("isParent: a base layer matches any parent; a child only its direct parent", async () => {
  await withOverlay(async (d) => {
    await d.create("a", "");
    await d.create("b", "a");
    await d.create("c", "b");
    assert.equal(await isDirectParent(d, "a", ""), true);
    assert.equal(await isDirectParent(d, "a", "unrelated"), true);
    assert.equal(await isDirectParent(d, "c", "b"), true);
    assert.equal(await isDirectParent(d, "c", "a"), false);
    assert.equal(await isDirectParent(d, "c", ""), false);
  });
});

Deno.test("diff against the direct parent is the layer's own change; against '' the flattened union", async () => {
  await withOverlay(async (d) => {
    await d.create("a", "");
    await Deno.writeTextFile(join(d.diffDir("a"), "base.txt"), "b");
    await d.create("b", "a");
    const mnt = await d.get("b");
    try {
      await Deno.writeTextFile(join(mnt, "top.txt"), "t");
      await Deno.remove(join(mnt, "base.txt"));
    } finally {
      await d.put("b");
    }
    assert.deepEqual(await entries(await d.diff("b", "a")), [".wh.base.txt", "top.txt"]);
    // naive: the whole union, no whiteouts; the layer is mounted while the stream is read
    assert.deepEqual(await entries(await d.diff("b", "")), ["top.txt"]);
    assert.equal(await d.mountCount("b"), 0, "the naive diff released its mount");
    assert.deepEqual(await d.changes("b", ""), [{ path: "/top.txt", kind: "add" }]);
    assert.equal(await d.diffSize("b", ""), 1);
  });
});

Deno.test("naive applyDiff goes through the union: a whiteout deletes a lower file", async () => {
  await withOverlay(async (d) => {
    await d.create("a", "");
    await Deno.writeTextFile(join(d.diffDir("a"), "gone.txt"), "g");
    await d.create("b", "a");
    await d.create("c", "b");
    // A layer tar deleting gone.txt and adding new.txt, applied to c "against a" (not its parent).
    await d.create("src", "");
    await Deno.writeTextFile(join(d.diffDir("src"), "new.txt"), "nn");
    await Deno.writeTextFile(join(d.diffDir("src"), ".wh.gone.txt"), "");
    // src is an overlay layer; its diff dir holds a plain file named .wh.gone.txt, which the
    // tar carries as it is: a whiteout entry for the consumer.
    const tar = await d.diff("src", "");
    const size = await d.applyDiff("c", "a", tar);
    assert.equal(size, 2, "naive apply returns the sum of header sizes");
    const mnt = await d.get("c");
    try {
      assert.equal(await Deno.readTextFile(join(mnt, "new.txt")), "nn");
      await assert.rejects(Deno.stat(join(mnt, "gone.txt")), Deno.errors.NotFound);
    } finally {
      await d.put("c");
    }
    // the kernel recorded the deletion as an overlay whiteout (char 0/0) in c's own dir
    const st = await Deno.lstat(join(d.diffDir("c"), "gone.txt"));
    assert.ok(st.isCharDevice);
  });
});

Deno.test("an interrupted apply leaves the layer marked incomplete, and the next init says so", async () => {
  await withOverlay(async (d, dir) => {
    await d.create("a", "");
    const src = new Uint8Array(await new Response(await d.diff("a", "")).arrayBuffer());
    await Deno.writeFile(join(d.diffDir("a"), "f"), new Uint8Array(4096));
    const full = new Uint8Array(await new Response(await d.diff("a", "")).arrayBuffer());
    assert.ok(full.length > src.length);
    await d.create("b", "");
    let sent = false;
    const broken = new ReadableStream<Uint8Array>({
      pull(c) {
        if (!sent) {
          sent = true;
          c.enqueue(full.subarray(0, 700)); // the header and part of the body
        } else c.error(new Error("connection reset"));
      },
    });
    await assert.rejects(d.applyDiff("b", "", broken), /connection reset/);
    const why = "apply into an empty layer";
    assert.deepEqual(await d.store.incomplete(), [{ id: "b", why }]);
    assert.equal(await d.exists("b"), false, "an incomplete layer cannot be used as it is");
    assert.equal((await d.layerState("b"))?.state, "incomplete");
    const warnings: string[] = [];
    const again = await OverlayDriver.init(join(dir, "root"), {
      onWarning: (m) => warnings.push(m),
    });
    assert.ok(
      warnings.some((w) =>
        /layer b: the layer is incomplete \(apply into an empty layer did not finish\): apply its tar again/
          .test(w)
      ),
      String(warnings),
    );
    assert.deepEqual(
      await again.store.incomplete(),
      [{ id: "b", why }],
      "init keeps it for check to report",
    );
  });
});

Deno.test("create with an incomplete reason keeps the mark until an applyDiff fills the layer", async () => {
  await withOverlay(async (d) => {
    await d.create("src", "");
    await Deno.writeTextFile(join(d.diffDir("src"), "f"), "data");
    await d.create("imp", "", { incomplete: "import" });
    assert.equal((await d.layerState("imp"))?.state, "incomplete");
    assert.deepEqual(await d.store.incomplete(), [{ id: "imp", why: "import" }]);
    assert.equal(await d.applyDiff("imp", "", await d.diff("src", "")), 4);
    assert.deepEqual(await d.layerState("imp"), { id: "imp", state: "ok" });
    assert.deepEqual(await d.store.incomplete(), []);
  });
});

Deno.test("applyDiff's size counted while extracting equals a walk of the layer, also for odd tars", async () => {
  const { directorySize } = await import("../lib/archive/size.ts");
  const { encodeHeader, END_OF_ARCHIVE, padding } = await import("../lib/archive/tar_writer.ts");
  const { makeHeader, TarType } = await import("../lib/archive/tar_header.ts");
  await withOverlay(async (d) => {
    // A tree with files of many sizes, symlinks (short and long targets), hard links, a FIFO.
    await d.create("src", "");
    const src = d.diffDir("src");
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    for (let i = 0; i < 60; i++) {
      const dir = join(src, `d${i % 7}`);
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeFile(join(dir, `f${i}`), new Uint8Array(rnd(5000)));
      if (i % 5 === 0) await Deno.symlink("x".repeat(1 + rnd(300)), join(dir, `l${i}`));
      if (i % 9 === 0) await Deno.link(join(dir, `f${i}`), join(src, `hard${i}`));
    }
    await new Deno.Command("mkfifo", { args: [join(src, "fifo")] }).output();
    await d.create("dst", "");
    const size = await d.applyDiff("dst", "", await d.diff("src", ""));
    assert.equal(size, directorySize(d.diffDir("dst")));
    assert.equal(size, directorySize(src));

    // A tar that writes one name twice: the count cannot know, the walk must decide.
    const body = new Uint8Array(100);
    const twice = ReadableStream.from<Uint8Array>([
      encodeHeader(makeHeader({ name: "a", size: 100, mode: 0o644 })),
      body,
      new Uint8Array(padding(100)),
      encodeHeader(makeHeader({ name: "a", size: 30, mode: 0o644 })),
      body.subarray(0, 30),
      new Uint8Array(padding(30)),
      encodeHeader(makeHeader({ name: "s", type: TarType.SYMLINK, linkname: "abc" })),
      END_OF_ARCHIVE,
    ]);
    await d.create("dup", "");
    assert.equal(await d.applyDiff("dup", "", twice), 33);
    // Into a layer that already holds files, the walk counts them too.
    await d.create("full", "");
    await Deno.writeFile(join(d.diffDir("full"), "old"), new Uint8Array(11));
    const one = ReadableStream.from<Uint8Array>([
      encodeHeader(makeHeader({ name: "b", size: 5, mode: 0o644 })),
      new Uint8Array(5),
      new Uint8Array(padding(5)),
      END_OF_ARCHIVE,
    ]);
    assert.equal(await d.applyDiff("full", "", one), 16);
  });
});

Deno.test("a hostile, truncated tar fails applyDiff with an error naming the entry; remove cleans the layer", async () => {
  const { encodeHeader, padding } = await import("../lib/archive/tar_writer.ts");
  const { makeHeader, TarType } = await import("../lib/archive/tar_header.ts");
  const { ExtractError } = await import("../lib/archive/extract.ts");
  await withOverlay(async (d, dir) => {
    const victim = join(dir, "victim");
    await Deno.mkdir(victim);
    await Deno.writeTextFile(join(victim, "hello"), "hello");
    const body = new TextEncoder().encode("pwned");
    const tar = ReadableStream.from<Uint8Array>([
      // a symlink climbing out of the layer and a write through it (the link resolves inside
      // the layer, where no victim/ exists: ENOENT, as in the seed's chroot), then a cut body
      encodeHeader(makeHeader({ name: "esc", type: TarType.SYMLINK, linkname: "../../../victim" })),
      encodeHeader(makeHeader({ name: "esc/hello", size: body.length, mode: 0o644 })),
      body,
      new Uint8Array(padding(body.length)),
      encodeHeader(makeHeader({ name: "cut", size: 4096, mode: 0o644 })),
      new Uint8Array(100),
    ]);
    await d.create("bad", "");
    await assert.rejects(d.applyDiff("bad", "", tar), (e: unknown) => {
      assert.ok(e instanceof ExtractError);
      assert.match(
        (e as Error).message,
        /entry "esc\/hello": openat2 esc \("esc" is a symbolic link to .*, which points outside the layer\): .*ENOENT/,
      );
      return true;
    });
    assert.equal(
      await Deno.readTextFile(join(victim, "hello")),
      "hello",
      "nothing outside changed",
    );
    assert.deepEqual([...Deno.readDirSync(victim)].map((e) => e.name), ["hello"]);
    assert.deepEqual(await d.store.incomplete(), [{ id: "bad", why: "apply into an empty layer" }]);
    await d.remove("bad");
    for (const sub of ["diff", "mnt", "work", "layers", "incomplete"]) {
      await assert.rejects(Deno.lstat(join(d.root, sub, "bad")), Deno.errors.NotFound, sub);
    }
    assert.deepEqual(await d.store.incomplete(), []);
    // A tar cut inside a body: the error names that entry; remove cleans again.
    const cut = ReadableStream.from<Uint8Array>([
      encodeHeader(makeHeader({ name: "ok", size: 0, mode: 0o644 })),
      encodeHeader(makeHeader({ name: "cut", size: 4096, mode: 0o644 })),
      new Uint8Array(100),
    ]);
    await d.create("bad2", "");
    await assert.rejects(d.applyDiff("bad2", "", cut), /entry "cut".*unexpected end of tar/);
    await d.remove("bad2");
    await assert.rejects(Deno.lstat(d.diffDir("bad2")), Deno.errors.NotFound);
  });
});
