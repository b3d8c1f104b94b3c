/**
 * Filesystem magic numbers (statfs `f_type`) and their names: containers/storage's
 * table plus a few kernel filesystems useful in messages.
 *
 * @module
 */

import type { Libc } from "../ffi/libc.ts";

/**
 * Name → magic. The first 20 entries are containers/storage's table, with its names
 * (`extfs` for ext2/3/4, `unsupported` for 0); the rest only help messages.
 *
 * @example
 * ```ts
 * import { FS_MAGIC } from "./fsmagic.ts";
 * console.log(FS_MAGIC.btrfs.toString(16)); // 9123683e
 * ```
 */
export const FS_MAGIC: Readonly<Record<string, number>> = Object.freeze({
  aufs: 0x61756673,
  btrfs: 0x9123683e,
  cramfs: 0x28cd3d45,
  ecryptfs: 0x0000f15f,
  extfs: 0x0000ef53,
  f2fs: 0xf2f52010,
  gpfs: 0x47504653,
  jffs2: 0x000072b6,
  jfs: 0x3153464a,
  nfs: 0x00006969,
  overlayfs: 0x794c7630,
  ramfs: 0x858458f6,
  reiserfs: 0x52654973,
  smb: 0x0000517b,
  squashfs: 0x73717368,
  tmpfs: 0x01021994,
  unsupported: 0x00000000,
  vxfs: 0xa501fcf5,
  xfs: 0x58465342,
  zfs: 0x2fc12fc1,
  // Not in the seed's table.
  proc: 0x00009fa0,
  sysfs: 0x62656572,
  devpts: 0x00001cd1,
  cgroup2: 0x63677270,
  fuse: 0x65735546,
  nsfs: 0x6e736673,
});

const BY_MAGIC = new Map<number, string>(
  Object.entries(FS_MAGIC).map(([name, magic]) => [magic >>> 0, name]),
);

/**
 * The name of `magic`, compared as an unsigned 32-bit value (btrfs's magic
 * does not fit a signed one), or `undefined` when it is not in the table.
 *
 * @example
 * ```ts
 * import { fsName } from "./fsmagic.ts";
 * console.log(fsName(0x9123683e | 0)); // btrfs (a signed input works too)
 * console.log(fsName(0x12345678)); // undefined
 * ```
 */
export function fsName(magic: number): string | undefined {
  return BY_MAGIC.get(magic >>> 0);
}

/**
 * The name of the filesystem `path` lives on (statfs), or `"<unknown>"` when
 * its magic is not in the table. A statfs failure is thrown.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../ffi/libc.ts";
 * import { backingFsName } from "./fsmagic.ts";
 * console.log(backingFsName(systemLibc(), "/dev/shm")); // tmpfs
 * ```
 */
export function backingFsName(libc: Libc, path: string): string {
  return fsName(libc.statfs(path).type) ?? "<unknown>";
}
