import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidLayerIdError, LayerError, LayerNotFoundError } from "../lib/errors.ts";
import { LayerStore, scanLines } from "../lib/store.ts";
import { validateLayerId } from "../lib/ids.ts";

const enc = new TextEncoder();

async function withStore(fn: (s: LayerStore, root: string) => Promise<void>) {
  const root = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(root, "layers"));
    await fn(new LayerStore(root), root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("layers files hold the whole chain, nearest first, byte for byte", () =>
  withStore(async (s, root) => {
    await s.write("A", []);
    await s.write("B", ["A"]);
    await s.write("C", ["B", ...(await s.parents("B"))]);
    const raw = (id: string) => Deno.readFileSync(join(root, "layers", id));
    assert.deepEqual(raw("A"), new Uint8Array());
    assert.deepEqual(raw("B"), enc.encode("A\n"));
    assert.deepEqual(raw("C"), enc.encode("B\nA\n"));
    assert.deepEqual(await s.parents("A"), []);
    assert.deepEqual(await s.parents("C"), ["B", "A"]);
    assert.equal(s.layersDir, join(root, "layers"));
  }));

Deno.test("parsing follows Go's bufio.Scanner: CRLF, blank lines, last line without newline", () =>
  withStore(async (s, root) => {
    const cases: [string, string[]][] = [
      ["B\r\nA\r\n", ["B", "A"]],
      ["B\n\n\nA\n", ["B", "A"]],
      ["B\nA", ["B", "A"]],
      ["A\r", ["A"]],
      [" A \n", [" A "]],
      ["\n\r\n", []],
      ["", []],
    ];
    for (const [text, want] of cases) {
      await Deno.writeTextFile(join(root, "layers", "X"), text);
      assert.deepEqual(await s.parents("X"), want, JSON.stringify(text));
    }
    // The scanner keeps a second "\r", but no id may hold one: the file is corrupt.
    assert.deepEqual(scanLines(enc.encode("B\r\r\n")), ["B\r"]);
    await Deno.writeTextFile(join(root, "layers", "X"), "B\r\r\n");
    await assert.rejects(s.parents("X"), /control character 0x0d/);
  }));

Deno.test("a line of 64 KiB fails like Go's token too long; one byte less scans", () => {
  const line = (n: number) => enc.encode("a".repeat(n) + "\n");
  assert.equal(scanLines(line(65535))[0].length, 65535);
  assert.throws(() => scanLines(line(65536)), /token too long/);
});

Deno.test("parents of a missing layer throws LayerNotFoundError", () =>
  withStore(async (s) => {
    await assert.rejects(s.parents("nope"), (e: unknown) => {
      assert.ok(e instanceof LayerNotFoundError);
      assert.equal(e.id, "nope");
      return true;
    });
  }));

Deno.test("a chain line that is not a valid id is reported as corruption", () =>
  withStore(async (s, root) => {
    await Deno.writeTextFile(join(root, "layers", "X"), "A\n../../etc\n");
    await assert.rejects(s.parents("X"), (e: unknown) => {
      assert.ok(e instanceof LayerError);
      assert.match(e.message, /line 2/);
      assert.match(e.message, /layers\/X/);
      return true;
    });
  }));

Deno.test("write and parents refuse invalid ids and create nothing", () =>
  withStore(async (s, root) => {
    await assert.rejects(s.write("../x", []), InvalidLayerIdError);
    await assert.rejects(s.write("ok", ["a/b"]), InvalidLayerIdError);
    await assert.rejects(s.parents(".."), InvalidLayerIdError);
    assert.deepEqual([...Deno.readDirSync(join(root, "layers"))], []);
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), ["layers"]);
  }));

