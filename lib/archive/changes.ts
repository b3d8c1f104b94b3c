/**
 * Change detection between a layer and its parents:
 *
 * - {@linkcode layerChanges} reads a layer's own diff directory (its rw
 *   branch) against the diff directories below it, the way containers/storage
 *   1.43's `archive.Changes` (aufs format) and `archive.OverlayChanges`
 *   (overlay format) do, without their bugs (see the function);
 * - {@linkcode changesDirs} compares two complete trees, like `ChangesDirs`.
 *
 * Paths are handled as bytes throughout; a {@linkcode Change}'s `path` is made
 * with `pathFromBytes` (invalid UTF-8 bytes escaped as lone surrogates, so
 * `pathToBytes` gives the exact name back). Results are sorted by path bytes,
 * then kind (`add` < `modify` < `delete`, the order of Go's letters A, C, D).
 *
 * @module
 */

import { compareBytes, concatBytes, joinBytes, startsWithBytes } from "./bytes.ts";
import { AT, Errno, ErrnoError, type Libc, O, S, type Stat, systemLibc } from "../../ffi/libc.ts";
import type { Change } from "../driver.ts";
import { pathFromBytes, pathToBytes } from "./path_bytes.ts";
import {
  OVERLAY_OPAQUE_XATTR,
  WHITEOUT_META_PREFIX_BYTES,
  WHITEOUT_OPAQUE_BYTES,
  WHITEOUT_PREFIX_BYTES,
  type WhiteoutFormat,
} from "./whiteouts.ts";

const SLASH = 0x2f;
const EMPTY: Uint8Array = new Uint8Array(0);
const encoder = new TextEncoder();

interface RawChange {
  path: Uint8Array;
  kind: Change["kind"];
}

const KIND_ORDER: Record<Change["kind"], number> = { add: 0, modify: 1, delete: 2 };

function finish(raw: RawChange[]): Change[] {
  raw.sort((a, b) => compareBytes(a.path, b.path) || KIND_ORDER[a.kind] - KIND_ORDER[b.kind]);
  return raw.map((c) => ({ path: pathFromBytes(c.path), kind: c.kind }));
}

/**
 * Sort changes in place by path bytes, then kind (`add`, `modify`,
 * `delete`): the order every function here returns.
 *
 * @example
 * ```ts
 * import { sortChanges } from "./changes.ts";
 * const c = sortChanges([{ path: "/b", kind: "add" }, { path: "/a", kind: "delete" }]);
 * console.log(c.map((x) => x.path)); // [ "/a", "/b" ]
 * ```
 */
export function sortChanges(changes: Change[]): Change[] {
  const keyed = changes.map((c) => ({ c, k: pathToBytes(c.path) }));
  keyed.sort((x, y) => compareBytes(x.k, y.k) || KIND_ORDER[x.c.kind] - KIND_ORDER[y.c.kind]);
  for (let i = 0; i < keyed.length; i++) changes[i] = keyed[i].c;
  return changes;
}

const SLASH_BYTES = new Uint8Array([SLASH]);

/** `/` + relative path: the form of a change path. */
function absPath(rel: Uint8Array): Uint8Array {
  return concatBytes(SLASH_BYTES, rel);
}

function isNotFound(e: unknown): boolean {
  return e instanceof ErrnoError && (e.errno === Errno.ENOENT || e.errno === Errno.ENOTDIR);
}

/** A descriptor-relative call's error, re-made with the full path. */
function atPath(e: unknown, path: Uint8Array): unknown {
  if (!(e instanceof ErrnoError)) return e;
  return new ErrnoError(e.errno, e.syscall, pathFromBytes(path), { cause: e });
}

function lstatOrNull(libc: Libc, dirFd: number, path: Uint8Array): Stat | null {
  try {
    return libc.fstatat(dirFd, path, AT.SYMLINK_NOFOLLOW);
  } catch (e) {
    if (isNotFound(e)) return null;
    throw e;
  }
}

const isDir = (st: Stat) => (st.mode & S.IFMT) === S.IFDIR;
const isWhiteoutDevice = (st: Stat) =>
  (st.mode & S.IFMT) === S.IFCHR && st.rdevMajor === 0 && st.rdevMinor === 0;

