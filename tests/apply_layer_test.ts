import { compareBytes } from "../lib/archive/bytes.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { AT, S, type Stat, systemLibc } from "../ffi/libc.ts";
import {
  applyLayer,
  type ApplyLayerOptions,
  ExtractError,
  InvalidArchiveError,
} from "../lib/archive/apply_layer.ts";

import {
  dir,
  type EntrySpec,
  file,
  link,
  makeSandbox,
  RESOLVERS,
  type Sandbox,
  streamOf,
  symlink,
  tarOf,
} from "./support/extract_fixtures.ts";
import { hostGuard } from "./support/host_guard.ts";

// Hostile names aim at host paths (/etc, /): run the cases where an escape
// cannot reach the host (a private overlay of /).
const test = hostGuard(import.meta.url);

const libc = systemLibc();
const enc = new TextEncoder();
const lstat = (p: string): Stat => libc.fstatat(AT.FDCWD, p, AT.SYMLINK_NOFOLLOW);

function eachResolver(
  name: string,
  fn: (sb: Sandbox, opts: ApplyLayerOptions) => Promise<void>,
): void {
  for (const r of RESOLVERS) {
    test(`${name} (${r.name})`, async () => {
      const sb = await makeSandbox();
      try {
        const fds = [...Deno.readDirSync("/proc/self/fd")].length;
        await fn(sb, { forceFallback: r.forceFallback });
        assert.equal([...Deno.readDirSync("/proc/self/fd")].length, fds, "descriptors leaked");
        sb.assertOutsideUnchanged();
        await Deno.remove(sb.dest, { recursive: true });
      } finally {
        await sb.cleanup();
      }
    });
  }
}

const apply = (specs: EntrySpec[], dest: string, opts: ApplyLayerOptions, chunk?: number) =>
  applyLayer(streamOf(tarOf(specs), chunk), dest, opts);

const failure = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);

/** Paths as makeTestLayer lists them ("d/" for directories), in walk order. */
function layerOf(paths: string[]): EntrySpec[] {
  const key = (p: string) => p.replace(/\/$/, "").split("/").map((c) => enc.encode(c));
  const sorted = [...paths].sort((a, b) => {
    const ka = key(a), kb = key(b);
    for (let i = 0; i < Math.min(ka.length, kb.length); i++) {
      const c = compareBytes(ka[i], kb[i]);
      if (c !== 0) return c;
    }
    return ka.length - kb.length;
  });
  return sorted.map((p) => p.endsWith("/") ? dir(p, 0o700) : file(p, "", 0o600));
}

/** Every path below `root`, "d/" for directories, sorted as Go's WalkDir lists them. */
function contents(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const names = [...Deno.readDirSync(join(root, rel))].map((e) => e.name);
    names.sort((a, b) => compareBytes(enc.encode(a), enc.encode(b)));
    for (const n of names) {
      const p = rel ? `${rel}/${n}` : n;
      if (Deno.lstatSync(join(root, p)).isDirectory) {
        out.push(p + "/");
        walk(p);
      } else out.push(p);
    }
  };
  walk("");
  return out;
}

eachResolver("seed TestApplyLayerWhiteouts: the three transitions", async (sb, o) => {
  const base = [
    ".baz",
    "bar/",
    "bar/bax",
    "bar/bay/",
    "baz",
    "foo/",
    "foo/.abc",
    "foo/.bcd/",
    "foo/.bcd/a",
    "foo/cde/",
    "foo/cde/def",
    "foo/cde/efg",
    "foo/fgh",
    "foobar",
  ];
  const cases: [string[], string[]][] = [
    [base, base],
    [
      [".bay", ".wh.baz", "foo/", "foo/.bce", "foo/.wh..wh..opq", "foo/cde/", "foo/cde/efg"],
      [
        ".bay",
        ".baz",
        "bar/",
        "bar/bax",
        "bar/bay/",
        "foo/",
        "foo/.bce",
        "foo/cde/",
        "foo/cde/efg",
        "foobar",
      ],
    ],
    [
      [".bay", ".wh..baz", ".wh.foobar", "foo/", "foo/.abc", "foo/.wh.cde", "bar/"],
      [".bay", "bar/", "bar/bax", "bar/bay/", "foo/", "foo/.abc", "foo/.bce"],
    ],
    [[".abc", ".wh..wh..opq", "foobar"], [".abc", "foobar"]],
  ];
  for (const [i, [change, expected]] of cases.entries()) {
    await apply(layerOf(change), sb.dest, o);
    assert.deepEqual(contents(sb.dest), expected, `layer ${i}`);
  }
});

