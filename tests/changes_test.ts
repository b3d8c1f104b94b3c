import assert from "node:assert/strict";
import { AT, S, systemLibc } from "../ffi/libc.ts";
import type { Change } from "../lib/driver.ts";
import { changesDirs, layerChanges, sortChanges } from "../lib/archive/changes.ts";

const libc = systemLibc();

async function tmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-changes-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function cpA(from: string, to: string, hardlink = false): Promise<void> {
  const out = await new Deno.Command("cp", { args: [hardlink ? "-al" : "-a", from, to] }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

const c = (path: string, kind: Change["kind"]): Change => ({ path, kind });

/** Sets the same mode and mtime on two directories so they compare as unchanged. */
function sameDir(a: string, b: string, mtime = 1_600_000_000) {
  Deno.chmodSync(a, 0o755);
  Deno.chmodSync(b, 0o755);
  Deno.utimeSync(a, mtime, mtime);
  Deno.utimeSync(b, mtime, mtime);
}

Deno.test("layerChanges: an empty rw layer has no changes; a missing one neither", async () => {
  await tmp(async (t) => {
    await Deno.mkdir(`${t}/lower/dir1`, { recursive: true });
    await Deno.writeTextFile(`${t}/lower/dir1/f`, "x");
    await Deno.mkdir(`${t}/rw`);
    assert.deepEqual(layerChanges([`${t}/lower`], `${t}/rw`), []);
    assert.deepEqual(layerChanges([`${t}/lower`], `${t}/missing`), []);
  });
});

Deno.test("layerChanges: TestChangesWithChanges (whiteout, modified file, new file in subfolder)", async () => {
  await tmp(async (t) => {
    const lower = `${t}/lower`, rw = `${t}/rw`;
    await Deno.mkdir(`${lower}/dir1/subfolder`, { recursive: true, mode: 0o740 });
    await Deno.writeTextFile(`${lower}/dir1/file1-1`, "one");
    await Deno.writeTextFile(`${lower}/dir1/file1-2`, "two");
    Deno.utimeSync(`${lower}/dir1`, 1_500_000_000, 1_500_000_000);
    Deno.utimeSync(`${lower}/dir1/subfolder`, 1_500_000_000, 1_500_000_000);
    await Deno.mkdir(`${rw}/dir1/subfolder`, { recursive: true, mode: 0o740 });
    await Deno.writeTextFile(`${rw}/dir1/.wh.file1-2`, "");
    await Deno.writeFile(`${rw}/dir1/file1-1`, new Uint8Array([0]), { mode: 0o1444 });
    await Deno.writeTextFile(`${rw}/dir1/subfolder/newFile`, "");
    assert.deepEqual(layerChanges([lower], rw), [
      c("/dir1", "modify"),
      c("/dir1/file1-1", "modify"),
      c("/dir1/file1-2", "delete"),
      c("/dir1/subfolder", "modify"),
      c("/dir1/subfolder/newFile", "add"),
    ]);
  });
});

// containers/storage 1.43's version of the test: the whole parent chain is reported.
Deno.test("layerChanges: GH13590 (re-created nested path, rewritten file)", async () => {
  await tmp(async (t) => {
    const base = `${t}/base`;
    await Deno.mkdir(`${base}/dir1/dir2/dir3`, { recursive: true, mode: 0o740 });
    await Deno.writeTextFile(`${base}/dir1/dir2/dir3/file.txt`, "hello");
    Deno.utimeSync(`${base}/dir1/dir2/dir3`, 1_500_000_000, 1_500_000_000);

    await Deno.mkdir(`${t}/l1`);
    await cpA(`${base}/dir1`, `${t}/l1/`);
    await Deno.remove(`${t}/l1/dir1/dir2/dir3/file.txt`);
    await Deno.writeTextFile(`${t}/l1/dir1/dir2/dir3/file1.txt`, "bye");
    assert.deepEqual(layerChanges([base], `${t}/l1`), [
      c("/dir1", "modify"),
      c("/dir1/dir2", "modify"),
      c("/dir1/dir2/dir3", "modify"),
      c("/dir1/dir2/dir3/file1.txt", "add"),
    ]);

    await Deno.mkdir(`${t}/l2`);
    await cpA(`${base}/dir1`, `${t}/l2/`);
    await Deno.writeTextFile(`${t}/l2/dir1/dir2/dir3/file.txt`, "bye");
    Deno.utimeSync(`${t}/l2/dir1/dir2/dir3`, 1_500_000_000, 1_500_000_000);
    assert.deepEqual(layerChanges([base], `${t}/l2`), [c("/dir1/dir2/dir3/file.txt", "modify")]);
  });
});

Deno.test("layerChanges: an add below unchanged directories reports every ancestor", async () => {
  await tmp(async (t) => {
    const lower = `${t}/lower`, rw = `${t}/rw`;
    await Deno.mkdir(`${lower}/a/b`, { recursive: true });
    await Deno.writeTextFile(`${lower}/a/b/old`, "");
    await Deno.mkdir(`${rw}/a/b`, { recursive: true });
    await Deno.writeTextFile(`${rw}/a/b/new`, "");
    sameDir(`${lower}/a/b`, `${rw}/a/b`);
    sameDir(`${lower}/a`, `${rw}/a`);
    assert.deepEqual(layerChanges([lower], rw), [
      c("/a", "modify"),
      c("/a/b", "modify"),
      c("/a/b/new", "add"),
    ]);
  });
});

Deno.test("layerChanges (deviation): aufs metadata dirs are skipped with their contents", async () => {
  await tmp(async (t) => {
    const lower = `${t}/lower`, rw = `${t}/rw`;
    await Deno.mkdir(lower);
    await Deno.mkdir(`${rw}/.wh..wh.plnk`, { recursive: true });
    await Deno.mkdir(`${rw}/.wh..wh.orph`);
    await Deno.writeTextFile(`${rw}/.wh..wh.aufs`, "");
    await Deno.writeTextFile(`${rw}/.wh..wh.plnk/123.456`, "x");
    await Deno.writeTextFile(`${rw}/.wh..wh.orph/o`, "x");
    await Deno.writeTextFile(`${rw}/added`, "x");
    // Go 1.43 also reports "C /.wh..wh.plnk" and "A /.wh..wh.plnk/123.456".
    assert.deepEqual(layerChanges([lower], rw), [c("/added", "add")]);
  });
});

Deno.test("layerChanges: a nested opaque marker reads as a delete of .wh..opq (as in Go)", async () => {
  await tmp(async (t) => {
    const lower = `${t}/lower`, rw = `${t}/rw`;
    await Deno.mkdir(`${lower}/d`, { recursive: true });
    await Deno.writeTextFile(`${lower}/d/x`, "");
    await Deno.mkdir(`${rw}/d`, { recursive: true });
    await Deno.writeTextFile(`${rw}/d/.wh..wh..opq`, "");
    await Deno.writeTextFile(`${rw}/d/x`, "new");
    sameDir(`${lower}/d`, `${rw}/d`);
    assert.deepEqual(layerChanges([lower], rw), [
      c("/d", "modify"),
      c("/d/.wh..opq", "delete"),
      c("/d/x", "modify"),
    ]);
  });
});

Deno.test("layerChanges (deviation): lower symlinks are entries, never followed", async () => {
  await tmp(async (t) => {
    const lower = `${t}/lower`, rw = `${t}/rw`;
    await Deno.mkdir(lower);
    await Deno.mkdir(`${t}/host/etc`, { recursive: true });
    await Deno.writeTextFile(`${t}/host/etc/passwd`, "");
    await Deno.symlink(`${t}/host/etc`, `${lower}/link`); // absolute: Go would read the host
    await Deno.symlink("/nonexistent-strata-target", `${lower}/dangling`);
    await Deno.mkdir(`${rw}/link`, { recursive: true });
    await Deno.writeTextFile(`${rw}/link/passwd`, "");
    await Deno.writeTextFile(`${rw}/dangling`, "now a file");
    assert.deepEqual(layerChanges([lower], rw), [
      c("/dangling", "modify"), // Go: add (stat of the dangling link fails)
      c("/link", "modify"),
      c("/link/passwd", "add"), // Go: modify (it finds the host's file)
    ]);
  });
});

Deno.test("layerChanges (deviation): a lower file that became a directory is no error", async () => {
  await tmp(async (t) => {
    const lower = `${t}/lower`, rw = `${t}/rw`;
    await Deno.mkdir(lower);
    await Deno.writeTextFile(`${lower}/f`, "was a file");
    await Deno.mkdir(`${rw}/f/sub`, { recursive: true });
    await Deno.writeTextFile(`${rw}/f/sub/child`, "");
    // Go 1.43 fails: "stat <lower>/f/sub: not a directory".
    assert.deepEqual(layerChanges([lower], rw), [
      c("/f", "modify"),
      c("/f/sub", "add"),
      c("/f/sub/child", "add"),
    ]);
  });
});

Deno.test("layerChanges: whiteouts in a middle layer hide what lies below them", async () => {
  await tmp(async (t) => {
    const l0 = `${t}/l0`, l1 = `${t}/l1`, rw = `${t}/rw`;
    await Deno.mkdir(`${l1}/d`, { recursive: true });
    await Deno.writeTextFile(`${l1}/d/f`, "");
    await Deno.writeTextFile(`${l1}/g`, "");
    await Deno.mkdir(l0);
    await Deno.writeTextFile(`${l0}/.wh.d`, "");
    await Deno.writeTextFile(`${l0}/.wh.g`, "");
    await Deno.mkdir(`${rw}/d`, { recursive: true });
    await Deno.writeTextFile(`${rw}/d/f`, "");
    await Deno.writeTextFile(`${rw}/g`, "");
    Deno.utimeSync(`${l1}/d`, 1_500_000_000, 1_500_000_000);
    assert.deepEqual(layerChanges([l0, l1], rw), [
      c("/d", "add"),
      c("/d/f", "add"),
      c("/g", "add"),
    ]);
    // Without the middle layer the same entries exist below.
    assert.deepEqual(layerChanges([l1], rw).map((x) => x.kind), ["modify", "modify", "modify"]);
  });
});

Deno.test("layerChanges (deviation): an opaque directory in a middle layer hides what lies below", async () => {
  await tmp(async (t) => {
    const l0 = `${t}/l0`, l1 = `${t}/l1`, rw = `${t}/rw`;
    await Deno.mkdir(`${l1}/d`, { recursive: true });
    await Deno.writeTextFile(`${l1}/d/f`, "");
    await Deno.mkdir(`${l0}/d`, { recursive: true });
    await Deno.writeTextFile(`${l0}/d/.wh..wh..opq`, "");
    await Deno.mkdir(`${rw}/d`, { recursive: true });
    await Deno.writeTextFile(`${rw}/d/f`, "");
    sameDir(`${l0}/d`, `${rw}/d`);
    // Go 1.43 finds l1/d/f and says modify.
    assert.deepEqual(layerChanges([l0, l1], rw), [c("/d", "modify"), c("/d/f", "add")]);
  });
});

Deno.test("layerChanges, overlay format: 0/0 devices delete, opaque dirs replace", async () => {
  await tmp(async (t) => {
    const l0 = `${t}/l0`, l1 = `${t}/l1`, rw = `${t}/rw`;
    await Deno.mkdir(`${l1}/d`, { recursive: true });
    await Deno.writeTextFile(`${l1}/d/f1`, "");
    await Deno.writeTextFile(`${l1}/d/f2`, "");
    await Deno.mkdir(`${l1}/e`);
    await Deno.writeTextFile(`${l1}/e/x`, "");
    await Deno.writeTextFile(`${l1}/g`, "");
    await Deno.mkdir(l0);
    libc.mknodat(AT.FDCWD, `${l0}/g`, S.IFCHR | 0o600, 0, 0); // l0 deleted g
    await Deno.mkdir(`${rw}/d`, { recursive: true });
    sameDir(`${l1}/d`, `${rw}/d`);
    libc.mknodat(AT.FDCWD, `${rw}/d/f1`, S.IFCHR | 0o600, 0, 0);
    await Deno.mkdir(`${rw}/e`);
    libc.lsetxattr(`${rw}/e`, "trusted.overlay.opaque", new TextEncoder().encode("y"));
    await Deno.writeTextFile(`${rw}/e/y`, "");
    await Deno.writeTextFile(`${rw}/g`, "back");
    assert.deepEqual(layerChanges([l0, l1], rw, { whiteoutFormat: "overlay" }), [
      c("/d", "modify"),
      c("/d/f1", "delete"),
      c("/e", "delete"),
      c("/e/y", "add"),
      c("/g", "add"),
    ]);
  });
});

Deno.test("sortChanges: byte order of paths, then add < modify < delete", () => {
  const got = sortChanges([
    c("/b", "delete"),
    c("/a/z", "add"),
    c("/é", "add"),
    c("/b", "add"),
    c("/Z", "modify"),
  ]);
  assert.deepEqual(got, [
    c("/Z", "modify"),
    c("/a/z", "add"),
    c("/b", "add"),
    c("/b", "delete"),
    c("/é", "add"),
  ]);
});

Deno.test("changesDirs: adds, modifies, deletes between two trees", async () => {
  await tmp(async (t) => {
    const o = `${t}/old`, n = `${t}/new`;
    await Deno.mkdir(`${o}/d`, { recursive: true });
    await Deno.mkdir(`${o}/e/sub`, { recursive: true });
    await Deno.mkdir(`${o}/f`);
    await Deno.writeTextFile(`${o}/a`, "abc");
    await Deno.writeTextFile(`${o}/d/x`, "x");
    await Deno.writeTextFile(`${o}/e/1`, "");
    await Deno.writeTextFile(`${o}/e/sub/2`, "");
    await Deno.writeTextFile(`${o}/f/inside`, "");
    await Deno.writeTextFile(`${o}/same`, "same");
    await cpA(o, n);
    await Deno.writeTextFile(`${n}/a`, "abcd");
    await Deno.writeTextFile(`${n}/new`, "");
    await Deno.mkdir(`${n}/newdir/deep`, { recursive: true });
    await Deno.remove(`${n}/e`, { recursive: true });
    await Deno.remove(`${n}/f`, { recursive: true });
    await Deno.writeTextFile(`${n}/f`, "dir became a file");
    await Deno.writeTextFile(`${n}/d/y`, "");
    assert.deepEqual(changesDirs(n, o), [
      c("/a", "modify"),
      c("/d", "modify"),
      c("/d/y", "add"),
      c("/e", "delete"),
      c("/f", "modify"),
      c("/new", "add"),
      c("/newdir", "add"),
      c("/newdir/deep", "add"),
    ]);
  });
});

Deno.test("changesDirs: same second with no nanoseconds on one side counts as unchanged", async () => {
  await tmp(async (t) => {
    const o = `${t}/old`, n = `${t}/new`;
    await Deno.mkdir(o);
    await Deno.mkdir(n);
    for (const d of [o, n]) {
      await Deno.writeTextFile(`${d}/tar-rounded`, "x");
      await Deno.writeTextFile(`${d}/ns-differ`, "x");
    }
    libc.utimensat(AT.FDCWD, `${o}/tar-rounded`, 0, 0, 1_600_000_000, 700_000_000, 0);
    libc.utimensat(AT.FDCWD, `${n}/tar-rounded`, 0, 0, 1_600_000_000, 0, 0);
    libc.utimensat(AT.FDCWD, `${o}/ns-differ`, 0, 0, 1_600_000_000, 700_000_000, 0);
    libc.utimensat(AT.FDCWD, `${n}/ns-differ`, 0, 0, 1_600_000_000, 300_000_000, 0);
    assert.deepEqual(changesDirs(n, o), [c("/ns-differ", "modify")]);
  });
});

Deno.test("changesDirs: security.capability and user.* xattrs are compared", async () => {
  await tmp(async (t) => {
    const o = `${t}/old`, n = `${t}/new`;
    await Deno.mkdir(o);
    await Deno.writeTextFile(`${o}/u`, "x");
    await Deno.writeTextFile(`${o}/cap`, "x");
    await Deno.writeTextFile(`${o}/trusted`, "x");
    await cpA(o, n);
    const enc = new TextEncoder();
    libc.lsetxattr(`${n}/u`, "user.k", enc.encode("v"));
    libc.lsetxattr(
      `${n}/cap`,
      "security.capability",
      Uint8Array.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    libc.lsetxattr(`${n}/trusted`, "trusted.k", enc.encode("v"));
    assert.deepEqual(changesDirs(n, o), [c("/cap", "modify"), c("/u", "modify")]);
  });
});

Deno.test('changesDirs: "" as the old tree makes everything an add', async () => {
  await tmp(async (t) => {
    await Deno.mkdir(`${t}/n/d`, { recursive: true });
    await Deno.writeTextFile(`${t}/n/d/f`, "");
    await Deno.writeTextFile(`${t}/n/g`, "");
    assert.deepEqual(changesDirs(`${t}/n`, ""), [c("/d", "add"), c("/d/f", "add"), c("/g", "add")]);
  });
});

Deno.test("changesDirs: a name with the same inode on the same device is not looked at", async () => {
  await tmp(async (t) => {
    const o = `${t}/old`, n = `${t}/new`;
    await Deno.mkdir(o);
    await Deno.writeTextFile(`${o}/shared`, "x");
    await Deno.writeTextFile(`${o}/own`, "x");
    await cpA(o, n, true); // hard links: same inodes
    Deno.chmodSync(`${n}/shared`, 0o600); // changes both names of the one inode
    await Deno.remove(`${n}/own`);
    await Deno.writeTextFile(`${n}/own`, "y"); // a new inode
    assert.deepEqual(changesDirs(n, o), [c("/own", "modify")]);
  });
});

Deno.test("changesDirs: a missing tree is an error", () => {
  assert.throws(() => changesDirs("/nonexistent/strata-a", ""), Deno.errors.NotFound);
});