/** Go's sameFsTime: equal, or same second with no sub-second part on one side. */
function sameFsTime(a: Stat, b: Stat): boolean {
  return a.mtimeSec === b.mtimeSec &&
    (a.mtimeNsec === b.mtimeNsec || a.mtimeNsec === 0 || b.mtimeNsec === 0);
}

// ---------------------------------------------------------------------------
// layerChanges

/** What the lower layers hold at one directory of the rw walk. */
interface LowerView {
  /** Per layer: whether this directory is a real directory there, reached through real directories. */
  present: boolean[];
  /** How many layers (nearest first) can show entries below this directory. */
  limit: number;
}

interface RwFrame {
  fd: number;
  /** Path relative to the rw root ("" for the root). */
  rel: Uint8Array;
  names: Uint8Array[];
  next: number;
  view: LowerView;
}

/**
 * Options of {@linkcode layerChanges}.
 *
 * @example
 * ```ts
 * import { layerChanges, type LayerChangesOptions } from "../../mod.ts";
 * const opts: LayerChangesOptions = { whiteoutFormat: "overlay" };
 * console.log(layerChanges(["/r/diff/base"], "/r/diff/app", opts));
 * ```
 */
export interface LayerChangesOptions {
  /** How the diff directories store deletions (default "aufs"). */
  whiteoutFormat?: WhiteoutFormat;
  /** System calls (default: the real libc). */
  libc?: Libc;
}

/**
 * The changes a layer's diff directory `rwDir` makes over the diff
 * directories below it, `lowerDirs` (nearest parent first).
 *
 * Every entry of `rwDir` is classified (pre-order walk):
 * - aufs format: top-level names starting with `.wh..wh.` (aufs metadata:
 *   `.wh..wh.aufs`, `.wh..wh.plnk/`, `.wh..wh.orph/`, a root opaque marker)
 *   are skipped together with everything below them; `.wh.<name>` is a
 *   `delete` of `<name>` (so a nested opaque marker `d/.wh..wh..opq` reads as
 *   `delete /d/.wh..opq`, as in Go);
 * - overlay format: a 0/0 character device is a `delete` of its own path, and
 *   an opaque directory (`trusted.overlay.opaque=y`) that a lower layer shows
 *   is a `delete` of the directory;
 * - anything else is a `modify` if the nearest lower layer that has the path
 *   has it, else an `add`; a directory present in both with the same size,
 *   mode and mtime (same second and one side without nanoseconds counts as
 *   same) is not reported at all;
 * - every `add` or `delete` also reports each not yet reported ancestor
 *   directory as `modify`.
 *
 * Where this deliberately differs from Go 1.43 (Go is wrong there):
 * - the children of `/.wh..wh.plnk` (and the other metadata dirs) are not
 *   reported (Go reports them, plus `modify /.wh..wh.plnk`);
 * - lower layers are looked at without following symlinks: a lower symlink
 *   is an entry of its own (Go's `stat` follows it, to the host's files for
 *   absolute targets), and a lower non-directory hides whatever its name
 *   seems to contain (Go fails with ENOTDIR when a lower file became a
 *   directory in the layer);
 * - besides whiteouts of the path or its parents in lower layers (which Go
 *   also checks), an opaque directory in a lower layer hides the layers below
 *   it, so a path only those show is an `add`.
 *
 * A missing `rwDir` has no changes; an entry that vanishes during the walk is
 * left out; any other error is thrown (an `ErrnoError` naming the call and
 * path).
 *
 * @example
 * ```ts
 * import { layerChanges } from "./changes.ts";
 * const lower = await Deno.makeTempDir(), rw = await Deno.makeTempDir();
 * await Deno.mkdir(`${lower}/etc`);
 * await Deno.writeTextFile(`${lower}/etc/old`, "x");
 * await Deno.mkdir(`${rw}/etc`);
 * await Deno.writeTextFile(`${rw}/etc/.wh.old`, "");
 * console.log(layerChanges([lower], rw));
 * // [ { path: "/etc", kind: "modify" }, { path: "/etc/old", kind: "delete" } ]
 * ```
 */
