import assert from "node:assert/strict";
import { join } from "node:path";
import { AT, S, type Stat, systemLibc } from "../ffi/libc.ts";
import { IdMapError } from "../lib/archive/idmap.ts";
import {
  ExtractError,
  InvalidArchiveError,
  untar,
  type UntarOptions,
} from "../lib/archive/untar.ts";
import {
  concat,
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
  TarType,
} from "./support/extract_fixtures.ts";
import { hostGuard } from "./support/host_guard.ts";

// Hostile names aim at host paths (/etc, /): run the cases where an escape
// cannot reach the host (a private overlay of /).
const test = hostGuard(import.meta.url);

const libc = systemLibc();
const lstat = (p: string): Stat => libc.fstatat(AT.FDCWD, p, AT.SYMLINK_NOFOLLOW);

/** Run `fn` once per resolver in a fresh sandbox; checks the outside after each. */
function eachResolver(
  name: string,
  fn: (sb: Sandbox, opts: UntarOptions) => Promise<void>,
): void {
  for (const r of RESOLVERS) {
    test(`${name} (${r.name})`, async () => {
      const sb = await makeSandbox();
      try {
        await fn(sb, { forceFallback: r.forceFallback });
        sb.assertOutsideUnchanged();
        await Deno.remove(sb.dest, { recursive: true });
      } finally {
        await sb.cleanup();
      }
    });
  }
}

const run = (specs: EntrySpec[], dest: string, opts: UntarOptions, chunk?: number) =>
  untar(streamOf(tarOf(specs), chunk), dest, opts);

eachResolver("untar is literal: whiteouts land as files, nothing is deleted", async (sb, o) => {
  Deno.writeTextFileSync(join(sb.dest, "foo"), "lower");
  Deno.mkdirSync(join(sb.dest, "d"));
  Deno.writeTextFileSync(join(sb.dest, "d", "x"), "lower");
  await run(
    [file(".wh.foo"), dir("d"), file("d/.wh..wh..opq"), file(".wh..wh.plnk/1")],
    sb.dest,
    o,
  );
  assert.equal(Deno.readTextFileSync(join(sb.dest, "foo")), "lower");
  assert.equal(Deno.readTextFileSync(join(sb.dest, "d", "x")), "lower");
  for (const p of [".wh.foo", "d/.wh..wh..opq", ".wh..wh.plnk/1"]) {
    assert.ok(Deno.lstatSync(join(sb.dest, p)).isFile, p);
  }
});

eachResolver(
  "entries naming the root are skipped: its metadata is never applied",
  async (sb, o) => {
    Deno.chmodSync(sb.dest, 0o751);
    await run(
      [dir("./", 0o700), dir("/", 0o700), dir("..", 0o700), { ...dir(".", 0o700), uid: 99 }],
      sb.dest,
      o,
    );
    const st = lstat(sb.dest);
    assert.equal(st.mode & 0o7777, 0o751);
    assert.equal(st.uid, 0);
  },
);

eachResolver("existing non-directories are replaced, directories merged", async (sb, o) => {
  const d = sb.dest;
  Deno.writeTextFileSync(join(d, "f2s"), "file");
  Deno.symlinkSync("somewhere", join(d, "s2f"));
  Deno.mkdirSync(join(d, "dir2f", "sub"), { recursive: true });
  Deno.writeTextFileSync(join(d, "dir2f", "sub", "x"), "x");
  Deno.mkdirSync(join(d, "keep"));
  Deno.writeTextFileSync(join(d, "keep", "old"), "old");
  Deno.writeTextFileSync(join(d, "f2d"), "file");
  await run(
    [
      symlink("target", "f2s"),
      file("s2f", "now a file"),
      file("dir2f", "was a dir"),
      dir("keep", 0o700),
      file("keep/new", "new"),
      dir("f2d"),
    ],
    d,
    o,
  );
  assert.equal(Deno.readLinkSync(join(d, "f2s")), "target");
  assert.equal(Deno.readTextFileSync(join(d, "s2f")), "now a file");
  assert.equal(Deno.readTextFileSync(join(d, "dir2f")), "was a dir");
  assert.equal(Deno.readTextFileSync(join(d, "keep", "old")), "old");
  assert.equal(Deno.readTextFileSync(join(d, "keep", "new")), "new");
  assert.equal(lstat(join(d, "keep")).mode & 0o7777, 0o700);
  assert.ok(Deno.lstatSync(join(d, "f2d")).isDirectory);
});

