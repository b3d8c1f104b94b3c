/**
 * containers/storage's generic driver conformance suite (drivers/graphtest,
 * seed §8.2), run for real on every backend this kernel has (overlay on the
 * host; aufs and overlay in the aufs guest, `deno task test:aufs`): empty and
 * base layers, a snapshot of a base seen through the union, diff + apply of
 * many files, and the expected changes of a scripted edit. DeepLayerRead is
 * in driver_contract_test.ts (and overlay_deep_test.ts for overlay's deep chains).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Change } from "../mod.ts";
import type { UnionDriver } from "../lib/union.ts";
import { type BackendName, BACKENDS, backendTest, withBackend } from "./support/backends.ts";

type D = UnionDriver;

function withDriver(backend: BackendName, fn: (d: D) => Promise<void>): Promise<void> {
  return withBackend(backend, fn);
}

/** 64 deterministic bytes for `seed` (any seeded generator will do, seed §8.2). */
function randomContent(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** `directory-<i>/file-<i+j>`, 100 files a directory, 64 bytes each, mode 0755. */
async function addManyFiles(d: D, id: string, count: number, seed: number) {
  const root = await d.get(id);
  try {
    for (let i = 0; i < count; i += 100) {
      const dir = join(root, `directory-${i}`);
      await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
      for (let j = 0; i + j < count && j < 100; j++) {
        await Deno.writeFile(join(dir, `file-${i + j}`), randomContent(64, seed + i + j), {
          mode: 0o755,
        });
      }
    }
  } finally {
    await d.put(id);
  }
}

async function checkManyFiles(d: D, id: string, count: number, seed: number) {
  const root = await d.get(id);
  try {
    for (let i = 0; i < count; i += 100) {
      for (let j = 0; i + j < count && j < 100; j++) {
        const got = await Deno.readFile(join(root, `directory-${i}`, `file-${i + j}`));
        assert.deepEqual(got, randomContent(64, seed + i + j), `file-${i + j}`);
      }
    }
  } finally {
    await d.put(id);
  }
}

/** Rewrite, add and delete files in thirds; return the changes this makes. */
async function changeManyFiles(d: D, id: string, count: number, seed: number) {
  const root = await d.get(id);
  const changes: Change[] = [];
  try {
    for (let i = 0; i < count; i += 100) {
      const dirPath = `/directory-${i}`;
      await Deno.mkdir(join(root, dirPath), { recursive: true, mode: 0o755 });
      changes.push({ path: dirPath, kind: "modify" });
      for (let j = 0; i + j < count && j < 100; j++) {
        if (j % 3 === 0) {
          const path = `${dirPath}/file-${i + j}`;
          await Deno.writeFile(join(root, path), randomContent(64, seed + i + j), { mode: 0o755 });
          changes.push({ path, kind: "modify" });
        } else if (j % 3 === 1) {
          const path = `${dirPath}/file-${seed}-${i + j}`;
          await Deno.writeFile(join(root, path), randomContent(64, seed + i + j), { mode: 0o755 });
          changes.push({ path, kind: "add" });
        } else {
          const path = `${dirPath}/file-${i + j}`;
          await Deno.remove(join(root, path));
          changes.push({ path, kind: "delete" });
        }
      }
    }
  } finally {
    await d.put(id);
  }
  return changes;
}

const byPath = (a: Change, b: Change) =>
  a.path < b.path ? -1 : a.path > b.path ? 1 : a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0;

/** umask 0 while `fn` runs (createBase needs exact modes). */
async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = Deno.umask(mask);
  try {
    return await fn();
  } finally {
    Deno.umask(old);
  }
}

async function createBase(d: D, id: string) {
  await withUmask(0, async () => {
    await d.createReadWrite(id, "");
    const root = await d.get(id);
    try {
      const sub = join(root, "a subdir");
      await Deno.mkdir(sub);
      await Deno.chmod(sub, 0o705 | 0o1000);
      await Deno.chown(sub, 1, 2);
      const file = join(root, "a file");
      await Deno.writeTextFile(file, "Some data");
      await Deno.chmod(file, 0o222 | 0o4000);
    } finally {
      await d.put(id);
    }
  });
}