export function layerChanges(
  lowerDirs: string[],
  rwDir: string,
  opts: LayerChangesOptions = {},
): Change[] {
  const libc = opts.libc ?? systemLibc();
  const overlay = opts.whiteoutFormat === "overlay";
  const lowers = lowerDirs.map((d) => encoder.encode(d));
  const n = lowers.length;
  const out: RawChange[] = [];
  /** Directories (absolute-style key) already reported or known changed. */
  const changedDirs = new Set<string>();
  const key = (p: Uint8Array) => pathFromBytes(p);

  const lowerPath = (i: number, rel: Uint8Array) => joinBytes(lowers[i], rel);

  /** Whether `rel` (a directory present in layer i) is opaque there. */
  const lowerOpaque = (i: number, rel: Uint8Array): boolean => {
    const dir = lowerPath(i, rel);
    if (overlay) {
      const v = libc.lgetxattr(dir, OVERLAY_OPAQUE_XATTR);
      return v !== null && v.length === 1 && v[0] === 0x79;
    }
    return lstatOrNull(libc, AT.FDCWD, joinBytes(dir, WHITEOUT_OPAQUE_BYTES)) !== null;
  };

  /** Whether layer i (where `parentRel` is a directory) has a whiteout for `name`. */
  const lowerWhiteout = (i: number, parentRel: Uint8Array, name: Uint8Array): boolean => {
    if (overlay) {
      const st = lstatOrNull(libc, AT.FDCWD, lowerPath(i, joinBytes(parentRel, name)));
      return st !== null && isWhiteoutDevice(st);
    }
    const wh = concatBytes(WHITEOUT_PREFIX_BYTES, name);
    return lstatOrNull(libc, AT.FDCWD, lowerPath(i, joinBytes(parentRel, wh))) !== null;
  };

  const rootView = (): LowerView => {
    const present: boolean[] = [];
    let limit = n;
    for (let i = 0; i < n; i++) {
      const st = lstatOrNull(libc, AT.FDCWD, lowers[i]);
      present.push(st !== null && isDir(st));
      if (i < limit && present[i] && lowerOpaque(i, EMPTY)) limit = i + 1;
    }
    return { present, limit };
  };

  /**
   * Scan the layers for child `name` of `parent`: the stat of the first
   * layer that shows it, or null when none does before a whiteout or an
   * opaque directory hides the rest.
   */
  const findInLowers = (
    parent: RwFrame,
    name: Uint8Array,
  ): { st: Stat; layer: number } | null => {
    const { present, limit } = parent.view;
    for (let i = 0; i < limit; i++) {
      if (!present[i]) continue;
      if (!overlay && lowerWhiteout(i, parent.rel, name)) return null;
      const st = lstatOrNull(libc, AT.FDCWD, lowerPath(i, joinBytes(parent.rel, name)));
      if (st === null) continue;
      if (overlay && isWhiteoutDevice(st)) return null;
      return { st, layer: i };
    }
    return null;
  };

  /** The lower view of child directory `name` of `parent`. */
  const childView = (parent: RwFrame, name: Uint8Array, rel: Uint8Array): LowerView => {
    const present: boolean[] = new Array(n).fill(false);
    let limit = parent.view.limit;
    for (let i = 0; i < limit; i++) {
      if (!parent.view.present[i]) continue;
      if (!overlay && lowerWhiteout(i, parent.rel, name)) {
        limit = i;
        break;
      }
      const st = lstatOrNull(libc, AT.FDCWD, lowerPath(i, rel));
      if (st === null) continue;
      if (overlay && isWhiteoutDevice(st)) {
        limit = i;
        break;
      }
      if (!isDir(st)) continue;
      present[i] = true;
      if (lowerOpaque(i, rel)) limit = i + 1;
    }
    return { present, limit };
  };

  const addParents = (path: Uint8Array) => {
    // path is "/a/b/c": report "/a", "/a/b" unless already known, outermost first.
    const pending: Uint8Array[] = [];
    for (let i = path.length - 1; i > 0; i--) {
      if (path[i] !== SLASH) continue;
      const dir = path.subarray(0, i);
      const k = key(dir);
      if (changedDirs.has(k)) continue;
      changedDirs.add(k);
      pending.push(dir);
    }
    for (let j = pending.length - 1; j >= 0; j--) {
      out.push({ path: pending[j].slice(), kind: "modify" });
    }
  };

  // The rw walk.
  const rwRoot = encoder.encode(rwDir);
  let rootFd: number;
  try {
    rootFd = libc.openat(AT.FDCWD, rwRoot, O.RDONLY | O.DIRECTORY);
  } catch (e) {
    if (e instanceof ErrnoError && e.errno === Errno.ENOENT) return [];
    throw e;
  }
  const stack: RwFrame[] = [];
  const push = (fd: number, rel: Uint8Array, view: LowerView) => {
    let names: Uint8Array[];
    try {
      names = libc.readdir(fd).map((d) => d.name);
    } catch (e) {
      libc.close(fd);
      throw atPath(e, joinBytes(rwRoot, rel));
    }
    names.sort(compareBytes);
    stack.push({ fd, rel, names, next: 0, view });
  };

  try {
    push(rootFd, EMPTY, rootView());
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.next >= top.names.length) {
        stack.pop();
        libc.close(top.fd);
        continue;
      }
      const name = top.names[top.next++];
      const rel = joinBytes(top.rel, name);
      let st: Stat | null;
      try {
        st = lstatOrNull(libc, top.fd, name);
      } catch (e) {
        throw atPath(e, joinBytes(rwRoot, rel));
      }
      if (st === null) continue; // vanished
      const dir = isDir(st);

      if (!overlay && top.rel.length === 0 && startsWithBytes(name, WHITEOUT_META_PREFIX_BYTES)) {
        continue; // aufs metadata, and everything below it
      }

      let kind: Change["kind"] = "add";
      let changePath = absPath(rel);
      let record = true;
      let deleted = false;
      if (!overlay && startsWithBytes(name, WHITEOUT_PREFIX_BYTES)) {
        deleted = true;
        changePath = whiteoutTarget(top.rel, name.subarray(WHITEOUT_PREFIX_BYTES.length));
      } else if (overlay && isWhiteoutDevice(st)) {
        deleted = true;
      } else {
        const found = findInLowers(top, name);
        if (overlay && dir && found !== null) {
          const v = libc.lgetxattr(joinBytes(rwRoot, rel), OVERLAY_OPAQUE_XATTR);
          if (v !== null && v.length === 1 && v[0] === 0x79) deleted = true;
        }
        if (!deleted && found !== null) {
          const lower = found.st;
          if (
            dir && isDir(lower) && lower.size === st.size && lower.mode === st.mode &&
            sameFsTime(lower, st)
          ) {
            record = false;
          } else {
            kind = "modify";
          }
        }
      }
      if (deleted) kind = "delete";

      if (record) {
        if (dir) changedDirs.add(key(absPath(rel)));
        if (kind !== "modify") addParents(changePath);
        out.push({ path: changePath, kind });
      }
      if (dir) {
        let fd: number;
        try {
          fd = libc.openat(top.fd, name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
        } catch (e) {
          if (isNotFound(e)) continue;
          throw atPath(e, joinBytes(rwRoot, rel));
        }
        let view: LowerView;
        try {
          view = childView(top, name, rel);
        } catch (e) {
          libc.close(fd);
          throw e;
        }
        push(fd, rel, view);
      }
    }
  } finally {
    while (stack.length > 0) libc.close(stack.pop()!.fd);
  }
  return finish(out);
}