Deno.test("crash leftovers: temp files and incomplete layers are never listed or existing", () =>
  withStore(async (s, root) => {
    await s.write("A", []);
    await s.write("B", ["A"]);
    // A writer that died before its rename, and a create that died before finishing.
    await Deno.writeTextFile(join(root, "layers", ".00112233aabbccdd.tmp"), "A\n");
    await s.markIncomplete("B", "create");
    await Deno.writeTextFile(join(root, "incomplete", ".99887766aabbccdd.tmp"), "x");
    await Deno.mkdir(join(root, "layers", "D")); // a directory is not a layer

    assert.deepEqual(await s.list(), ["A"]);
    assert.equal(await s.exists("A"), true);
    assert.equal(await s.exists("B"), false);
    assert.equal(await s.exists(".00112233aabbccdd.tmp"), false);
    assert.equal(await s.exists("D"), false);
    assert.deepEqual(await s.incomplete(), [{ id: "B", why: "create" }]);
    assert.deepEqual(await s.parents("B"), ["A"]); // still readable for recovery

    await s.clearIncomplete("B");
    await s.clearIncomplete("B"); // no marker: fine
    assert.equal(await s.exists("B"), true);
    assert.deepEqual(await s.list(), ["A", "B"]);
    assert.deepEqual(await s.incomplete(), []);
  }));

Deno.test("list sorts byte-wise and is empty without a layers dir", async () => {
  await withStore(async (s) => {
    for (const id of ["b", "\u{1F600}", "\uffff", "B", "a"]) await s.write(id, []);
    assert.deepEqual(await s.list(), ["B", "a", "b", "\uffff", "\u{1F600}"]);
  });
  const root = await Deno.makeTempDir();
  try {
    assert.deepEqual(await new LayerStore(root).list(), []);
    assert.deepEqual(await new LayerStore(root).incomplete(), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("remove deletes the layers file and ignores a missing one", () =>
  withStore(async (s) => {
    await s.write("A", []);
    await s.remove("A");
    await s.remove("A");
    assert.equal(await s.exists("A"), false);
    await assert.rejects(s.parents("A"), LayerNotFoundError);
  }));

Deno.test("exists is false for ids that cannot be layers", () =>
  withStore(async (s) => {
    assert.equal(await s.exists(""), false); // the seed said true (lstat of R/layers)
    assert.equal(await s.exists(".."), false);
    assert.equal(await s.exists("../layers"), false);
  }));

Deno.test("children lists every layer whose chain names the id, incomplete ones too", () =>
  withStore(async (s) => {
    await s.write("A", []);
    await s.write("B", ["A"]);
    await s.write("C", ["B", "A"]);
    await s.write("D", []);
    await s.write("E", ["A"]);
    await s.markIncomplete("E", "create");
    assert.deepEqual(await s.children("A"), ["B", "C", "E"]);
    assert.deepEqual(await s.children("B"), ["C"]);
    assert.deepEqual(await s.children("C"), []);
    assert.deepEqual(await s.children("D"), []);
  }));

Deno.test("write replaces a chain atomically: the old content or the new, no temp left", () =>
  withStore(async (s, root) => {
    await s.write("X", ["A"]);
    await s.write("X", ["B", "A"]);
    assert.deepEqual(await s.parents("X"), ["B", "A"]);
    assert.deepEqual([...Deno.readDirSync(join(root, "layers"))].map((e) => e.name), ["X"]);
  }));

Deno.test("no accepted id can confuse the one-id-a-line chain file", () =>
  withStore(async (s) => {
    // Every character that could split, join or hide a line, next to ordinary ones.
    const specials = ["\n", "\r", "\r\n", "\v", "\f", "\u0085", "\u2028", "\u2029", " ", "\t"];
    const accepted: string[] = [];
    for (const sp of specials) {
      for (const id of [`a${sp}b`, `${sp}x`, `x${sp}`, sp]) {
        try {
          validateLayerId(id);
          accepted.push(id);
        } catch (e) {
          assert.ok(e instanceof InvalidLayerIdError);
        }
      }
    }
    assert.ok(accepted.length > 0, "some of them (spaces, U+2028) are valid ids");
    assert.ok(!accepted.some((id) => /[\n\r]/.test(id)), "no id holds a line break");
    // Each accepted id, as parent and grandparent, reads back exactly.
    for (const [i, id] of accepted.entries()) {
      const chain = [id, `p${i}`, accepted[(i + 1) % accepted.length]];
      await s.write(`c${i}`, chain);
      assert.deepEqual(await s.parents(`c${i}`), chain, JSON.stringify(id));
    }
  }));
