/**
 * Looking at a driver root from outside, for the fault, disk-full and
 * concurrency tests: a snapshot of every layer (chain file and a content hash
 * of its diff directory), the mounts under the root, the entries that belong
 * to no layer (leftovers), and whether a layer's lock is still held by
 * someone.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { AT, O, systemLibc } from "../../ffi/libc.ts";
import { mountpointsUnder } from "../../lib/mounts.ts";
import { TransientRefs } from "../../lib/transient_refs.ts";

/** One layer as found on disk. */
export interface LayerState {
  /** Content of `layers/<id>`. */
  chain: string;
  /** Hash of the tree `diff/<id>` (names, types, modes, owners, contents, link targets, xattrs). */
  hash: string;
  /** Whether `incomplete/<id>` exists. */
  incomplete: boolean;
}

/** Every layer with a chain file, by id. */
export type Snapshot = Map<string, LayerState>;

function names(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** xattrs overlay keeps for itself on upper dirs (e.g. its uuid, set at every mount): not content. */
const KERNEL_XATTRS = new Set([
  "trusted.overlay.uuid",
  "trusted.overlay.origin",
  "trusted.overlay.impure",
  "trusted.overlay.nlink",
]);

/** A hash of the tree at `dir` (`"missing"` when it is not there). */
export function treeHash(dir: string): string {
  if (!exists(dir)) return "missing";
  const h = createHash("sha256");
  const libc = systemLibc();
  const walk = (path: string, rel: string) => {
    const st = Deno.lstatSync(path);
    h.update(`${rel}\0${st.mode}\0${st.uid}:${st.gid}\0`);
    let xattrs: string[] = [];
    try {
      xattrs = libc.llistxattr(path).sort();
    } catch {
      // a filesystem without xattrs
    }
    for (const x of xattrs) {
      if (KERNEL_XATTRS.has(x)) continue;
      h.update(`x:${x}=`);
      h.update(libc.lgetxattr(path, x) ?? new Uint8Array());
    }
    if (st.isSymlink) h.update(`l:${Deno.readLinkSync(path)}\0`);
    else if (st.isFile) {
      h.update(`f:`);
      h.update(Deno.readFileSync(path));
    } else if (st.isDirectory) {
      for (const n of names(path)) walk(join(path, n), `${rel}/${n}`);
    } else h.update(`dev:${st.rdev}\0`);
  };
  walk(dir, "");
  return h.digest("hex");
}

/** Every layer of the root at `root` that has a chain file. */
export function snapshot(root: string): Snapshot {
  const out: Snapshot = new Map();
  for (const id of names(join(root, "layers"))) {
    if (id.startsWith(".")) continue; // temp files of atomic writes
    const file = join(root, "layers", id);
    if (!Deno.lstatSync(file).isFile) continue;
    out.set(id, {
      chain: Deno.readTextFileSync(file),
      hash: treeHash(join(root, "diff", id)),
      incomplete: exists(join(root, "incomplete", id)),
    });
  }
  return out;
}

/** The mounts at or below `root`, except the root's own bind mount. */
export function mountsIn(root: string): string[] {
  const real = Deno.realPathSync(root);
  return mountpointsUnder(root).filter((m) => m !== real);
}

/**
 * Whether someone holds the flock of `path` (a lock file): tries a
 * non-blocking exclusive lock on a new open file description.
 */
export function lockHeld(path: string): boolean {
  const libc = systemLibc();
  let fd: number;
  try {
    fd = libc.openat(AT.FDCWD, path, O.RDONLY | O.CLOEXEC);
  } catch {
    return false;
  }
  try {
    return flock(fd, 2 | 4) !== 0; // LOCK_EX | LOCK_NB
  } finally {
    flock(fd, 8); // LOCK_UN
    libc.close(fd);
  }
}

let flockLib:
  | Deno.DynamicLibrary<{ flock: { parameters: ["i32", "i32"]; result: "i32" } }>
  | undefined;
function flock(fd: number, op: number): number {
  flockLib ??= Deno.dlopen("libc.so.6", { flock: { parameters: ["i32", "i32"], result: "i32" } });
  return flockLib.symbols.flock(fd, op);
}

/** The top-level names of a freshly initialised root (the layout that is never a leftover). */
export function topNames(root: string): string[] {
  return names(root);
}

/**
 * Entries under `root` that belong to no layer in `layers` (the ids with a
 * chain file) and are not part of the layout named by `top`: files in
 * `layers/`, `incomplete/`, `counts/`, `locks/` of other names, layer dirs
 * (`diff/`, `mnt/`, `work/`) of no layer, short links in `l/` that lead to no
 * layer, an unmounted `mnt/<id>` that is not empty, and top-level entries
 * that a fresh root does not have, records of transient references (`refs/`)
 * of no layer or of a process that is gone. `mounted` are the mountpoints (a mounted
 * `mnt/<id>` is not looked into).
 */
export function leftovers(
  root: string,
  layers: ReadonlySet<string>,
  top: readonly string[],
  mounted: readonly string[],
): string[] {
  const out: string[] = [];
  const real = Deno.realPathSync(root);
  for (const name of names(root)) if (!top.includes(name)) out.push(join(root, name));
  for (const dir of ["layers", "incomplete", "counts", "locks", "diff", "mnt", "work"]) {
    for (const name of names(join(root, dir))) {
      const path = join(root, dir, name);
      if (!layers.has(name)) {
        out.push(path);
        continue;
      }
      if (
        dir === "mnt" && !mounted.includes(join(real, dir, name)) && names(path).length > 0
      ) out.push(`${path} (not mounted, not empty)`);
    }
  }
  const refs = new TransientRefs(root);
  for (const id of names(join(root, "refs"))) {
    if (!layers.has(id)) out.push(join(root, "refs", id));
    else {
      for (const name of names(join(root, "refs", id))) {
        const path = join(root, "refs", id, name);
        if (refs.isDead(path)) out.push(path);
      }
    }
  }
  for (const name of names(join(root, "l"))) {
    const path = join(root, "l", name);
    let target = "";
    try {
      target = Deno.readLinkSync(path);
    } catch {
      // not a link: a leftover
    }
    const id = target.startsWith("../diff/") ? target.slice("../diff/".length) : "";
    if (!layers.has(id)) out.push(path);
  }
  return out;
}
