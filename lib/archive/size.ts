/**
 * Size accounting of layers, as containers/storage computes it:
 * {@linkcode directorySize} (the on-disk size of a diff directory, what aufs
 * `DiffSize` returns) and {@linkcode changesSize} (the size of a list of
 * changes, what the naive `DiffSize` returns).
 *
 * @module
 */

import {
  AT,
  DT,
  Errno,
  ErrnoError,
  type Libc,
  O,
  S,
  type Stat,
  systemLibc,
} from "../../ffi/libc.ts";
import type { Change } from "../driver.ts";
import { pathToBytes } from "./path_bytes.ts";

const SLASH = 0x2f;
const encoder = new TextEncoder();

/** Inodes already counted, per device. */
class InodeSet {
  #byDev = new Map<number, Set<number>>();

  /** Adds the inode of `st`; false when it was already there. */
  add(st: Stat): boolean {
    const dev = st.devMajor * 0x100000 + st.devMinor;
    let set = this.#byDev.get(dev);
    if (!set) this.#byDev.set(dev, set = new Set());
    if (set.has(st.ino)) return false;
    set.add(st.ino);
    return true;
  }
}

function isGone(e: unknown): boolean {
  return e instanceof ErrnoError && e.errno === Errno.ENOENT;
}

/**
 * Total size in bytes of everything under `dir` that is not a directory:
 * regular files, symlinks (their own size), devices; each inode counted once
 * (hard links), keyed by device and inode number. Symlinks are not followed.
 *
 * A missing or unreadable `dir` is an error; entries that vanish during the
 * walk are ignored (containers/storage 97d7a932); any other error is thrown.
 *
 * (Go keyed the inode set by inode number only; the device is added here so
 * that trees spanning mounts are not under-counted.)
 *
 * @example
 * ```ts
 * import { directorySize } from "./size.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "hello!");
 * await Deno.link(`${dir}/a`, `${dir}/b`);
 * console.log(directorySize(dir)); // 6
 * ```
 */
export function directorySize(dir: string, libc: Libc = systemLibc()): number {
  const seen = new InodeSet();
  const root = encoder.encode(dir);
  const rootSt = libc.fstatat(AT.FDCWD, root, AT.SYMLINK_NOFOLLOW);
  if ((rootSt.mode & S.IFMT) !== S.IFDIR) {
    return rootSt.size > 0 && seen.add(rootSt) ? rootSt.size : 0;
  }
  let total = 0;
  const walk = (fd: number) => {
    for (const e of libc.readdir(fd)) {
      let st: Stat | null = null;
      if (e.type !== DT.DIR) {
        try {
          st = libc.fstatat(fd, e.name, AT.SYMLINK_NOFOLLOW);
        } catch (err) {
          if (isGone(err)) continue;
          throw err;
        }
        if ((st.mode & S.IFMT) !== S.IFDIR) {
          if (st.size > 0 && seen.add(st)) total += st.size;
          continue;
        }
      }
      let sub: number;
      try {
        sub = libc.openat(fd, e.name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
      } catch (err) {
        if (isGone(err)) continue;
        if (
          err instanceof ErrnoError && (err.errno === Errno.ENOTDIR || err.errno === Errno.ELOOP)
        ) {
          // Replaced by a non-directory since the listing: count it as what it is now.
          const now = (() => {
            try {
              return libc.fstatat(fd, e.name, AT.SYMLINK_NOFOLLOW);
            } catch (e2) {
              if (isGone(e2)) return null;
              throw e2;
            }
          })();
          if (now && (now.mode & S.IFMT) !== S.IFDIR && now.size > 0 && seen.add(now)) {
            total += now.size;
          }
          continue;
        }
        throw err;
      }
      try {
        walk(sub);
      } finally {
        libc.close(sub);
      }
    }
  };
  const fd = libc.openat(AT.FDCWD, root, O.RDONLY | O.DIRECTORY);
  try {
    walk(fd);
  } finally {
    libc.close(fd);
  }
  return total;
}

/**
 * The size of the `add` and `modify` changes, read from `dir` (the layer's
 * view): each changed non-directory's size, a multiply-linked inode counted
 * once (keyed by device and inode number); deletes count nothing. A changed
 * path that no longer exists is skipped (Go logs it); other errors are
 * thrown.
 *
 * @example
 * ```ts
 * import { changesSize } from "./size.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "abc");
 * await Deno.writeTextFile(`${dir}/b`, "def");
 * console.log(changesSize(dir, [
 *   { path: "/a", kind: "add" },
 *   { path: "/b", kind: "modify" },
 *   { path: "/c", kind: "delete" },
 * ])); // 6
 * ```
 */
export function changesSize(dir: string, changes: Change[], libc: Libc = systemLibc()): number {
  const seen = new InodeSet();
  const root = encoder.encode(dir);
  let total = 0;
  for (const c of changes) {
    if (c.kind === "delete") continue;
    const rel = pathToBytes(c.path);
    const full = new Uint8Array(root.length + 1 + rel.length);
    full.set(root);
    full[root.length] = SLASH;
    full.set(rel, root.length + 1);
    let st: Stat;
    try {
      st = libc.fstatat(AT.FDCWD, full, AT.SYMLINK_NOFOLLOW);
    } catch (e) {
      if (isGone(e) || (e instanceof ErrnoError && e.errno === Errno.ENOTDIR)) continue;
      throw e;
    }
    if ((st.mode & S.IFMT) === S.IFDIR) continue;
    if (st.nlink > 1 && !seen.add(st)) continue;
    total += st.size;
  }
  return total;
}
