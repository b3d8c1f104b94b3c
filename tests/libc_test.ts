import assert from "node:assert/strict";
import { AT, ErrnoError, errnoOf, MNT, O, S, systemLibc } from "../ffi/libc.ts";

const libc = systemLibc();
const enc = new TextEncoder();

Deno.test("umount2 of a directory that is not a mount point throws EINVAL", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.throws(() => libc.umount2(dir, 0), (e: unknown) => {
      assert.ok(e instanceof ErrnoError);
      assert.equal(e.errno, 22);
      assert.equal(e.code, "EINVAL");
      assert.equal(e.syscall, "umount2");
      assert.equal(e.path, dir);
      assert.equal(e.message, `umount2 ${dir}: invalid argument (EINVAL)`);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rename of a missing path throws ENOENT that is also Deno.errors.NotFound", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.throws(() => libc.rename(`${dir}/missing`, `${dir}/other`), (e: unknown) => {
      assert.ok(e instanceof ErrnoError);
      assert.ok(e instanceof Deno.errors.NotFound);
      assert.equal(e.code, "ENOENT");
      assert.equal(errnoOf(e), 2);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("errno errors map to the Deno error classes", () => {
  const cases: [number, unknown][] = [
    [16, Deno.errors.Busy],
    [17, Deno.errors.AlreadyExists],
    [1, Deno.errors.PermissionDenied],
    [13, Deno.errors.PermissionDenied],
    [20, Deno.errors.NotADirectory],
    [21, Deno.errors.IsADirectory],
    [40, Deno.errors.FilesystemLoop],
    [19, Deno.errors.NotSupported],
    [38, Deno.errors.NotSupported],
    [95, Deno.errors.NotSupported],
  ];
  for (const [errno, cls] of cases) {
    const e = new ErrnoError(errno, "x", "/p");
    assert.ok(e instanceof (cls as typeof Error), `errno ${errno}`);
    assert.ok(e instanceof ErrnoError);
    assert.equal(e.errno, errno);
  }
  const plain = new ErrnoError(22, "mount", "/m");
  assert.ok(plain instanceof ErrnoError);
  assert.ok(!(plain instanceof Deno.errors.Busy));
  assert.ok(!(new Error("x") instanceof ErrnoError));
});

Deno.test("statfs reports the tmpfs magic of a fresh tmpfs mount", async () => {
  const dir = await Deno.makeTempDir();
  libc.mount("strata-test", dir, "tmpfs", 0n, "size=1m");
  try {
    const st = libc.statfs(dir);
    assert.equal(st.type, 0x01021994);
    assert.ok(st.blockSize > 0);
    assert.ok(st.blocks > 0);
    assert.ok(st.nameLen >= 255);
  } finally {
    libc.umount2(dir, MNT.DETACH);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("getpagesize agrees with getconf PAGESIZE", async () => {
  const out = await new Deno.Command("getconf", { args: ["PAGESIZE"] }).output();
  assert.equal(libc.getpagesize(), Number(new TextDecoder().decode(out.stdout).trim()));
});

Deno.test("statx gives nanosecond mtimes and lstat does not follow symlinks", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const f = `${dir}/f`;
    await Deno.writeTextFile(f, "hello");
    libc.utimensat(AT.FDCWD, f, 5, 6, 1_700_000_000, 123_456_789, 0);
    await Deno.symlink("f", `${dir}/l`);
    const st = libc.fstatat(AT.FDCWD, f, AT.SYMLINK_NOFOLLOW);
    assert.equal(st.mtimeSec, 1_700_000_000);
    assert.equal(st.mtimeNsec, 123_456_789);
    assert.equal(st.atimeSec, 5);
    assert.equal(st.size, 5);
    assert.equal(st.mode & S.IFMT, S.IFREG);
    const ls = libc.fstatat(AT.FDCWD, `${dir}/l`, AT.SYMLINK_NOFOLLOW);
    assert.equal(ls.mode & S.IFMT, S.IFLNK);
    assert.deepEqual(libc.readlinkat(AT.FDCWD, `${dir}/l`), enc.encode("f"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("raw byte paths that are not UTF-8 round-trip through readdir", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const dfd = libc.openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY);
    try {
      const name = new Uint8Array([0x61, 0xff, 0xfe, 0x62]);
      const fd = libc.openat(dfd, name, O.WRONLY | O.CREAT | O.EXCL, 0o600);
      libc.writeAll(fd, enc.encode("x"));
      libc.close(fd);
      const entries = libc.readdir(dfd);
      assert.equal(entries.length, 1);
      assert.deepEqual(entries[0].name, name);
      assert.ok(entries[0].ino > 0);
    } finally {
      libc.close(dfd);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openat2 RESOLVE_IN_ROOT keeps an absolute symlink inside the root", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/etc`);
    await Deno.writeTextFile(`${dir}/etc/passwd`, "inside");
    await Deno.symlink("/etc/passwd", `${dir}/link`);
    const root = libc.openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY);
    try {
      const fd = libc.openat2(root, "link", O.RDONLY, 0, 0x10n);
      const buf = new Uint8Array(64);
      const n = libc.read(fd, buf);
      libc.close(fd);
      assert.equal(new TextDecoder().decode(buf.subarray(0, n)), "inside");
    } finally {
      libc.close(root);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("xattrs set and read back as bytes; a missing one is null", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const f = `${dir}/f`;
    await Deno.writeTextFile(f, "");
    const value = new Uint8Array([0, 1, 2, 255]);
    libc.lsetxattr(f, "user.bin", value);
    assert.deepEqual(libc.lgetxattr(f, "user.bin"), value);
    assert.equal(libc.lgetxattr(f, "user.none"), null);
    assert.deepEqual(libc.llistxattr(f), ["user.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fchown and futimens act on an open file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fd = libc.openat(AT.FDCWD, `${dir}/f`, O.WRONLY | O.CREAT | O.EXCL, 0o600);
    try {
      libc.fchown!(fd, 1234, 5678);
      libc.futimens!(fd, 10, 20, 1_600_000_000, 999_999_999);
    } finally {
      libc.close(fd);
    }
    const st = libc.fstatat(AT.FDCWD, `${dir}/f`, AT.SYMLINK_NOFOLLOW);
    assert.equal(st.uid, 1234);
    assert.equal(st.gid, 5678);
    assert.equal(st.mtimeSec, 1_600_000_000);
    assert.equal(st.mtimeNsec, 999_999_999);
    assert.equal(st.atimeSec, 10);
    assert.equal(st.atimeNsec, 20);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
