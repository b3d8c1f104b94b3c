/**
 * The driver contract, one suite for every backend, run for real on each one
 * the kernel has (overlay on the host; aufs and overlay in the aufs guest,
 * `deno task test:aufs`): create, get/put and mount counts, remove while
 * mounted, cleanup, diff/applyDiff/changes/diffSize round trips,
 * DeepLayerRead, a delete at depth, delete-then-recreate, and mount counts
 * shared across processes. The graphtest port is graphtest_test.ts (same
 * backends, same harness).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Change } from "../mod.ts";
import type { UnionDriver } from "../lib/union.ts";
import { mountpointsUnder } from "../lib/mounts.ts";
import {
  type BackendName,
  BACKENDS,
  backendTest,
  type BackendTestOptions,
  fsTypeAt,
  snapshotTree,
  withBackend,
} from "./support/backends.ts";

/** Run `fn` on the mounted root of `id`, then put it. */
async function inLayer<T>(d: UnionDriver, id: string, fn: (root: string) => T): Promise<T> {
  const root = await d.get(id);
  try {
    return await fn(root);
  } finally {
    await d.put(id);
  }
}

const byPath = (a: Change, b: Change) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0;

/** A small base: files, a dir, a symlink. */
function fillBase(root: string): void {
  Deno.writeTextFileSync(join(root, "keep"), "base keep\n");
  Deno.writeTextFileSync(join(root, "edit"), "base edit\n");
  Deno.writeTextFileSync(join(root, "gone"), "base gone\n");
  Deno.mkdirSync(join(root, "dir/sub"), { recursive: true });
  Deno.writeTextFileSync(join(root, "dir/sub/a"), "a\n");
  Deno.mkdirSync(join(root, "olddir"));
  Deno.writeTextFileSync(join(root, "olddir/x"), "x\n");
  Deno.symlinkSync("keep", join(root, "link"));
}

/** Edit through the union: modify, add, delete a file, delete a dir, replace a dir. */
function editChild(root: string): Change[] {
  Deno.writeTextFileSync(join(root, "edit"), "child edit, longer\n");
  Deno.writeTextFileSync(join(root, "new"), "new\n");
  Deno.removeSync(join(root, "gone"));
  Deno.removeSync(join(root, "dir/sub"), { recursive: true });
  Deno.removeSync(join(root, "olddir"), { recursive: true });
  Deno.mkdirSync(join(root, "olddir"));
  Deno.writeTextFileSync(join(root, "olddir/y"), "y\n");
  return [
    { path: "/dir", kind: "modify" },
    { path: "/dir/sub", kind: "delete" },
    { path: "/edit", kind: "modify" },
    { path: "/gone", kind: "delete" },
    { path: "/new", kind: "add" },
    { path: "/olddir", kind: "modify" },
    { path: "/olddir/y", kind: "add" },
  ];
}

/**
 * A dir replaced by a new one (opaque) reads differently per backend, each as
 * its Go original: from an overlay upper as `delete /olddir`; from an aufs
 * branch as `modify /olddir` plus `delete /olddir/.wh..opq` (Go's
 * archive.Changes strips `.wh.` off the marker `.wh..wh..opq`, seed §7.8).
 * The contract asks for one of these two spellings of the same edit.
 */
function normalizeOpaque(changes: Change[]): Change[] {
  return [...changes].sort(byPath)
    .filter((c) => !(c.path === "/olddir/.wh..opq" && c.kind === "delete"))
    .map((c) => c.path === "/olddir" && c.kind === "delete" ? { ...c, kind: "modify" } : c);
}

