import assert from "node:assert/strict";
import { join } from "node:path";
import { AT, Errno, ErrnoError, MS } from "../ffi/libc.ts";
import { AUFS_MAGIC, RecordingLibc } from "./support/recording_libc.ts";

async function withTemp(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-double-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("double: a fake aufs mount makes statfs of the target and below report aufs until umount2", async () => {
  await withTemp((dir) => {
    const libc = new RecordingLibc();
    const [a, b, t, tx] = ["a", "b", "t", "tx"].map((n) => join(dir, n));
    for (const p of [a, b, t, tx]) Deno.mkdirSync(p);
    Deno.mkdirSync(join(t, "sub"));
    const before = libc.statfs(t).type;
    assert.notEqual(before, AUFS_MAGIC);

    libc.mount("none", t, "aufs", 0n, `br:${a}=rw:${b}=ro+wh,dio`);
    assert.equal(libc.statfs(t).type, AUFS_MAGIC);
    assert.equal(libc.statfs(join(t, "sub")).type, AUFS_MAGIC);
    assert.equal(libc.statfs(dir).type, before);
    assert.equal(libc.statfs(tx).type, before); // a sibling sharing the prefix is not inside

    libc.mount("none", t, "aufs", MS.REMOUNT, `append:${a}=ro+wh`);
    assert.deepEqual(libc.fakeMount(t)?.branches, [a, b, a]);

    libc.umount2(t, 0);
    assert.equal(libc.statfs(t).type, before);
    assert.deepEqual(libc.fakeTargets(), []);
  });
});

Deno.test("double: fake mounts check their branches, target and page size like the kernel would", async () => {
  await withTemp((dir) => {
    const libc = new RecordingLibc({ pageSize: 4096 });
    const t = join(dir, "t");
    Deno.mkdirSync(t);
    assert.throws(
      () => libc.mount("none", t, "aufs", 0n, `br:${join(dir, "missing")}=rw`),
      (e) => e instanceof ErrnoError && e.errno === Errno.ENOENT,
    );
    assert.throws(
      () => libc.mount("none", join(dir, "nope"), "aufs", 0n, `br:${t}=rw`),
      (e) => e instanceof ErrnoError && e.errno === Errno.ENOENT,
    );
    assert.throws(
      () => libc.mount("none", t, "aufs", MS.REMOUNT, `append:${t}=ro+wh`),
      (e) => e instanceof ErrnoError && e.errno === Errno.EINVAL,
    );
    assert.throws(
      () => libc.mount("none", t, "aufs", 0n, `br:${t}=rw,` + "x".repeat(4096)),
      (e) => e instanceof ErrnoError && e.errno === Errno.EINVAL,
    );
    assert.deepEqual(libc.fakeTargets(), []);
    assert.equal(libc.callsOf("mount").length, 4);
    assert.ok(libc.callsOf("mount").every((c) => c.error instanceof ErrnoError));
  });
});

Deno.test("double: a renamed fake mountpoint is busy", async () => {
  await withTemp((dir) => {
    const libc = new RecordingLibc();
    const t = join(dir, "t");
    Deno.mkdirSync(t);
    libc.mount("none", t, "aufs", 0n, `br:${t}=rw`);
    assert.throws(
      () => libc.rename(t, t + "-removing"),
      (e) => e instanceof ErrnoError && e.errno === Errno.EBUSY,
    );
    libc.umount2(t, 0);
    libc.rename(t, t + "-removing");
  });
});

Deno.test("double: scripted failures apply to matching calls, the given number of times", async () => {
  await withTemp((dir) => {
    const libc = new RecordingLibc()
      .fail("mkdirat", Errno.EBUSY, { times: 2, when: (_fd, p) => String(p).endsWith("/x") });
    const x = join(dir, "x");
    for (let i = 0; i < 2; i++) {
      assert.throws(() => libc.mkdirat(AT.FDCWD, x, 0o755), (e) => {
        const err = e as ErrnoError;
        return err.errno === Errno.EBUSY && err.syscall === "mkdirat" && err.path === x;
      });
    }
    libc.mkdirat(AT.FDCWD, join(dir, "y"), 0o755); // other paths are not scripted
    libc.mkdirat(AT.FDCWD, x, 0o755); // the rule is used up: the real call runs
    assert.ok(Deno.statSync(x).isDirectory);
    const calls = libc.callsOf("mkdirat");
    assert.deepEqual(calls.map((c) => c.faked), [true, true, false, false]);
  });
});

Deno.test("double: respond replaces a call's result; everything else reaches the real libc", async () => {
  await withTemp((dir) => {
    const libc = new RecordingLibc({ pageSize: 65536 }).respond("statfs", () => ({
      type: 0x9123683e,
      blockSize: 0,
      blocks: 0,
      bfree: 0,
      bavail: 0,
      files: 0,
      ffree: 0,
      nameLen: 0,
    }), { times: 1 });
    assert.equal(libc.statfs(dir).type, 0x9123683e);
    assert.notEqual(libc.statfs(dir).type, 0x9123683e);
    assert.equal(libc.getpagesize(), 65536);
    const st = libc.fstatat(AT.FDCWD, dir, 0);
    assert.equal(st.ino, Deno.statSync(dir).ino);
    assert.deepEqual(libc.calls.map((c) => c.name), ["statfs", "statfs", "getpagesize", "fstatat"]);
  });
});