async function verifyBase(d: D, id: string) {
  const root = await d.get(id);
  try {
    const sub = await Deno.lstat(join(root, "a subdir"));
    assert.ok(sub.isDirectory);
    assert.equal(sub.mode! & 0o7777, 0o705 | 0o1000, "a subdir: 0705 + sticky");
    assert.equal(sub.uid, 1);
    assert.equal(sub.gid, 2);
    const file = await Deno.lstat(join(root, "a file"));
    assert.ok(file.isFile);
    assert.equal(file.mode! & 0o7777, 0o222 | 0o4000, "a file: 0222 + setuid");
    assert.equal(file.uid, 0);
    assert.equal(file.gid, 0);
    assert.equal(await Deno.readTextFile(join(root, "a file")), "Some data");
    const names = (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name).sort();
    assert.deepEqual(names, ["a file", "a subdir"]);
  } finally {
    await d.put(id);
  }
}

for (const backend of BACKENDS) {
  backendTest(
    backend,
    "graphtest CreateEmpty: an empty layer is a 0755 root-owned empty dir",
    async () => {
      await withDriver(backend, async (d) => {
        await withUmask(0o022, async () => {
          await d.create("empty", "");
          assert.equal(await d.exists("empty"), true);
          const dir = await d.get("empty");
          try {
            const st = await Deno.stat(dir);
            assert.ok(st.isDirectory);
            assert.equal(st.mode! & 0o7777, 0o755);
            assert.equal(st.uid, 0);
            assert.equal(st.gid, 0);
            assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), []);
          } finally {
            await d.put("empty");
          }
          await d.remove("empty");
          assert.equal(await d.exists("empty"), false);
        });
      });
    },
  );

  backendTest(
    backend,
    "graphtest CreateBase and CreateSnap: modes, owners and special bits, also through the union",
    async () => {
      await withDriver(backend, async (d) => {
        await createBase(d, "Base");
        await verifyBase(d, "Base");
        await d.create("Snap", "Base");
        await verifyBase(d, "Snap");
        await d.remove("Snap");
        await d.remove("Base");
      });
    },
  );

  for (const fileCount of [10, 500]) {
    backendTest(
      backend,
      `graphtest DiffApply(${fileCount}): the native diff applied on the base reproduces the upper layer`,
      async () => {
        await withDriver(backend, async (d) => {
          await d.create("base", "");
          await addManyFiles(d, "base", fileCount, 3);
          const baseRoot = d.diffDir("base");
          await Deno.writeTextFile(
            join(baseRoot, "file-remove.txt"),
            "This file should get removed",
          );
          await Deno.mkdir(join(baseRoot, "var", "lib"), { recursive: true });

          await d.create("upper", "base");
          await addManyFiles(d, "upper", fileCount, 6);
          const up = await d.get("upper");
          try {
            await Deno.remove(join(up, "file-remove.txt"));
            await Deno.remove(join(up, "var", "lib"));
          } finally {
            await d.put("upper");
          }
          const diffSize = await d.diffSize("upper", ""); // naive: the whole union

          await d.create("diff", "base");
          await checkManyFiles(d, "diff", fileCount, 3);
          const arch = await d.diff("upper", "base"); // native
          const applied = await d.applyDiff("diff", "base", arch); // native
          assert.equal(applied, diffSize);
          assert.equal(applied, fileCount * 64);

          await checkManyFiles(d, "diff", fileCount, 6);
          const view = await d.get("diff");
          try {
            await assert.rejects(Deno.lstat(join(view, "file-remove.txt")), Deno.errors.NotFound);
            await assert.rejects(Deno.lstat(join(view, "var", "lib")), Deno.errors.NotFound);
            assert.ok((await Deno.lstat(join(view, "var"))).isDirectory);
          } finally {
            await d.put("diff");
          }
        });
      },
      { hostOnly: fileCount > 10 },
    );
  }

  backendTest(
    backend,
    "graphtest Changes: rewrites, adds and deletes in thirds are reported exactly",
    async () => {
      await withDriver(backend, async (d) => {
        await d.create("base", "");
        await addManyFiles(d, "base", 20, 3);
        await d.create("upper", "base");
        const expected = await changeManyFiles(d, "upper", 20, 6);
        const changes = await d.changes("upper", "base");
        assert.deepEqual([...changes].sort(byPath), [...expected].sort(byPath));
      });
    },
  );
}
