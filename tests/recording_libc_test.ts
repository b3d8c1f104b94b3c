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

    libc.mount("none", t, "aufs", MS.REMOUNT, `append:${tx}=ro+wh`);
    assert.deepEqual(libc.fakeMount(t)?.branches, [a, b, tx]);

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
      (e) => e instanceof ErrnoError && e.errno === Errno.EINVAL, // aufs: "lookup failed"
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

/** The errno `fn` throws, or "ok". */
function outcome(fn: () => void): number | "ok" {
  try {
    fn();
    return "ok";
  } catch (e) {
    if (e instanceof ErrnoError) return e.errno;
    throw e;
  }
}

Deno.test("double: aufs mount data is parsed strictly; what aufs 6.1 refuses is refused", async () => {
  await withTemp((dir) => {
    const libc = new RecordingLibc({ pageSize: 4096 });
    const [a, b, c, t] = ["a", "b", "c", "t"].map((n) => join(dir, n));
    for (const p of [a, b, c, t]) Deno.mkdirSync(p);
    const mountData = (data: string) =>
      outcome(() => {
        libc.mount("none", t, "aufs", 0n, data);
        libc.umount2(t, 0);
      });
    const x = "xino=/dev/shm/aufs.xino";
    assert.equal(mountData(`br:${a}=rw:${b}=ro+wh:${c}=rr,dio,${x},dirperm1`), "ok");
    assert.equal(mountData(`br=${a}=rw:${b}=ro,${x}`), "ok");
    assert.equal(mountData(`br:${a}=rw,append:${b}=ro+wh`), "ok");
    assert.equal(mountData(`br:${a}=rw:${b}=bogus`), Errno.EINVAL); // aufs itself warns and takes ro
    assert.equal(mountData(`br:${a}=rw,frobnicate`), Errno.EINVAL);
    assert.equal(mountData(`br:${a}=rw,context="system_u:object_r:x:s0"`), Errno.EINVAL);
    assert.equal(mountData(`br:${a}=rw:${a}=ro`), Errno.EINVAL); // duplicated
    assert.equal(mountData(`br:${a}=rw:${join(dir, "nope")}=ro`), Errno.EINVAL);
    assert.equal(mountData(`br:${a}=rw,xino=/nonexistent/x`), Errno.ENOENT);
    assert.equal(mountData(`dio,${x}`), Errno.EINVAL); // no branch
    assert.deepEqual(libc.fakeTargets(), []);

    const selinux = new RecordingLibc({ selinux: true });
    selinux.mount("none", t, "aufs", 0n, `br:${a}=rw,context="system_u:object_r:x:s0:c1,c2"`);
    selinux.umount2(t, 0);
  });
});

Deno.test("double: an aufs remount inserts br: at the front, appends append:, removes del:, skips repeats", async () => {
  await withTemp((dir) => {
    const libc = new RecordingLibc({ branchMax: 4 });
    const [a, b, c, d, e, t] = ["a", "b", "c", "d", "e", "t"].map((n) => join(dir, n));
    for (const p of [a, b, c, d, e, t]) Deno.mkdirSync(p);
    libc.mount("none", t, "aufs", 0n, `br:${a}=rw`);
    libc.mount("none", t, "aufs", MS.REMOUNT, `append:${b}=ro+wh,append:${c}=ro+wh`);
    assert.deepEqual(libc.fakeMount(t)?.branches, [a, b, c]);
    libc.mount("none", t, "aufs", MS.REMOUNT, `br:${d}=ro`); // not an append: inserted at 0
    assert.deepEqual(libc.fakeMount(t)?.branches, [d, a, b, c]);
    assert.equal(
      outcome(() => libc.mount("none", t, "aufs", MS.REMOUNT, `append:${e}=ro+wh`)),
      Errno.ENOSPC, // beyond the branch maximum
    );
    libc.mount("none", t, "aufs", MS.REMOUNT, `del:${d}`);
    assert.deepEqual(libc.fakeMount(t)?.branches, [a, b, c]);
    libc.mount("none", t, "aufs", MS.REMOUNT, `del:${e}`); // not a branch: ignored
    assert.deepEqual(libc.fakeMount(t)?.branches, [a, b, c]);
    libc.mount("none", t, "aufs", MS.REMOUNT, `append:${a}=ro+wh`); // has it: skipped
    assert.deepEqual(libc.fakeMount(t)?.branches, [a, b, c]);
    libc.umount2(t, 0);
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