eachResolver("applyLayer returns the sum of all header sizes", async (sb, o) => {
  const size = await apply(
    [
      dir("d"),
      file("d/a", "12345"),
      file(".wh..wh.aufs", "abc"), // skipped, still counted
      file(".wh.gone", "whiteout with a body"),
      file(".", "root entry with a body"),
      file("d/b", "x".repeat(1000)),
      link("d/a", "hl"),
    ],
    sb.dest,
    o,
  );
  assert.equal(size, 5 + 3 + 20 + 22 + 1000);
  assert.equal(Deno.readTextFileSync(join(sb.dest, "hl")), "12345");
});

eachResolver("whiteouts of ., .. and empty names are refused, naming the entry", async (sb, o) => {
  Deno.mkdirSync(join(sb.dest, "etc"));
  Deno.writeTextFileSync(join(sb.dest, "etc", "passwd"), "inside");
  for (const name of [".wh.", ".wh..", ".wh...", "etc/.wh..", "etc/.wh...", "a/b/../.wh."]) {
    const err = await failure(apply([file(name)], sb.dest, o));
    assert.ok(err instanceof ExtractError, name);
    assert.ok(err.cause instanceof InvalidArchiveError, name);
    assert.equal(err.entry, name);
    assert.match(err.message, /^apply layer into .*: entry ".*": invalid archive/);
  }
  assert.equal(Deno.readTextFileSync(join(sb.dest, "etc", "passwd")), "inside");
});

eachResolver("whiteout deletions stay in dest and never follow a final symlink", async (sb, o) => {
  const d = sb.dest;
  Deno.symlinkSync(sb.victim, join(d, "tovictim")); // absolute host path
  Deno.symlinkSync("../victim", join(d, "up"));
  Deno.symlinkSync(join(sb.victim, "hello"), join(d, "hellolink"));
  Deno.mkdirSync(join(d, sb.victim), { recursive: true }); // in-root twin of the victim dir
  Deno.writeTextFileSync(join(d, sb.victim, "hello"), "twin");
  await apply(
    [
      file("tovictim/.wh.hello"), // resolves to the in-root twin
      file("up/.wh.sub"), // ../victim in the root is /victim: missing, nothing happens
      file(".wh.hellolink"), // the symlink goes, not its target
      file("../.wh.victim"),
    ],
    d,
    o,
  );
  assert.equal([...Deno.readDirSync(join(d, sb.victim))].length, 0);
  assert.equal(Deno.lstatSync(join(d, "tovictim")).isSymlink, true);
  assert.throws(() => Deno.lstatSync(join(d, "hellolink")));
});

eachResolver("an opaque marker clears only what this layer did not bring", async (sb, o) => {
  const d = sb.dest;
  Deno.mkdirSync(join(d, "o", "lower", "deep"), { recursive: true });
  Deno.writeTextFileSync(join(d, "o", "lower", "deep", "f"), "");
  Deno.writeTextFileSync(join(d, "o", "old"), "");
  Deno.mkdirSync(join(d, "o", "kept"));
  Deno.writeTextFileSync(join(d, "o", "kept", "oldchild"), "");
  Deno.mkdirSync(join(d, "real"));
  Deno.writeTextFileSync(join(d, "real", "stays"), "");
  Deno.symlinkSync("real", join(d, "sl"));
  await apply(
    [
      dir("o"),
      dir("o/kept"),
      file("o/kept/new"),
      file("o/new"),
      file("o/.wh..wh..opq"),
      file("sl/.wh..wh..opq"), // in a symlink: a no-op, as Go's WalkDir
      file("missing/.wh..wh..opq"), // the parent is created, empty
    ],
    d,
    o,
  );
  assert.deepEqual(contents(join(d, "o")), ["kept/", "kept/new", "new"]);
  assert.deepEqual(contents(join(d, "real")), ["stays"]);
  assert.deepEqual(contents(join(d, "missing")), []);
});