eachResolver("hard links, symlinks, FIFOs and devices", async (sb, o) => {
  const d = sb.dest;
  await run(
    [
      file("a", "content", 0o640),
      link("a", "b"),
      link("/a", "sub/c"), // missing parent made, source resolved in the root
      symlink("/not/inside/../at/all", "abs"),
      { name: "fifo", type: TarType.FIFO, mode: 0o600 },
      { name: "null", type: TarType.CHR, mode: 0o666, devmajor: 1, devminor: 3 },
      { name: "loop", type: TarType.BLK, mode: 0o660, devmajor: 7, devminor: 300 },
    ],
    d,
    o,
  );
  assert.equal(lstat(join(d, "a")).ino, lstat(join(d, "b")).ino);
  assert.equal(lstat(join(d, "a")).ino, lstat(join(d, "sub", "c")).ino);
  assert.equal(lstat(join(d, "a")).nlink, 3);
  assert.equal(Deno.readLinkSync(join(d, "abs")), "/not/inside/../at/all");
  assert.equal(lstat(join(d, "fifo")).mode, S.IFIFO | 0o600);
  const nul = lstat(join(d, "null"));
  assert.equal(nul.mode, S.IFCHR | 0o666);
  assert.deepEqual([nul.rdevMajor, nul.rdevMinor], [1, 3]);
  const loop = lstat(join(d, "loop"));
  assert.equal(loop.mode, S.IFBLK | 0o660);
  assert.deepEqual([loop.rdevMajor, loop.rdevMinor], [7, 300]);
});

eachResolver("devices are skipped in a user namespace, FIFOs are not", async (sb, o) => {
  await run(
    [
      { name: "null", type: TarType.CHR, mode: 0o666, devmajor: 1, devminor: 3 },
      { name: "fifo", type: TarType.FIFO, mode: 0o600 },
    ],
    sb.dest,
    { ...o, inUserNS: true },
  );
  assert.deepEqual([...Deno.readDirSync(sb.dest)].map((e) => e.name), ["fifo"]);
});

const MAPS = {
  uidMaps: [{ containerID: 0, hostID: 100000, size: 65536 }],
  gidMaps: [{ containerID: 0, hostID: 200000, size: 65536 }],
};

eachResolver("owners are mapped container→host; root-pair host ids pass through", async (sb, o) => {
  const d = join(sb.dest, "new", "layer"); // created by untar, owned by the root pair
  await run(
    [
      { ...file("deep/er/f"), uid: 5, gid: 6 },
      { ...file("quirk"), uid: 100000, gid: 200000 },
      { ...symlink("x", "l"), uid: 7, gid: 8 },
      { ...dir("dd"), uid: 1, gid: 2 },
    ],
    d,
    { ...o, ...MAPS },
  );
  const own = (p: string) => {
    const st = lstat(join(d, p));
    return [st.uid, st.gid];
  };
  assert.deepEqual(own("deep/er/f"), [100005, 200006]);
  assert.deepEqual(own("quirk"), [100000, 200000]);
  assert.deepEqual(own("l"), [100007, 200008]);
  assert.deepEqual(own("dd"), [100001, 200002]);
  assert.deepEqual(own("deep"), [100000, 200000]);
  assert.deepEqual(own("deep/er"), [100000, 200000]);
  assert.equal(lstat(join(d, "deep")).mode & 0o7777, 0o755);
  assert.deepEqual(own(""), [100000, 200000]);
  assert.deepEqual(own(".."), [100000, 200000]);
  assert.equal(lstat(d).mode & 0o7777, 0o755);
});

eachResolver("an unmappable owner is a typed error naming the entry", async (sb, o) => {
  const err = await run([{ ...file("f"), uid: 70000 }], sb.dest, { ...o, ...MAPS }).then(
    () => null,
    (e) => e,
  );
  assert.ok(err instanceof ExtractError);
  assert.ok(err.cause instanceof IdMapError);
  assert.equal(err.entry, "f");
  assert.match(err.message, /^untar into .*: entry "f": Container ID 70000 cannot be mapped/);
});

eachResolver("noLchown leaves owners alone", async (sb, o) => {
  await run([{ ...file("f"), uid: 5, gid: 6 }], sb.dest, { ...o, noLchown: true });
  assert.equal(lstat(join(sb.dest, "f")).uid, 0);
});

eachResolver("modes are exact, special bits survive the chown", async (sb, o) => {
  const d = sb.dest;
  await run(
    [
      { ...file("suid", "x", 0o4755), uid: 1000, gid: 1000 },
      { ...file("sgid", "x", 0o2711), uid: 1000, gid: 1000 },
      dir("sticky", 0o1777),
      { ...dir("setgid", 0o2775), gid: 42 },
      dir("setgid/child", 0o755), // would inherit S_ISGID without the chmod
      file("none", "", 0o000),
      { ...file("go-mode", "", 0o100644) }, // Go writes type bits in the mode field
      { name: "fifo", type: TarType.FIFO, mode: 0o4777 },
    ],
    d,
    o,
  );
  const mode = (p: string) => lstat(join(d, p)).mode & 0o7777;
  assert.equal(mode("suid"), 0o4755);
  assert.equal(mode("sgid"), 0o2711);
  assert.equal(mode("sticky"), 0o1777);
  assert.equal(mode("setgid"), 0o2775);
  assert.equal(mode("setgid/child"), 0o755);
  assert.equal(mode("none"), 0o000);
  assert.equal(mode("go-mode"), 0o644);
  assert.equal(mode("fifo"), 0o4777);
});