/**
 * Go's `filepath.Join(dir, name)` as a change path, for the target of a
 * whiteout `dir/.wh.<name>` (`name` may be empty or `..`, which the join
 * cleans away).
 */
function whiteoutTarget(dirRel: Uint8Array, name: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const push = (seg: Uint8Array) => {
    if (seg.length === 0 || (seg.length === 1 && seg[0] === 0x2e)) return;
    if (seg.length === 2 && seg[0] === 0x2e && seg[1] === 0x2e) {
      parts.pop();
      return;
    }
    parts.push(seg);
  };
  let start = 0;
  for (let i = 0; i <= dirRel.length; i++) {
    if (i === dirRel.length || dirRel[i] === SLASH) {
      push(dirRel.subarray(start, i));
      start = i + 1;
    }
  }
  push(name);
  const segs: Uint8Array[] = [];
  for (const p of parts) segs.push(SLASH_BYTES, p);
  return segs.length === 0 ? SLASH_BYTES.slice() : concatBytes(...segs);
}

// ---------------------------------------------------------------------------
// changesDirs

interface Node {
  /** Full path on disk. */
  path: Uint8Array;
  /** lstat; null for the stand-in empty old root. */
  st: Stat | null;
}

/**
 * Options of {@linkcode changesDirs}.
 *
 * @example
 * ```ts
 * import { changesDirs, type ChangesDirsOptions, systemLibc } from "../../mod.ts";
 * const opts: ChangesDirsOptions = { libc: systemLibc() };
 * console.log(changesDirs("/srv/new-rootfs", "/srv/old-rootfs", opts));
 * ```
 */