async function readAll(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

function contract(backend: BackendName) {
  const t = (
    title: string,
    fn: (d: UnionDriver, base: string) => Promise<void>,
    opts: BackendTestOptions = {},
  ) =>
    backendTest(
      backend,
      `contract: ${title}`,
      () => withBackend(backend, (d, h) => fn(d, h.base)),
      opts,
    );

  t("create, exists and list; a base layer is its diff dir, a child a union mount", async (d) => {
    await d.create("a", "");
    await d.create("b", "a");
    assert.equal(await d.exists("a"), true);
    assert.equal(await d.exists("zz"), false);
    assert.deepEqual(await d.listLayers(), ["a", "b"]);
    await assert.rejects(d.create("a", ""));
    await assert.rejects(d.create("c", "missing"));
    assert.equal(await d.exists("c"), false);
    await inLayer(d, "a", (root) => assert.equal(root, d.diffDir("a")));
    await inLayer(d, "b", (root) => {
      assert.equal(root, d.mountDir("b"));
      assert.equal(fsTypeAt(root), backend, `mnt/b is a ${backend} mount`);
    });
    assert.equal(fsTypeAt(d.mountDir("b")), undefined, "the last put unmounted it");
  });

  t(
    "get twice mounts once; each put releases one; an extra put does not go negative",
    async (d) => {
      await d.create("a", "");
      await d.create("b", "a");
      const p1 = await d.get("b");
      const p2 = await d.get("b");
      assert.equal(p1, p2);
      assert.equal(await d.mountCount("b"), 2);
      assert.equal(fsTypeAt(p1), backend);
      await d.put("b");
      assert.equal(d.isMounted(p1), true);
      await d.put("b");
      assert.equal(d.isMounted(p1), false);
      assert.equal(await d.mountCount("b"), 0);
      await d.put("b");
      assert.equal(await d.mountCount("b"), 0);
    },
  );

  t("remove of a mounted layer unmounts it and deletes its dirs", async (d) => {
    await d.create("a", "");
    await d.create("b", "a");
    const root = await d.get("b");
    Deno.writeTextFileSync(join(root, "f"), "x");
    await d.remove("b");
    assert.equal(fsTypeAt(root), undefined);
    assert.equal(await d.exists("b"), false);
    assert.throws(() => Deno.lstatSync(d.diffDir("b")), Deno.errors.NotFound);
    assert.throws(() => Deno.lstatSync(d.mountDir("b")), Deno.errors.NotFound);
  });

  t("cleanup unmounts every union it made, the count file may say otherwise", async (d, base) => {
    await d.create("a", "");
    await d.create("b", "a");
    await d.create("c", "b");
    await d.get("b");
    await d.get("c");
    await d.cleanup();
    assert.deepEqual(mountpointsUnder(join(base, backend)), [], "cleanup left mounts");
  });

  t("diff, changes and diffSize of an edited child; applyDiff reproduces its tree", async (d) => {
    await d.create("base", "");
    fillBase(d.diffDir("base"));
    await d.create("child", "base");
    const expected = await inLayer(d, "child", editChild);
    assert.deepEqual(normalizeOpaque(await d.changes("child", "base")), expected);
    // Sizes: the two new/changed files plus the new dir's file.
    const size = await d.diffSize("child", "base");
    assert.equal(size, "child edit, longer\n".length + "new\n".length + "y\n".length);
    const tar = await readAll(await d.diff("child", "base"));
    await d.create("copy", "base");
    const applied = await d.applyDiff("copy", "base", ReadableStream.from([tar]));
    assert.equal(applied, size);
    const want = await inLayer(d, "child", snapshotTree);
    const got = await inLayer(d, "copy", snapshotTree);
    assert.deepEqual(got, want);
    assert.deepEqual(normalizeOpaque(await d.changes("copy", "base")), expected);
    assert.equal(await d.diffSize("copy", "base"), size);
    // A base layer's diff against nothing carries all of it.
    await d.create("base2", "");
    const applied2 = await d.applyDiff("base2", "", await d.diff("base", ""));
    assert.equal(applied2, await d.diffSize("base", ""));
    assert.deepEqual(
      await inLayer(d, "base2", snapshotTree),
      await inLayer(d, "base", snapshotTree),
    );
  });

  t("DeepLayerRead(48): every layer's files read back through the top", async (d) => {
    const n = 48;
    const ids = ["deep-base"];
    await d.create(ids[0], "");
    Deno.writeTextFileSync(join(d.diffDir(ids[0]), "testfile.txt"), "test content");
    for (let i = 1; i <= n; i++) {
      const id = `deep-${i}-${"0".repeat(40)}`;
      await d.create(id, ids[i - 1]);
      const dir = d.diffDir(id);
      Deno.writeTextFileSync(join(dir, "top-id"), id);
      Deno.mkdirSync(join(dir, `layer-${i}`));
      Deno.writeTextFileSync(join(dir, `layer-${i}`, "layer-id"), id);
      Deno.writeTextFileSync(join(dir, `layer-${i}`, "parent-id"), ids[i - 1]);
      ids.push(id);
    }
    await inLayer(d, ids[n], (root) => {
      let expected = Deno.readTextFileSync(join(root, "top-id"));
      assert.equal(expected, ids[n]);
      for (let i = n; i > 0; i--) {
        const dir = join(root, `layer-${i}`);
        assert.equal(Deno.readTextFileSync(join(dir, "layer-id")), expected, `layer-${i}`);
        expected = Deno.readTextFileSync(join(dir, "parent-id"));
      }
      assert.equal(expected, ids[0]);
      assert.equal(Deno.readTextFileSync(join(root, "testfile.txt")), "test content");
    });
  }, { hostOnly: true });

  t(
    "a file deleted at depth 4 of 8 is hidden above, visible below, and recreated at 7",
    async (d) => {
      const ids = Array.from({ length: 8 }, (_, i) => `L${i}`);
      for (let i = 0; i < ids.length; i++) {
        await d.create(ids[i], i ? ids[i - 1] : "");
        if (i === 0) Deno.writeTextFileSync(join(d.diffDir(ids[0]), "f"), "v0");
        if (i === 4) await inLayer(d, ids[4], (r) => Deno.removeSync(join(r, "f")));
        if (i === 7) await inLayer(d, ids[7], (r) => Deno.writeTextFileSync(join(r, "f"), "v7"));
      }
      for (let i = 0; i < ids.length; i++) {
        const content = await inLayer(d, ids[i], (r) => {
          try {
            return Deno.readTextFileSync(join(r, "f"));
          } catch (e) {
            if (e instanceof Deno.errors.NotFound) return null;
            throw e;
          }
        });
        assert.equal(content, i < 4 ? "v0" : i < 7 ? null : "v7", `layer ${i}`);
      }
      assert.deepEqual(await d.changes(ids[4], ids[3]), [{ path: "/f", kind: "delete" }]);
      assert.deepEqual(await d.changes(ids[7], ids[6]), [{ path: "/f", kind: "add" }]);
    },
  );

  t(
    "delete then recreate a file and a dir within one layer: new content, old dir contents hidden",
    async (d) => {
      await d.create("a", "");
      Deno.writeTextFileSync(join(d.diffDir("a"), "f"), "old");
      Deno.mkdirSync(join(d.diffDir("a"), "dir"));
      Deno.writeTextFileSync(join(d.diffDir("a"), "dir", "old"), "old");
      await d.create("b", "a");
      await inLayer(d, "b", (r) => {
        Deno.removeSync(join(r, "f"));
        Deno.writeTextFileSync(join(r, "f"), "new");
        Deno.removeSync(join(r, "dir"), { recursive: true });
        Deno.mkdirSync(join(r, "dir"));
        Deno.writeTextFileSync(join(r, "dir", "new"), "new");
      });
      await d.create("c", "b");
      await inLayer(d, "c", (r) => {
        assert.equal(Deno.readTextFileSync(join(r, "f")), "new");
        assert.deepEqual([...Deno.readDirSync(join(r, "dir"))].map((e) => e.name), ["new"]);
      });
      // The layer's tar carries the replacement; applied elsewhere it gives the same view.
      await d.create("b2", "a");
      await d.applyDiff("b2", "a", await d.diff("b", "a"));
      assert.deepEqual(await inLayer(d, "b2", snapshotTree), await inLayer(d, "b", snapshotTree));
    },
  );

  backendTest(
    backend,
    "contract: mount counts across processes: a get in one and a put in another balance",
    () =>
      withBackend(backend, async (d, h) => {
        await d.create("a", "");
        await d.create("b", "a");
        const url = new URL("./support/backends.ts", import.meta.url).href;
        const run = async (op: "get" | "put") => {
          const code = `
          import { openBackend } from ${JSON.stringify(url)};
          const d = await openBackend(${JSON.stringify(backend)}, ${JSON.stringify(h.root)});
          if (${JSON.stringify(op)} === "get") console.log(await d.get("b"));
          else { await d.put("b"); console.log("put"); }
        `;
          const out = await new Deno.Command(Deno.execPath(), {
            args: ["eval", "--quiet", code],
            stdout: "piped",
            stderr: "piped",
          }).output();
          assert.ok(out.success, `child ${op}: ${new TextDecoder().decode(out.stderr)}`);
          return new TextDecoder().decode(out.stdout).trim();
        };
        const target = d.mountDir("b");
        // This process holds one reference, the child takes another concurrently.
        const [mine, theirs] = await Promise.all([d.get("b"), run("get")]);
        assert.equal(mine, target);
        assert.equal(theirs, target);
        assert.equal(fsTypeAt(target), backend);
        assert.equal(await d.mountCount("b"), 2);
        assert.equal(await run("put"), "put");
        assert.equal(d.isMounted(target), true, "one reference is still held");
        await d.put("b");
        assert.equal(d.isMounted(target), false);
        assert.equal(await d.mountCount("b"), 0);
      }),
    { hostOnly: true },
  );
}

for (const backend of BACKENDS) contract(backend);