eachResolver(
  "owners and modes stay exact in setgid directories, in any entry order",
  async (sb, o) => {
    const d = sb.dest;
    await run(
      [
        // Content first, the directory's own (setgid) entry last: the group
        // new entries inherit changes under the writer's feet.
        file("late/first", "", 0o644),
        { ...dir("late", 0o2775), gid: 42 },
        file("late/second", "", 0o644), // created in a setgid dir: inherits 42, must be 0
        { ...file("late/third", "", 0o644), gid: 42 },
        dir("late/sub", 0o755), // inherits S_ISGID and 42: both must go
        { ...symlink("x", "late/link") },
        { ...dir("plain", 0o755), uid: 0, gid: 0 },
        { ...file("plain/f", "", 0o640), uid: 0, gid: 0 },
      ],
      d,
      o,
    );
    const st = (p: string) => {
      const s = lstat(join(d, p));
      return [s.uid, s.gid, s.mode & 0o7777];
    };
    assert.deepEqual(st("late"), [0, 42, 0o2775]);
    assert.deepEqual(st("late/first"), [0, 0, 0o644]);
    assert.deepEqual(st("late/second"), [0, 0, 0o644]);
    assert.deepEqual(st("late/third"), [0, 42, 0o644]);
    assert.deepEqual(st("late/sub"), [0, 0, 0o755]);
    assert.deepEqual(st("late/link").slice(0, 2), [0, 0]);
    assert.deepEqual(st("plain/f"), [0, 0, 0o640]);
  },
);

/** A default ACL u::rw-,g::r--,o::--- in the kernel's xattr format. */
function defaultAcl(): Uint8Array {
  const b = new DataView(new ArrayBuffer(4 + 3 * 8));
  b.setUint32(0, 2, true); // version
  const entries: [number, number][] = [[0x01, 6], [0x04, 4], [0x20, 0]];
  entries.forEach(([tag, perm], i) => {
    b.setUint16(4 + i * 8, tag, true);
    b.setUint16(6 + i * 8, perm, true);
    b.setUint32(8 + i * 8, 0xffffffff, true);
  });
  return new Uint8Array(b.buffer);
}

eachResolver("modes stay exact under a directory's default ACL", async (sb, o) => {
  const d = join(sb.dest, "acl");
  Deno.mkdirSync(d);
  try {
    libc.lsetxattr(d, "system.posix_acl_default", defaultAcl());
  } catch {
    return; // no ACLs on this filesystem: nothing to pin
  }
  await run([file("acl/f", "", 0o644), dir("acl/d", 0o755)], sb.dest, o);
  assert.equal(lstat(join(d, "f")).mode & 0o7777, 0o644);
  assert.equal(lstat(join(d, "d")).mode & 0o7777, 0o755);
});

eachResolver("xattrs are applied after the chown (capabilities survive)", async (sb, o) => {
  const cap = new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const x = (m: Record<string, Uint8Array>) => new Map(Object.entries(m));
  await run(
    [
      {
        ...file("ping", "elf", 0o755),
        uid: 1000,
        xattrs: x({ "security.capability": cap, "user.bin": new Uint8Array([0, 255]) }),
      },
      { ...dir("d"), xattrs: x({ "user.dir": new Uint8Array([1]) }) },
      { ...symlink("t", "l"), xattrs: x({ "trusted.l": new Uint8Array([2]) }) },
    ],
    sb.dest,
    o,
  );
  const d = sb.dest;
  assert.deepEqual(libc.lgetxattr(join(d, "ping"), "security.capability"), cap);
  assert.deepEqual(libc.lgetxattr(join(d, "ping"), "user.bin"), new Uint8Array([0, 255]));
  assert.deepEqual(libc.lgetxattr(join(d, "d"), "user.dir"), new Uint8Array([1]));
  assert.deepEqual(libc.lgetxattr(join(d, "l"), "trusted.l"), new Uint8Array([2]));
});