export interface ChangesDirsOptions {
  /** System calls (default: the real libc). */
  libc?: Libc;
}

/**
 * The changes that turn the tree `oldDir` into the tree `newDir` (both
 * complete trees, e.g. two mounted layers), as containers/storage 1.43's
 * `ChangesDirs` finds them with empty id mappings. `oldDir` `""` means an
 * empty tree: everything in `newDir` is added.
 *
 * - Both trees are listed side by side; a name whose inode number is the same
 *   on both sides, while both parent directories are on the same device, is
 *   unchanged and not looked into.
 * - A name only in `newDir` is an `add` (with everything below it); only in
 *   `oldDir`, a `delete` (reported once, not its contents).
 * - A name in both is a `modify` when mode, owner or device number differ;
 *   for non-directories also when the size differs or the mtimes are not the
 *   "same fs time" (same second, and equal nanoseconds or one side 0); or
 *   when `security.capability` or the `user.*` xattrs differ. A directory
 *   replaced by a file is one `modify`.
 * - A directory with changes inside that is not itself reported is reported
 *   as `modify`.
 *
 * Go's mode tests are kept literally: a block device or a socket counts as a
 * directory where Go tests `mode & S_IFDIR`. Errors (other than entries that
 * vanish during the walk) are thrown; a missing `newDir` or `oldDir` is an
 * error.
 *
 * @example
 * ```ts
 * import { changesDirs } from "./changes.ts";
 * const a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${b}/new`, "x");
 * console.log(changesDirs(b, a)); // [ { path: "/new", kind: "add" } ]
 * ```
 */
export function changesDirs(
  newDir: string,
  oldDir: string,
  opts: ChangesDirsOptions = {},
): Change[] {
  const libc = opts.libc ?? systemLibc();
  const out: RawChange[] = [];
  const newRoot: Node = { path: encoder.encode(newDir), st: null };
  newRoot.st = libc.fstatat(AT.FDCWD, newRoot.path, AT.SYMLINK_NOFOLLOW);
  let oldRoot: Node;
  if (oldDir === "") {
    oldRoot = { path: EMPTY, st: null };
  } else {
    const path = encoder.encode(oldDir);
    oldRoot = { path, st: libc.fstatat(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW) };
  }
  diffNode(libc, EMPTY, newRoot, oldRoot, true, false, out);
  return finish(out);
}

interface NameIno {
  name: Uint8Array;
  ino: number;
}

function listDir(libc: Libc, path: Uint8Array): NameIno[] {
  const fd = libc.openat(AT.FDCWD, path, O.RDONLY | O.DIRECTORY);
  try {
    const list = libc.readdir(fd).map((d) => ({ name: d.name, ino: d.ino }));
    list.sort((a, b) => compareBytes(a.name, b.name));
    return list;
  } finally {
    libc.close(fd);
  }
}

const looseDir = (st: Stat) => (st.mode & S.IFDIR) !== 0;

function statDifferent(o: Stat, n: Stat): boolean {
  if (
    o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.rdevMajor !== n.rdevMajor ||
    o.rdevMinor !== n.rdevMinor
  ) {
    return true;
  }
  if ((o.mode & S.IFDIR) === S.IFDIR) return false; // directory sizes and times say nothing
  return !sameFsTime(o, n) || o.size !== n.size;
}

