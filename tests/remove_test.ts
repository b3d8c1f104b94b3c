import assert from "node:assert/strict";
import { join } from "node:path";
import { Errno, ErrnoError, systemLibc } from "../ffi/libc.ts";
import { isMountpoint, mountpointsUnder } from "../lib/mounts.ts";
import { atomicRemove, ensureRemoveAll, sweepRemoving } from "../lib/remove.ts";
import { bind, spyLibc, unmountAll } from "./support/libc_spy.ts";

const libc = systemLibc();

async function inTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function makeTree(root: string): void {
  Deno.mkdirSync(join(root, "a", "b"), { recursive: true });
  Deno.writeTextFileSync(join(root, "a", "b", "f"), "data");
  Deno.symlinkSync("/", join(root, "a", "root-link"));
}

Deno.test("atomicRemove renames to -removing, then deletes it all", () =>
  inTemp(async (dir) => {
    const src = join(dir, "layer");
    makeTree(src);
    const { libc: spy, calls } = spyLibc({}, ["rename"]);
    await atomicRemove(spy, src);
    assert.deepEqual(calls.map((c) => c.args), [[src, src + "-removing"]]);
    assert.equal(exists(src), false);
    assert.equal(exists(src + "-removing"), false);
    assert.ok(exists("/etc"), "the symlink to / was not followed");
  }));

Deno.test("atomicRemove of a missing source still deletes a stale -removing twin", () =>
  inTemp(async (dir) => {
    const src = join(dir, "layer");
    makeTree(src + "-removing");
    await atomicRemove(libc, src);
    assert.equal(exists(src + "-removing"), false);
    await atomicRemove(libc, src); // nothing at all: fine
  }));

Deno.test("atomicRemove refuses when both names exist, naming the target (no %!s(MISSING))", () =>
  inTemp(async (dir) => {
    const src = join(dir, "layer"), target = src + "-removing";
    makeTree(src);
    Deno.mkdirSync(target); // empty: rename(2) alone would silently replace it
    await assert.rejects(atomicRemove(libc, src), (e: Error) => {
      assert.ok(e.message.startsWith(`target rename dir '${target}' exists but should not`));
      assert.ok(!e.message.includes("%!s"));
      return true;
    });
    assert.ok(exists(join(src, "a", "b", "f")) && exists(target), "both left alone");
  }));

Deno.test("atomicRemove of a live mountpoint fails to prepare and leaves the mount", () =>
  inTemp(async (dir) => {
    const src = join(dir, "src"), mnt = join(dir, "mnt");
    Deno.mkdirSync(src);
    Deno.mkdirSync(mnt);
    Deno.writeTextFileSync(join(src, "keep"), "x");
    try {
      bind(src, mnt);
      await assert.rejects(atomicRemove(libc, mnt), (e: Error) => {
        assert.match(e.message, /^error preparing atomic delete: /);
        assert.match(e.message, /busy/);
        return true;
      });
      assert.equal(isMountpoint(mnt), true);
      assert.equal(Deno.readTextFileSync(join(src, "keep")), "x");
    } finally {
      unmountAll(mnt);
    }
  }));

Deno.test("ensureRemoveAll unmounts mounts inside the directory instead of deleting through them", () =>
  inTemp(async (dir) => {
    const outside = join(dir, "outside"), victim = join(dir, "victim");
    const inner = join(victim, "deep", "mnt");
    makeTree(outside);
    Deno.mkdirSync(inner, { recursive: true });
    Deno.writeTextFileSync(join(victim, "own"), "y");
    try {
      bind(outside, inner);
      bind(outside, victim); // the directory itself mounted, over its own content
      await ensureRemoveAll(libc, victim);
      assert.equal(exists(victim), false);
      assert.deepEqual(mountpointsUnder(dir), []);
      assert.equal(
        Deno.readTextFileSync(join(outside, "a", "b", "f")),
        "data",
        "mounted data kept",
      );
    } finally {
      unmountAll(victim);
      unmountAll(inner);
    }
  }));

