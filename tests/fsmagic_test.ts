import assert from "node:assert/strict";
import { ErrnoError, MNT, systemLibc } from "../ffi/libc.ts";
import { backingFsName, FS_MAGIC, fsName } from "../lib/fsmagic.ts";
import { spyLibc } from "./support/libc_spy.ts";

Deno.test("the table holds the seed's magic numbers", () => {
  const seed: Record<string, number> = {
    aufs: 0x61756673,
    btrfs: 0x9123683e,
    cramfs: 0x28cd3d45,
    ecryptfs: 0xf15f,
    extfs: 0xef53,
    f2fs: 0xf2f52010,
    gpfs: 0x47504653,
    jffs2: 0x72b6,
    jfs: 0x3153464a,
    nfs: 0x6969,
    overlayfs: 0x794c7630,
    ramfs: 0x858458f6,
    reiserfs: 0x52654973,
    smb: 0x517b,
    squashfs: 0x73717368,
    tmpfs: 0x01021994,
    unsupported: 0,
    vxfs: 0xa501fcf5,
    xfs: 0x58465342,
    zfs: 0x2fc12fc1,
  };
  for (const [name, magic] of Object.entries(seed)) {
    assert.equal(FS_MAGIC[name], magic, name);
    assert.equal(fsName(magic), name);
  }
  assert.ok(Object.isFrozen(FS_MAGIC));
});

Deno.test("fsName compares as unsigned 32-bit and knows nothing else", () => {
  assert.ok((0x9123683e | 0) < 0, "the signed view is negative");
  assert.equal(fsName(0x9123683e | 0), "btrfs");
  assert.equal(fsName(0xa501fcf5 | 0), "vxfs");
  assert.equal(fsName(0x12345678), undefined);
});

Deno.test("backingFsName reads the real statfs magic", async () => {
  const dir = await Deno.makeTempDir();
  const libc = systemLibc();
  try {
    libc.mount("tmpfs", dir, "tmpfs", 0n, "size=1m");
    assert.equal(backingFsName(libc, dir), "tmpfs");
    assert.equal(backingFsName(libc, "/proc"), "proc");
  } finally {
    libc.umount2(dir, MNT.DETACH);
    await Deno.remove(dir);
  }
});

Deno.test("an unknown magic is <unknown>, a statfs failure is thrown", () => {
  const { libc } = spyLibc({
    statfs: () => ({
      type: 0xdeadbeef,
      blockSize: 0,
      blocks: 0,
      bfree: 0,
      bavail: 0,
      files: 0,
      ffree: 0,
      nameLen: 0,
    }),
  });
  assert.equal(backingFsName(libc, "/"), "<unknown>");
  assert.throws(
    () => backingFsName(systemLibc(), "/nonexistent/strata"),
    (e: unknown) => e instanceof ErrnoError && e.syscall === "statfs",
  );
});