eachResolver("aufs pseudo-links: hard links into .wh..wh.plnk become copies", async (sb, o) => {
  const d = sb.dest;
  const big = new Uint8Array(5 << 20).map((_, i) => (i * 7) & 0xff); // O_TMPFILE path
  await apply(
    [
      dir(".wh..wh.plnk", 0o700),
      { ...file(".wh..wh.plnk/1.2", "pseudo", 0o4711), uid: 3, gid: 4, mtimeSec: 777 },
      { ...file(".wh..wh.plnk/big", big, 0o600) },
      file(".wh..wh.aufs", ""),
      dir(".wh..wh.orph"),
      file(".wh..wh.orph/x", "orphan"),
      dir("a"),
      link(".wh..wh.plnk/1.2", "a/one"),
      link("/.wh..wh.plnk/../.wh..wh.plnk/1.2", "a/two"),
      link(".wh..wh.plnk/big", "a/big"),
      file("a/.wh..wh.keep", ""), // nested: an ordinary whiteout of "a/.wh.keep"
    ],
    d,
    o,
    64 * 1024,
  );
  assert.deepEqual(contents(d), ["a/", "a/big", "a/one", "a/two"]);
  const one = lstat(join(d, "a", "one")), two = lstat(join(d, "a", "two"));
  assert.notEqual(one.ino, two.ino);
  assert.equal(one.nlink, 1);
  assert.equal(Deno.readTextFileSync(join(d, "a", "two")), "pseudo");
  assert.equal(one.mode & 0o7777, 0o4711);
  assert.deepEqual([one.uid, one.gid, one.mtimeSec], [3, 4, 777]);
  assert.deepEqual(Deno.readFileSync(join(d, "a", "big")), big);
  const err = await failure(apply([link(".wh..wh.plnk/nope", "x")], d, o));
  assert.ok(err instanceof ExtractError && err.cause instanceof InvalidArchiveError);
  assert.match(err.message, /invalid aufs hardlink/);
});

eachResolver(
  "a ./ directory entry sets dest's own metadata; other root names are skipped",
  async (sb, o) => {
    await apply(
      [
        { ...dir(".", 0o750), uid: 12, gid: 13, mtimeSec: 1234 },
        symlink("/etc", ".."),
        file("..", "not a file"),
        file("a"),
      ],
      sb.dest,
      o,
    );
    const st = lstat(sb.dest);
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.mtimeSec], [0o750, 12, 13, 1234]);
    assert.deepEqual(contents(sb.dest), ["a"]);
  },
);

eachResolver("missing parents are created 0755 (seed §9 row 20's fix)", async (sb, o) => {
  await apply([file("x/y/z", "deep")], sb.dest, o);
  assert.equal(lstat(join(sb.dest, "x")).mode & 0o7777, 0o755);
  assert.equal(lstat(join(sb.dest, "x", "y")).mode & 0o7777, 0o755);
});

eachResolver("a directory entry over a directory keeps its xattrs and contents", async (sb, o) => {
  Deno.mkdirSync(join(sb.dest, "d"));
  Deno.writeTextFileSync(join(sb.dest, "d", "f"), "");
  libc.lsetxattr(join(sb.dest, "d"), "user.keep", new Uint8Array([1]));
  await apply([dir("d", 0o711)], sb.dest, o);
  assert.deepEqual(libc.lgetxattr(join(sb.dest, "d"), "user.keep"), new Uint8Array([1]));
  assert.equal(lstat(join(sb.dest, "d")).mode & 0o7777, 0o711);
  assert.deepEqual(contents(join(sb.dest, "d")), ["f"]);
});

eachResolver("overlay format converts whiteouts instead of deleting", async (sb, o) => {
  const d = sb.dest;
  const maps = {
    uidMaps: [{ containerID: 0, hostID: 100000, size: 65536 }],
    gidMaps: [{ containerID: 0, hostID: 100000, size: 65536 }],
  };
  const size = await apply(
    [
      dir("d"),
      file("d/new", "n"),
      file("d/.wh..wh..opq"),
      { ...file(".wh.gone", "12"), uid: 5, gid: 6 },
      file(".wh.foo"),
      file("foo/.wh.bar"), // foo is now a whiteout device: ENOTDIR, skipped
      file(".wh..wh..opq"),
      file(".wh..wh.aufs"),
    ],
    d,
    { ...o, ...maps, whiteoutFormat: "overlay" },
  );
  assert.equal(size, 3);
  const gone = lstat(join(d, "gone"));
  assert.equal(gone.mode & S.IFMT, S.IFCHR);
  assert.deepEqual([gone.rdevMajor, gone.rdevMinor, gone.uid, gone.gid], [0, 0, 100005, 100006]);
  assert.equal(lstat(join(d, "foo")).mode & S.IFMT, S.IFCHR);
  assert.deepEqual(libc.lgetxattr(join(d, "d"), "trusted.overlay.opaque"), new Uint8Array([0x79]));
  assert.deepEqual(libc.lgetxattr(d, "trusted.overlay.opaque"), new Uint8Array([0x79]));
  assert.deepEqual(contents(d), ["d/", "d/new", "foo", "gone"]);
});
