import assert from "node:assert/strict";
import { changesSize, directorySize } from "../lib/archive/size.ts";

async function tmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("directorySize: pkg/directory cases", async () => {
  await tmp(async (dir) => {
    assert.equal(directorySize(dir), 0, "empty dir");
    await Deno.writeTextFile(`${dir}/empty`, "");
    assert.equal(directorySize(dir), 0, "empty file");
    await Deno.writeTextFile(`${dir}/six`, "abcdef");
    assert.equal(directorySize(dir), 6, "one 6-byte file");
    await Deno.mkdir(`${dir}/nested/deeper`, { recursive: true });
    assert.equal(directorySize(dir), 6, "nested empty dirs add nothing");
    await Deno.writeTextFile(`${dir}/nested/deeper/six`, "ghijkl");
    assert.equal(directorySize(dir), 12, "file + nested file");
  });
});

Deno.test("directorySize: a missing directory is an error", () => {
  assert.throws(() => directorySize("/nonexistent/strata-size"), Deno.errors.NotFound);
});

Deno.test("directorySize: hard links count once, symlinks their own size, not followed", async () => {
  await tmp(async (dir) => {
    await Deno.mkdir(`${dir}/t`);
    await Deno.writeTextFile(`${dir}/t/a`, "x".repeat(100));
    await Deno.link(`${dir}/t/a`, `${dir}/t/b`);
    await Deno.link(`${dir}/t/a`, `${dir}/t/c`);
    await Deno.symlink("a", `${dir}/t/l`); // 1 byte
    await Deno.writeTextFile(`${dir}/outside`, "y".repeat(1000));
    await Deno.symlink(`${dir}/outside`, `${dir}/t/far`);
    const far = Deno.lstatSync(`${dir}/t/far`).size;
    assert.equal(directorySize(`${dir}/t`), 100 + 1 + far);
  });
});

Deno.test("changesSize: adds and modifies counted, deletes 0, dirs skipped, links once", async () => {
  await tmp(async (dir) => {
    await Deno.writeTextFile(`${dir}/file1`, "abc");
    await Deno.writeTextFile(`${dir}/file2`, "def");
    assert.equal(
      changesSize(dir, [
        { path: "/file1", kind: "add" },
        { path: "/file2", kind: "modify" },
        { path: "/gone", kind: "delete" },
      ]),
      6,
    );
    await Deno.mkdir(`${dir}/d`);
    await Deno.link(`${dir}/file1`, `${dir}/d/hard`);
    assert.equal(
      changesSize(dir, [
        { path: "/d", kind: "add" },
        { path: "/d/hard", kind: "add" },
        { path: "/file1", kind: "add" },
      ]),
      3,
      "the directory counts nothing, the two names of one inode count once",
    );
  });
});

Deno.test("changesSize: a changed path that no longer exists is skipped", async () => {
  await tmp(async (dir) => {
    await Deno.writeTextFile(`${dir}/here`, "12345");
    assert.equal(
      changesSize(dir, [{ path: "/missing", kind: "add" }, { path: "/here", kind: "modify" }]),
      5,
    );
  });
});
