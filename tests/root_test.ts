import assert from "node:assert/strict";
import { join } from "node:path";
import { Errno, ErrnoError, errnoOf, type Libc, S, systemLibc } from "../ffi/libc.ts";
import { byteKey, cleanInRoot, Root } from "../lib/archive/root.ts";
import { makeSandbox, RESOLVERS, type Sandbox } from "./support/extract_fixtures.ts";
import { hostGuard } from "./support/host_guard.ts";

// Hostile names aim at host paths (/etc, /): run the cases where an escape
// cannot reach the host (a private overlay of /).
const test = hostGuard(import.meta.url);

const dec = new TextDecoder();
const text = (b: Uint8Array) => dec.decode(b);

test("cleanInRoot cleans lexically with .. clamped at the root", () => {
  const cases: [string, string][] = [
    ["a/b/c", "a/b/c"],
    ["a/b/", "a/b"],
    ["/a//b/./c/", "a/b/c"],
    ["../a", "a"],
    ["/../../a/../b", "b"],
    ["a/../..", ""],
    [".", ""],
    ["", ""],
    ["/", ""],
    ["..gitme", "..gitme"],
    [".wh...", ".wh..."],
    ["a/.../b", "a/.../b"],
  ];
  for (const [input, want] of cases) assert.equal(text(cleanInRoot(input)), want, input);
  // raw bytes survive
  const raw = new Uint8Array([0x61, 0xff, 0x2f, 0x2e, 0x2e, 0x2f, 0xfe]);
  assert.deepEqual(cleanInRoot(raw), new Uint8Array([0xfe]));
});

test("byteKey maps distinct byte strings to distinct keys", () => {
  const a = byteKey(new Uint8Array([0xc3, 0xa9]));
  const b = byteKey(new TextEncoder().encode("é"));
  assert.equal(a, b);
  assert.notEqual(byteKey(new Uint8Array([0xff])), byteKey(new Uint8Array([0xfe])));
  assert.equal(byteKey(new Uint8Array(20000).fill(0x61)).length, 20000);
});