function bytesEq(a: Uint8Array | null, b: Uint8Array | null): boolean {
  const x = a ?? EMPTY, y = b ?? EMPTY;
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** `security.capability` and the `user.*` xattrs, compared as Go's ChangesDirs does. */
function xattrsDiffer(libc: Libc, a: Uint8Array, b: Uint8Array): boolean {
  const cap = "security.capability";
  if (!bytesEq(getx(libc, a, cap), getx(libc, b, cap))) return true;
  const ua = userXattrs(libc, a), ub = userXattrs(libc, b);
  if (ua.size !== ub.size) return true;
  for (const [k, v] of ua) {
    if (!ub.has(k) || !bytesEq(v, ub.get(k)!)) return true;
  }
  return false;
}

function getx(libc: Libc, path: Uint8Array, name: string): Uint8Array | null {
  try {
    return libc.lgetxattr(path, name);
  } catch (e) {
    if (e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP) return null;
    throw e;
  }
}

function userXattrs(libc: Libc, path: Uint8Array): Map<string, Uint8Array> {
  const m = new Map<string, Uint8Array>();
  let names: string[];
  try {
    names = libc.llistxattr(path);
  } catch (e) {
    if (e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP) return m;
    throw e;
  }
  for (const k of names) {
    if (!k.startsWith("user.")) continue;
    const v = getx(libc, path, k);
    if (v !== null) m.set(k, v);
  }
  return m;
}

/**
 * Go's `FileInfo.addChanges` for the pair (`nu`, `old`) at `rel`, walking the
 * trees as it goes. `reported`: the parent already reported `rel` as modified.
 */
function diffNode(
  libc: Libc,
  rel: Uint8Array,
  nu: Node,
  old: Node | null,
  isRoot: boolean,
  reported: boolean,
  out: RawChange[],
): void {
  const start = out.length;
  let added = reported;
  if (old === null) {
    out.push({ path: absPath(rel), kind: "add" });
    added = true;
  }
  const newReal = isRoot || isDir(nu.st!);
  const newLoose = isRoot || looseDir(nu.st!);
  const oldReal = old !== null && (old.st === null ? isRoot : isDir(old.st));
  const oldListed = oldReal && newLoose && old!.path.length > 0;
  const names1 = oldListed ? listDir(libc, old!.path) : [];
  const names2 = newReal ? listDir(libc, nu.path) : [];
  const sameDevice = old !== null && old.st !== null && nu.st !== null &&
    old.st.devMajor === nu.st.devMajor && old.st.devMinor === nu.st.devMinor;

  // Merge the two sorted listings; drop names with the same inode on one device.
  let i1 = 0, i2 = 0;
  while (i1 < names1.length || i2 < names2.length) {
    let name: Uint8Array;
    let in1 = false, in2 = false;
    const c = i1 >= names1.length
      ? 1
      : i2 >= names2.length
      ? -1
      : compareBytes(names1[i1].name, names2[i2].name);
    if (c < 0) {
      name = names1[i1++].name;
      in1 = true;
    } else if (c > 0) {
      name = names2[i2++].name;
      in2 = true;
    } else {
      const same = names1[i1].ino === names2[i2].ino && sameDevice;
      name = names1[i1++].name;
      i2++;
      if (same) continue;
      in1 = in2 = true;
    }
    const childRel = joinBytes(rel, name);
    const oldPath = in1 ? joinBytes(old!.path, name) : EMPTY;
    const newPath = in2 ? joinBytes(nu.path, name) : EMPTY;
    const oldSt = in1 ? lstatOrNull(libc, AT.FDCWD, oldPath) : null;
    const newSt = in2 ? lstatOrNull(libc, AT.FDCWD, newPath) : null;
    if (newSt !== null) {
      const child: Node = { path: newPath, st: newSt };
      if (oldSt !== null) {
        const changed = statDifferent(oldSt, newSt) || xattrsDiffer(libc, oldPath, newPath);
        if (changed) out.push({ path: absPath(childRel), kind: "modify" });
        diffNode(libc, childRel, child, { path: oldPath, st: oldSt }, false, changed, out);
      } else {
        diffNode(libc, childRel, child, null, false, false, out);
      }
    } else if (oldSt !== null) {
      out.push({ path: absPath(childRel), kind: "delete" });
    }
  }

  if (out.length > start && newLoose && !added && !isRoot) {
    out.push({ path: absPath(rel), kind: "modify" });
  }
}