eachResolver("times: ns, atime never before mtime, pre-1970 clamped, dirs last", async (sb, o) => {
  const d = sb.dest;
  await run(
    [
      { ...dir("dir"), mtimeSec: 1000, pax: { mtime: "1000.5" } },
      { ...file("dir/ns", "x"), pax: { mtime: "1600000000.123456789", atime: "1700000000.5" } },
      { ...file("dir/early-atime"), mtimeSec: 2000, pax: { mtime: "2000", atime: "1000" } },
      { ...file("dir/no-atime"), mtimeSec: 3000 },
      { ...file("old"), pax: { mtime: "-100.25" } },
      { ...symlink("t", "oldlink"), pax: { mtime: "-100" } },
      { ...symlink("t", "link"), mtimeSec: 4000 },
    ],
    d,
    o,
  );
  const t = (p: string) => {
    const st = lstat(join(d, p));
    return [st.atimeSec, st.atimeNsec, st.mtimeSec, st.mtimeNsec];
  };
  assert.deepEqual(t("dir/ns"), [1700000000, 500000000, 1600000000, 123456789]);
  assert.deepEqual(t("dir/early-atime"), [2000, 0, 2000, 0]);
  assert.deepEqual(t("dir/no-atime"), [3000, 0, 3000, 0]);
  assert.deepEqual(t("dir"), [1000, 500000000, 1000, 500000000]);
  assert.deepEqual(t("old"), [0, 0, 0, 0]);
  assert.deepEqual(t("link"), [4000, 0, 4000, 0]);
  assert.equal(t("oldlink")[2], -100);
});

eachResolver("a file named ..gitme applies fine, and raw byte names survive", async (sb, o) => {
  const raw = new Uint8Array([0x62, 0xff, 0xfe, 0x0a]);
  await run([file("..gitme", "git"), { ...file("x"), name: raw }], sb.dest, o);
  assert.equal(Deno.readTextFileSync(join(sb.dest, "..gitme")), "git");
  const names = libc.readdir(libc.openat(AT.FDCWD, sb.dest, 0)).map((e) => e.name);
  assert.ok(names.some((n) => n.length === 4 && n.every((b, i) => b === raw[i])));
});

eachResolver("any chunking gives the same tree; progress reaches the end", async (sb, o) => {
  const specs = [
    dir("a"),
    file("a/big", "z".repeat(5000)),
    file("a/small", "s"),
    link("a/big", "h"),
  ];
  const tar = tarOf(specs);
  const seen: number[] = [];
  await untar(streamOf(tar, 1), join(sb.dest, "one"), {
    ...o,
    onProgress: (bytes, entries) => seen.push(bytes, entries),
  });
  await untar(streamOf(tar, 777, false), join(sb.dest, "many"), { ...o, sync: true });
  assert.equal(seen.at(-2), tar.length);
  assert.equal(seen.at(-1), 4);
  for (const p of ["a/big", "a/small", "h"]) {
    assert.equal(
      Deno.readTextFileSync(join(sb.dest, "one", p)),
      Deno.readTextFileSync(join(sb.dest, "many", p)),
    );
  }
  assert.equal(Deno.readTextFileSync(join(sb.dest, "one", "h")).length, 5000);
});

eachResolver("errors name the operation, destination, entry and call", async (sb, o) => {
  Deno.writeTextFileSync(join(sb.dest, "file"), "x");
  const err = await run([file("ok"), file("file/child")], sb.dest, o).then(() => null, (e) => e);
  assert.ok(err instanceof ExtractError);
  assert.equal(err.entry, "file/child");
  assert.equal(err.path, "file/child");
  assert.match(err.message, /^untar into \/.*\/dest: entry "file\/child": .*not a directory/);
  const bad = concat([tarOf([{ ...file("weird"), type: 0x5a }])]);
  const err2 = await untar(streamOf(bad), sb.dest, o).then(() => null, (e) => e);
  assert.ok(err2 instanceof ExtractError);
  assert.ok(err2.cause instanceof InvalidArchiveError);
  assert.match(err2.message, /unhandled tar header type 90/);
});

eachResolver("a failing source stream is an ExtractError carrying its error", async (sb, o) => {
  const tar = tarOf([file("a", "x".repeat(2000)), file("b", "y")]);
  const boom = new Error("network went away");
  let sent = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent) c.error(boom);
      else c.enqueue(tar.slice(0, 1024));
      sent = true;
    },
  });
  const err = await untar(stream, sb.dest, o).then(() => null, (e) => e);
  assert.ok(err instanceof ExtractError);
  assert.equal(err.cause, boom);
  assert.equal(err.entry, "a");
  // The errored stream again: still an ExtractError, never a silent success.
  const again = await untar(stream, sb.dest, o).then(() => null, (e) => e);
  assert.ok(again instanceof ExtractError);
});

test("untar refuses a destination that is a file", async () => {
  const sb = await makeSandbox();
  try {
    const f = join(sb.dest, "f");
    Deno.writeTextFileSync(f, "");
    const err = await untar(streamOf(tarOf([file("x")])), f).then(() => null, (e) => e);
    assert.ok(err instanceof ExtractError);
    assert.match(err.message, /not a directory/);
  } finally {
    await sb.cleanup();
  }
});