/** A libc whose openat2 reports ENOSYS (a kernel before 5.6). */
function noOpenat2(): Libc {
  const real = systemLibc();
  return new Proxy(real, {
    get(target, prop) {
      if (prop === "openat2") {
        return () => {
          throw new ErrnoError(Errno.ENOSYS, "openat2", "");
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

test("Root falls back to the component walk when openat2 is ENOSYS", async () => {
  const sb = await makeSandbox();
  try {
    const root = new Root(sb.dest, { libc: noOpenat2() });
    try {
      assert.equal(root.resolver, "openat2");
      root.mkdir("x", 0o755);
      root.symlink("/x", "abs");
      root.mkdirAll("abs/y", 0o755);
      assert.equal(root.resolver, "walk");
      assert.ok(Deno.statSync(join(sb.dest, "x", "y")).isDirectory);
    } finally {
      root.close();
    }
    sb.assertOutsideUnchanged();
  } finally {
    await sb.cleanup();
  }
});

async function withRoot(
  forceFallback: boolean,
  fn: (root: Root, sb: Sandbox) => void | Promise<void>,
): Promise<void> {
  const sb = await makeSandbox();
  try {
    const root = new Root(sb.dest, { forceFallback });
    try {
      assert.equal(root.resolver, forceFallback ? "walk" : "openat2");
      await fn(root, sb);
    } finally {
      root.close();
    }
    sb.assertOutsideUnchanged();
    await Deno.remove(sb.dest, { recursive: true });
  } finally {
    await sb.cleanup();
  }
}

for (const r of RESOLVERS) {
  test(`Root resolves symlinks inside the root (${r.name})`, () =>
    withRoot(r.forceFallback, (root, sb) => {
      root.mkdir("etc", 0o755);
      root.symlink("/etc", "abs");
      root.symlink("../../../../etc", "up");
      root.symlink(sb.victim, "hostpath"); // an absolute host path: means <dest><victim>
      root.symlink("chain2", "chain1");
      root.symlink("/up/", "chain2");
      root.mkdir("d", 0o755);
      root.symlink("..", "d/parent");
      for (const via of ["abs", "up", "chain1", "d/parent/etc", "d/../../abs"]) {
        const fd = root.createFile(`${via}/f-${via.replaceAll("/", "_")}`, 0o644);
        systemLibc().close(fd);
      }
      const made = [...Deno.readDirSync(join(sb.dest, "etc"))].map((e) => e.name).sort();
      assert.deepEqual(made, ["f-abs", "f-chain1", "f-d_.._.._abs", "f-d_parent_etc", "f-up"]);
      root.mkdirAll(sb.victim, 0o755); // the in-root twin of the host path
      root.mkdirAll("hostpath/sub", 0o755);
      assert.ok(Deno.statSync(join(sb.dest, sb.victim, "sub")).isDirectory);
    }));

  test(`Root reports ELOOP for symlink loops and ENOTDIR through files (${r.name})`, () =>
    withRoot(r.forceFallback, (root) => {
      root.symlink("loop2", "loop1");
      root.symlink("/loop1", "loop2");
      assert.equal(errnoOf(catchErr(() => root.mkdir("loop1/x", 0o755))), Errno.ELOOP);
      // 41 chained links exceed the kernel's 40.
      for (let i = 0; i < 41; i++) root.symlink(i === 40 ? "target" : `l${i + 1}`, `l${i}`);
      root.mkdir("target", 0o755);
      assert.equal(errnoOf(catchErr(() => root.mkdir("l0/x", 0o755))), Errno.ELOOP);
      root.mkdir("l2/x", 0o755); // 39 links: fine
      assert.ok(root.lstat("target/x"));
      const fd = root.createFile("file", 0o644);
      systemLibc().close(fd);
      assert.equal(errnoOf(catchErr(() => root.mkdir("file/x", 0o755))), Errno.ENOTDIR);
      const e = catchErr(() => root.mkdir("missing/x", 0o755));
      assert.equal(errnoOf(e), Errno.ENOENT);
      assert.match((e as Error).message, /missing\/x/);
    }));

  test(`Root never follows a final symlink (${r.name})`, () =>
    withRoot(r.forceFallback, (root, sb) => {
      // A symlink whose target, if followed by the host, is the victim's file.
      const hello = join(sb.victim, "hello");
      root.symlink(hello, "out");
      // mkdir/create/mknod/symlink on the name: EEXIST, not through it.
      for (
        const op of [
          () => root.mkdir("out", 0o755),
          () => root.createFile("out", 0o644),
          () => root.mknod("out", S.IFIFO | 0o644, 0, 0),
          () => root.symlink("x", "out"),
        ]
      ) assert.equal(errnoOf(catchErr(op)), Errno.EEXIST);
      root.lchown("out", 1234, 1234);
      const st = root.lstat("out");
      assert.equal(st.mode & S.IFMT, S.IFLNK);
      assert.equal(st.uid, 1234);
      assert.equal(errnoOf(catchErr(() => root.chmod("out", 0o777))), Errno.EOPNOTSUPP);
      root.utimens("out", 1, 2, 3, 4);
      assert.equal(root.lstat("out").mtimeSec, 3);
      root.setxattr("out", "trusted.strata", new Uint8Array([1]));
      assert.deepEqual(root.getxattr("out", "trusted.strata"), new Uint8Array([1]));
      assert.equal(errnoOf(catchErr(() => root.openDir("out"))), Errno.ENOTDIR);
      // A hard link to it links the symlink itself.
      root.link("out", "out2");
      assert.equal(root.lstat("out2").ino, st.ino);
      root.removeAll("out");
      root.unlink("out2");
      assert.equal(root.exists("out"), false);
    }));

  test(`Root.removeAll removes trees without following symlinks (${r.name})`, () =>
    withRoot(r.forceFallback, (root, sb) => {
      root.mkdirAll("t/a/b/c", 0o755);
      root.symlink(sb.victim, "t/a/tovictim");
      root.symlink("/", "t/a/b/toroot");
      root.mknod("t/fifo", S.IFIFO | 0o600, 0, 0);
      systemLibc().close(root.createFile("t/a/b/c/f", 0o000));
      root.chmod("t/a/b", 0o000);
      root.removeAll("t");
      assert.equal(root.exists("t"), false);
      root.removeAll("t"); // missing: fine
      root.removeAll("nothere/at/all");
      assert.equal(errnoOf(catchErr(() => root.removeAll("/"))), Errno.EBUSY);
      assert.equal(errnoOf(catchErr(() => root.rmdir("nothere"))), Errno.ENOENT);
    }));

  test(`Root.prune keeps what the predicate keeps, recursively (${r.name})`, () =>
    withRoot(r.forceFallback, (root) => {
      root.mkdirAll("d/keep/sub", 0o755);
      root.mkdirAll("d/drop/sub", 0o755);
      for (const f of ["d/keep/a", "d/keep/sub/b", "d/drop/c", "d/x"]) {
        systemLibc().close(root.createFile(f, 0o644));
      }
      const keep = new Set(["d/keep", "d/keep/a", "d/keep/sub"]);
      root.prune("d", (p) => keep.has(text(p)));
      const left: string[] = [];
      const walk = (rel: string) => {
        for (const e of Deno.readDirSync(join(root.path, rel))) {
          left.push(`${rel}/${e.name}`);
          if (e.isDirectory) walk(`${rel}/${e.name}`);
        }
      };
      walk("d");
      assert.deepEqual(left.sort(), ["d/keep", "d/keep/a", "d/keep/sub"]);
      root.symlink("d", "dl");
      assert.equal(errnoOf(catchErr(() => root.prune("dl", () => false))), Errno.ENOTDIR);
      root.prune("", (p) => text(p) === "d");
      assert.deepEqual([...Deno.readDirSync(root.path)].map((e) => e.name), ["d"]);
    }));

  test(`Root drops cached directories when names change (${r.name})`, () =>
    withRoot(r.forceFallback, (root) => {
      root.mkdir("a", 0o755);
      root.mkdir("b", 0o755);
      systemLibc().close(root.createFile("a/one", 0o644)); // caches "a"
      root.removeAll("a");
      root.symlink("b", "a");
      systemLibc().close(root.createFile("a/two", 0o644)); // must go to b
      assert.ok(Deno.statSync(join(root.path, "b", "two")).isFile);
      root.rename("a", "c");
      root.mkdir("a", 0o755);
      systemLibc().close(root.createFile("a/three", 0o644));
      assert.ok(Deno.lstatSync(join(root.path, "a", "three")).isFile);
      assert.ok(Deno.lstatSync(join(root.path, "c")).isSymlink);
      // Many directories: the cache evicts and keeps working.
      for (let i = 0; i < 40; i++) root.mkdirAll(`many/d${i}`, 0o755);
      for (let i = 0; i < 40; i++) systemLibc().close(root.createFile(`many/d${i}/f`, 0o644));
      assert.equal([...Deno.readDirSync(join(root.path, "many"))].length, 40);
    }));

  test(`Root.mkdirAll reports each directory it creates (${r.name})`, () =>
    withRoot(r.forceFallback, (root) => {
      const created: string[] = [];
      root.mkdir("x", 0o755);
      root.mkdirAll("x/y/z", 0o700, (p) => created.push(text(p)));
      assert.deepEqual(created, ["x/y", "x/y/z"]);
      root.mkdirAll("x/y/z", 0o700, (p) => created.push(text(p)));
      assert.equal(created.length, 2);
      systemLibc().close(root.createFile("x/file", 0o644));
      assert.notEqual(catchErr(() => root.mkdirAll("x/file/sub", 0o755)), null);
    }));

  test(`Root metadata operations on the root itself (${r.name})`, () =>
    withRoot(r.forceFallback, (root) => {
      root.chmod("/", 0o711);
      root.lchown("..", 7, 8);
      root.utimens(".", 10, 0, 20, 0);
      root.setxattr("", "user.strata", new Uint8Array([0x79]));
      const st = root.lstat("");
      assert.equal(st.mode & 0o7777, 0o711);
      assert.equal(st.uid, 7);
      assert.equal(st.mtimeSec, 20);
      assert.deepEqual(root.getxattr("/", "user.strata"), new Uint8Array([0x79]));
      root.syncfs();
    }));
}

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return null;
}
