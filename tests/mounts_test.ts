import assert from "node:assert/strict";
import { join } from "node:path";
import { Errno, ErrnoError, MS, systemLibc } from "../ffi/libc.ts";
import {
  isMountpoint,
  makePrivate,
  mountpointsUnder,
  parseMountinfo,
  readMountinfo,
  recursiveUnmount,
  unmountRetry,
} from "../lib/mounts.ts";
import { bind, spyLibc, unmountAll } from "./support/libc_spy.ts";

async function inTemp(fn: (dir: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const SAMPLE = [
  "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
  "22 27 0:21 / /proc rw,relatime - proc proc rw",
  "90 27 0:40 /a\\040b /my\\040dir\\011tab\\134slash rw shared:7 master:3 propagate_from:2 - " +
  "tmpfs my\\040src rw,size=1k",
  "",
].join("\n");

Deno.test("parseMountinfo reads every field, all optional fields and none", () => {
  const [a, b] = parseMountinfo(SAMPLE);
  assert.deepEqual(a, {
    id: 36,
    parent: 35,
    major: 98,
    minor: 0,
    root: "/mnt1",
    mountPoint: "/mnt2",
    options: "rw,noatime",
    optional: ["master:1"],
    fsType: "ext3",
    source: "/dev/root",
    superOptions: "rw,errors=continue",
  });
  assert.deepEqual(b.optional, []);
  assert.equal(b.fsType, "proc");
});

Deno.test("parseMountinfo decodes octal escapes (\\040 space, \\011 tab, \\134 backslash)", () => {
  const c = parseMountinfo(SAMPLE)[2];
  assert.equal(c.mountPoint, "/my dir\ttab\\slash");
  assert.equal(c.root, "/a b");
  assert.equal(c.source, "my src");
  assert.deepEqual(c.optional, ["shared:7", "master:3", "propagate_from:2"]);
  // A backslash not followed by three octal digits stays as it is.
  assert.equal(parseMountinfo("1 2 0:1 / /x\\9 rw - t s o")[0].mountPoint, "/x\\9");
});

Deno.test("parseMountinfo rejects malformed lines, quoting them", () => {
  assert.throws(() => parseMountinfo("1 2 0:1 / /x rw"), /"1 2 0:1 \/ \/x rw"/);
  assert.throws(() => parseMountinfo("1 2 0:1 / /x rw - tmpfs"), /fewer than 3 fields after/);
  assert.throws(() => parseMountinfo("x 2 0:1 / /x rw - a b c"), /mount id/);
  assert.throws(() => parseMountinfo("1 2 01 / /x rw - a b c"), /major:minor/);
});

Deno.test("readMountinfo reads <procRoot>/self/mountinfo", () =>
  inTemp((dir) => {
    Deno.mkdirSync(join(dir, "self"));
    Deno.writeTextFileSync(join(dir, "self", "mountinfo"), SAMPLE);
    assert.deepEqual(readMountinfo(dir).map((m) => m.mountPoint), [
      "/mnt2",
      "/proc",
      "/my dir\ttab\\slash",
    ]);
    assert.throws(() => readMountinfo(join(dir, "none")), /self\/mountinfo/);
    assert.ok(readMountinfo().some((m) => m.mountPoint === "/"));
  }));

Deno.test("isMountpoint: exact match of the canonical path, spaces included", () =>
  inTemp((dir) => {
    const src = join(dir, "src"), mnt = join(dir, "my mnt"), link = join(dir, "link");
    Deno.mkdirSync(src);
    Deno.mkdirSync(join(mnt, "sub"), { recursive: true });
    Deno.symlinkSync(mnt, link);
    try {
      assert.equal(isMountpoint(mnt), false);
      bind(src, mnt);
      assert.equal(isMountpoint(mnt), true, "\\040 in mountinfo must match the real path");
      assert.equal(isMountpoint(link), true, "symlinks are resolved");
      assert.equal(isMountpoint(mnt + "/"), true);
      assert.equal(isMountpoint(dir), false);
      assert.equal(isMountpoint(join(dir, "missing")), false);
    } finally {
      unmountAll(mnt);
    }
  }));

function propagation(path: string): string[] | undefined {
  const real = Deno.realPathSync(path);
  return readMountinfo().findLast((m) => m.mountPoint === real)?.optional;
}

Deno.test("makePrivate bind-mounts a plain directory onto itself and makes it private", () =>
  inTemp((dir) => {
    const root = join(dir, "root");
    Deno.mkdirSync(root);
    Deno.writeTextFileSync(join(root, "f"), "x");
    try {
      makePrivate(systemLibc(), root);
      assert.equal(isMountpoint(root), true);
      assert.deepEqual(propagation(root), []);
      assert.equal(Deno.readTextFileSync(join(root, "f")), "x", "the same directory shows through");
    } finally {
      unmountAll(root);
    }
  }));

Deno.test("makePrivate turns a shared mount private without stacking another bind", () =>
  inTemp((dir) => {
    const root = join(dir, "root");
    Deno.mkdirSync(root);
    const libc = systemLibc();
    try {
      bind(root, root);
      libc.mount("", root, "", MS.SHARED, "");
      assert.ok(propagation(root)?.some((f) => f.startsWith("shared:")), "set up as shared");
      makePrivate(libc, root);
      makePrivate(libc, root); // twice, as a second Init does
      const real = Deno.realPathSync(root);
      assert.equal(readMountinfo().filter((m) => m.mountPoint === real).length, 1);
      assert.deepEqual(propagation(root), [], "no shared: field left");
    } finally {
      unmountAll(root);
    }
  }));

Deno.test("unmountRetry throws EINVAL for a non-mount at once", () =>
  inTemp(async (dir) => {
    const { libc, calls } = spyLibc();
    await assert.rejects(unmountRetry(libc, dir), (e: unknown) => {
      assert.ok(e instanceof ErrnoError);
      assert.equal(e.errno, Errno.EINVAL);
      assert.match(e.message, /umount2/);
      return true;
    });
    assert.equal(calls.length, 1, "EINVAL is not retried");
  }));

Deno.test("unmountRetry retries EBUSY and throws the last error when retries run out", async () => {
  let busy = 2;
  const flaky = spyLibc({
    umount2: (p) => {
      if (busy-- > 0) throw new ErrnoError(Errno.EBUSY, "umount2", p);
    },
  });
  await unmountRetry(flaky.libc, "/x", { delayMs: 1 });
  assert.equal(flaky.calls.length, 3);

  const stuck = spyLibc({
    umount2: (p) => {
      throw new ErrnoError(Errno.EBUSY, "umount2", p);
    },
  });
  await assert.rejects(
    unmountRetry(stuck.libc, "/x", { retries: 3, delayMs: 1 }),
    (e: unknown) => e instanceof ErrnoError && e.errno === Errno.EBUSY,
  );
  assert.equal(stuck.calls.length, 4, "one attempt plus three retries");

  const gone = spyLibc({ umount2: () => assert.fail("must not unmount") });
  await unmountRetry(gone.libc, "/x", { isMounted: () => false });
});

Deno.test("unmountRetry unmounts a real mount", () =>
  inTemp(async (dir) => {
    const src = join(dir, "src"), mnt = join(dir, "mnt");
    Deno.mkdirSync(src);
    Deno.mkdirSync(mnt);
    try {
      bind(src, mnt);
      await unmountRetry(systemLibc(), mnt);
      assert.equal(isMountpoint(mnt), false);
    } finally {
      unmountAll(mnt);
    }
  }));

Deno.test("recursiveUnmount goes deepest first and only below whole path components", () =>
  inTemp((dir) => {
    const src = join(dir, "src"), a = join(dir, "a"), ab = join(dir, "ab");
    for (const d of [src, a, ab]) Deno.mkdirSync(d);
    Deno.mkdirSync(join(src, "inner"));
    const inner = join(a, "inner");
    const { libc, calls } = spyLibc();
    try {
      bind(src, a);
      bind(src, inner);
      bind(src, inner); // stacked twice
      bind(src, ab); // "/…/ab" starts with "/…/a" but is not below it
      assert.deepEqual(mountpointsUnder(a), [inner, inner, a]);
      recursiveUnmount(libc, a);
      assert.deepEqual(calls.map((c) => c.args[0]), [inner, inner, a]);
      assert.equal(isMountpoint(a), false);
      assert.equal(isMountpoint(inner), false);
      assert.equal(isMountpoint(ab), true, "the sibling with a common prefix stays mounted");
      recursiveUnmount(libc, join(dir, "missing")); // nothing to do
    } finally {
      for (const p of [inner, a, ab]) unmountAll(p);
    }
  }));

Deno.test("recursiveUnmount detaches a busy mount instead of failing", () =>
  inTemp((dir) => {
    const src = join(dir, "src"), mnt = join(dir, "mnt");
    Deno.mkdirSync(src);
    Deno.mkdirSync(mnt);
    Deno.writeTextFileSync(join(src, "f"), "x");
    let f: Deno.FsFile | undefined;
    try {
      bind(src, mnt);
      f = Deno.openSync(join(mnt, "f")); // keeps the mount busy
      const { libc, calls } = spyLibc();
      recursiveUnmount(libc, mnt);
      assert.equal(isMountpoint(mnt), false);
      assert.deepEqual(calls.map((c) => c.args[1]), [0, 2], "plain umount, then MNT_DETACH");
    } finally {
      f?.close();
      unmountAll(mnt);
    }
  }));

Deno.test("recursiveUnmount reports the mounts it could not unmount", () =>
  inTemp((dir) => {
    const mnt = join(dir, "mnt");
    Deno.mkdirSync(mnt);
    try {
      bind(mnt, mnt);
      const { libc } = spyLibc({
        umount2: (p) => {
          throw new ErrnoError(Errno.EPERM, "umount2", p);
        },
      });
      assert.throws(() => recursiveUnmount(libc, dir), (e: Error) => {
        assert.match(e.message, /operation not permitted/);
        assert.ok(e.message.includes(mnt));
        return true;
      });
    } finally {
      unmountAll(mnt);
    }
  }));

Deno.test("recursiveUnmount also removes a mount hidden under a later mount on its ancestor", () =>
  inTemp((dir) => {
    const src = join(dir, "src"), top = join(dir, "top"), hidden = join(top, "deep", "mnt");
    Deno.mkdirSync(src);
    Deno.mkdirSync(hidden, { recursive: true });
    try {
      bind(src, hidden);
      bind(src, top); // covers top/deep/mnt: that path no longer reaches the first mount
      assert.deepEqual(mountpointsUnder(top), [hidden, top]);
      recursiveUnmount(systemLibc(), top);
      assert.deepEqual(mountpointsUnder(top), []);
    } finally {
      unmountAll(top);
      unmountAll(hidden);
    }
  }));

Deno.test("recursiveUnmount stops when unmounting makes no progress", () =>
  inTemp((dir) => {
    const mnt = join(dir, "mnt");
    Deno.mkdirSync(mnt);
    try {
      bind(mnt, mnt);
      const { libc, calls } = spyLibc({ umount2: () => {} }); // "succeeds" but unmounts nothing
      assert.throws(() => recursiveUnmount(libc, dir), /still mounted: .*mnt/);
      assert.equal(calls.length, 1);
    } finally {
      unmountAll(mnt);
    }
  }));