Deno.test("ensureRemoveAll detaches a busy mount and keeps its files", () =>
  inTemp(async (dir) => {
    const outside = join(dir, "outside"), victim = join(dir, "victim");
    const inner = join(victim, "mnt");
    makeTree(outside);
    Deno.mkdirSync(inner, { recursive: true });
    let f: Deno.FsFile | undefined;
    try {
      bind(outside, inner);
      f = Deno.openSync(join(inner, "a", "b", "f"));
      await ensureRemoveAll(libc, victim);
      assert.equal(exists(victim), false);
      assert.equal(Deno.readTextFileSync(join(outside, "a", "b", "f")), "data");
    } finally {
      f?.close();
      unmountAll(inner);
    }
  }));

Deno.test("ensureRemoveAll deletes nothing while a mount below cannot be unmounted", () =>
  inTemp(async (dir) => {
    const outside = join(dir, "outside"), victim = join(dir, "victim");
    const inner = join(victim, "mnt");
    makeTree(outside);
    Deno.mkdirSync(inner, { recursive: true });
    Deno.writeTextFileSync(join(victim, "own"), "y");
    const { libc: stuck } = spyLibc({
      umount2: (p) => {
        throw new ErrnoError(Errno.EPERM, "umount2", p);
      },
    });
    try {
      bind(outside, inner);
      await assert.rejects(ensureRemoveAll(stuck, victim), (e: Error) => {
        assert.ok(e.message.startsWith(`error while removing ${victim}: still mounted: ${inner}`));
        assert.match(e.message, /operation not permitted/);
        return true;
      });
      assert.equal(Deno.readTextFileSync(join(victim, "own")), "y");
      assert.equal(Deno.readTextFileSync(join(outside, "a", "b", "f")), "data");
    } finally {
      unmountAll(inner);
    }
  }));

Deno.test("ensureRemoveAll: missing path is success; a symlink is removed, not followed", () =>
  inTemp(async (dir) => {
    await ensureRemoveAll(libc, join(dir, "missing"));
    const target = join(dir, "target"), mnt = join(target, "mnt"), link = join(dir, "link");
    const src = join(dir, "src");
    Deno.mkdirSync(mnt, { recursive: true });
    Deno.mkdirSync(src);
    Deno.symlinkSync(target, link);
    try {
      bind(src, mnt);
      await ensureRemoveAll(libc, link);
      assert.equal(exists(link), false);
      assert.equal(isMountpoint(mnt), true, "the link's target was not unmounted");
    } finally {
      unmountAll(mnt);
    }
    const file = join(dir, "file");
    Deno.writeTextFileSync(file, "z");
    await ensureRemoveAll(libc, file);
    assert.equal(exists(file), false);
  }));

Deno.test("sweepRemoving deletes only directories named *-removing and reports failures", () =>
  inTemp(async (dir) => {
    makeTree(join(dir, "a-removing"));
    makeTree(join(dir, "b-removing"));
    Deno.writeTextFileSync(join(dir, "c-removing"), "a file"); // not a directory: left
    makeTree(join(dir, "keep"));
    Deno.symlinkSync(join(dir, "keep"), join(dir, "d-removing")); // a symlink: left
    Deno.mkdirSync(join(dir, "e-removing-not"));

    const removed = await sweepRemoving(libc, dir);
    assert.deepEqual(removed, [join(dir, "a-removing"), join(dir, "b-removing")]);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, ["c-removing", "d-removing", "e-removing-not", "keep"]);
    assert.ok(exists(join(dir, "keep", "a", "b", "f")));

    assert.deepEqual(await sweepRemoving(libc, join(dir, "missing")), []);
  }));

Deno.test("sweepRemoving goes on past a failure and hands it to onError", () =>
  inTemp(async (dir) => {
    const stuckDir = join(dir, "a-removing"), inner = join(stuckDir, "mnt");
    Deno.mkdirSync(inner, { recursive: true });
    makeTree(join(dir, "b-removing"));
    const { libc: stuck } = spyLibc({
      umount2: (p) => {
        throw new ErrnoError(Errno.EPERM, "umount2", p);
      },
    });
    const failed: string[] = [];
    try {
      bind(inner, inner);
      const removed = await sweepRemoving(stuck, dir, "/proc", (p) => failed.push(p));
      assert.deepEqual(removed, [join(dir, "b-removing")]);
      assert.deepEqual(failed, [stuckDir]);
      assert.ok(exists(inner));
    } finally {
      unmountAll(inner);
    }
  }));
