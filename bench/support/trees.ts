/**
 * Reproducible trees for the layer-tar benches.
 *
 * With the go-storage peer's `mktree.sh` beside the repository
 * (`../shared/peers/go-storage/mktree.sh`) the trees are its `rootfs`,
 * `bigfiles` and `aufs-rw` kinds. Without it, a simpler deterministic
 * generator written here stands in: a seeded PRNG picks a rootfs-shaped tree
 * (skewed directory fan-out, long-tailed file sizes, symlinks, hardlinks,
 * a few owners and modes), big files of PRNG bytes, and a scripted change set
 * made through a union mount (files rewritten, chmodded, deleted, added,
 * directories deleted or made opaque).
 *
 * @module
 */

import { mulberry32 } from "../../tests/support/rng.ts";
import { join } from "node:path";
import { AT, systemLibc } from "../../ffi/libc.ts";

/** Path of the peer's tree script (it may be absent, e.g. in a bare clone). */
export const MKTREE: string = new URL("../../../shared/peers/go-storage/mktree.sh", import.meta.url)
  .pathname;

/**
 * Whether `mktree.sh` can be used: it exists and `STRATA_BENCH_NO_MKTREE` is
 * not set (set it to exercise the built-in generator).
 *
 * @example
 * ```ts
 * import { hasMktree } from "./trees.ts";
 * console.log(hasMktree() ? "mktree.sh" : "built-in generator");
 * ```
 */
export function hasMktree(): boolean {
  if (Deno.env.get("STRATA_BENCH_NO_MKTREE")) return false;
  try {
    return Deno.statSync(MKTREE).isFile;
  } catch {
    return false;
  }
}

/** Run a command; throw with its stderr when it fails. */
export async function run(cmd: string, args: string[], cwd?: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence everywhere. */
export class Prng {
  #next: () => number;

  /** A generator started from `seed`. */
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.#next();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** One element of `xs`. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }

  /** An element of `xs`, biased towards the front (squared uniform index). */
  skewed<T>(xs: readonly T[]): T {
    const r = this.next();
    return xs[Math.floor(r * r * xs.length)];
  }

  /** Log-uniform integer in [lo, hi). */
  logUniform(lo: number, hi: number): number {
    return Math.floor(Math.exp(Math.log(lo) + this.next() * (Math.log(hi) - Math.log(lo))));
  }
}

const SYLLABLES = (
  "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo fu ga ge gi go gu ka ke ki ko ku " +
  "la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su " +
  "ta te ti to tu lib x86 gnu sys net core util conf data proto"
).split(" ");
const EXTENSIONS = [
  "",
  "",
  "",
  ".so",
  ".so.1",
  ".h",
  ".py",
  ".pyc",
  ".conf",
  ".txt",
  ".gz",
  ".mo",
  ".png",
  ".json",
  ".sh",
  ".1.gz",
  ".a",
  ".xml",
  ".service",
];
const SKELETON = [
  "etc",
  "usr",
  "var",
  "opt",
  "home",
  "root",
  "srv",
  "usr/bin",
  "usr/sbin",
  "usr/lib",
  "usr/libexec",
  "usr/include",
  "usr/share",
  "usr/share/doc",
  "usr/share/man",
  "usr/share/locale",
  "usr/lib/x86_64-linux-gnu",
  "var/lib",
  "var/cache",
  "var/log",
  "etc/default",
  "etc/ssl",
];
/** 2023-01-01T00:00:00Z, the base of generated mtimes. */
const T0 = 1672531200;

function word(rng: Prng): string {
  let w = "";
  for (let i = 1 + rng.int(4); i > 0; i--) w += rng.pick(SYLLABLES);
  return w;
}

function fileName(rng: Prng): string {
  let n = word(rng);
  if (rng.next() < 0.3) n += `-${word(rng)}`;
  return n + rng.pick(EXTENSIONS);
}

/** File sizes of a distribution image: mostly small, a long tail up to 6 MiB. */
function fileSize(rng: Prng): number {
  const r = rng.next();
  if (r < 0.03) return 0;
  if (r < 0.63) return 1 + rng.int(2048);
  if (r < 0.93) return 2048 + rng.int(6144);
  if (r < 0.99) return rng.logUniform(8192, 65536);
  if (r < 0.9993) return rng.logUniform(65536, 524288);
  return rng.logUniform(1 << 20, 6 << 20);
}

/** 4 MiB of PRNG bytes; file contents are windows into it (wrapping around). */
class ContentPool {
  readonly bytes: Uint8Array;

  constructor(rng: Prng) {
    this.bytes = new Uint8Array(4 << 20);
    const words = new Uint32Array(this.bytes.buffer);
    for (let i = 0; i < words.length; i++) words[i] = rng.int(4294967296);
  }

  /** Write `size` bytes starting at a random pool offset to `path` (created exclusively). */
  write(rng: Prng, path: string, size: number, mode: number): void {
    const f = Deno.openSync(path, { write: true, createNew: true, mode });
    try {
      let off = rng.int(this.bytes.length);
      let left = size;
      while (left > 0) {
        const n = Math.min(left, this.bytes.length - off, 1 << 20);
        const chunk = this.bytes.subarray(off, off + n);
        let done = 0;
        while (done < n) done += f.writeSync(chunk.subarray(done));
        left -= n;
        off = (off + n) % this.bytes.length;
      }
    } finally {
      f.close();
    }
    // The umask must not change the mode the tree asks for.
    Deno.chmodSync(path, mode);
  }
}

function depth(path: string): number {
  return path.split("/").length;
}

/** Set `path`'s mtime (and atime) without following a symlink. */
function setTime(path: string, sec: number, nsec: number): void {
  systemLibc().utimensat(AT.FDCWD, path, sec, nsec, sec, nsec, AT.SYMLINK_NOFOLLOW);
}

/** Options of {@linkcode generateRootfs}. */
export interface RootfsOptions {
  /** Regular files (default 30,000). */
  files?: number;
  /** Directories (default 3,000). */
  dirs?: number;
  /** PRNG seed (default 42). */
  seed?: number;
}

/**
 * Write a rootfs-shaped tree into `dest` (created; must not exist): about
 * `files` regular files in `dirs` directories, plus symlinks (3.5 % of the
 * file count) and hardlinks (1 %), a few owners and modes, deterministic
 * mtimes. Same options, same tree.
 *
 * @example
 * ```ts
 * import { generateRootfs } from "./trees.ts";
 * const dir = await Deno.makeTempDir();
 * generateRootfs(`${dir}/rootfs`, { files: 100, dirs: 30 });
 * ```
 */
export function generateRootfs(dest: string, opts: RootfsOptions = {}): void {
  const nFiles = opts.files ?? 30000, nDirs = opts.dirs ?? 3000;
  const rng = new Prng(opts.seed ?? 42);
  const pool = new ContentPool(rng);
  const times = new Map<string, number>();
  const stamp = (rel: string) => times.set(rel, T0 + rng.int(365 * 86400));
  const names = new Map<string, Set<string>>();
  const claim = (dir: string, name: string): string => {
    let set = names.get(dir);
    if (!set) names.set(dir, set = new Set());
    let n = name;
    for (let k = 1; set.has(n); k++) n = `${name}.${k}`;
    set.add(n);
    return dir === "" ? n : `${dir}/${n}`;
  };
  const abs = (rel: string) => join(dest, rel);

  Deno.mkdirSync(dest, { recursive: true });
  const dirs: string[] = [];
  const mkdir = (rel: string, mode: number) => {
    Deno.mkdirSync(abs(rel));
    Deno.chmodSync(abs(rel), mode);
    dirs.push(rel);
    stamp(rel);
  };
  for (const d of SKELETON) {
    const slash = d.lastIndexOf("/");
    claim(slash < 0 ? "" : d.slice(0, slash), d.slice(slash + 1));
    mkdir(d, d === "root" ? 0o700 : 0o755);
  }
  while (dirs.length < nDirs) {
    const parent = rng.next() < 0.5 ? rng.pick(dirs) : rng.skewed(dirs);
    if (depth(parent) >= 9) continue;
    const r = rng.next();
    const rel = claim(parent, word(rng) + rng.pick(["", "", "", ".d", "-1.2", "-common"]));
    mkdir(rel, r < 0.02 ? 0o700 : r < 0.03 ? 0o555 : 0o755);
    if (r > 0.97) Deno.chownSync(abs(rel), 1000, 1000);
  }

  const files: string[] = [];
  for (let i = 0; i < nFiles; i++) {
    const dir = rng.next() < 0.5 ? rng.pick(dirs) : rng.skewed(dirs);
    const rel = claim(dir, fileName(rng));
    const r = rng.next();
    const mode = /(^|\/)(s?bin|libexec)(\/|$)/.test(dir)
      ? (r < 0.9 ? 0o755 : 0o644)
      : (r < 0.85 ? 0o644 : r < 0.92 ? 0o755 : r < 0.96 ? 0o600 : 0o444);
    pool.write(rng, abs(rel), fileSize(rng), mode);
    const o = rng.next();
    if (o > 0.96) Deno.chownSync(abs(rel), 1000, 1000);
    else if (o > 0.95) Deno.chownSync(abs(rel), 0, 42);
    files.push(rel);
    stamp(rel);
  }

  for (let i = Math.floor(nFiles / 100); i > 0; i--) {
    const src = rng.pick(files);
    const dir = rng.pick(dirs);
    Deno.linkSync(abs(src), abs(claim(dir, fileName(rng))));
  }
  for (let i = Math.floor(nFiles * 0.035); i > 0; i--) {
    const dir = rng.pick(dirs);
    const r = rng.next();
    let target: string;
    if (r < 0.5) target = `/${rng.pick(files)}`;
    else if (r < 0.8) target = `${"../".repeat(depth(dir))}${rng.pick(files)}`;
    else if (r < 0.9) target = `/${rng.pick(dirs)}`;
    else target = `../${word(rng)}/${fileName(rng)}`; // dangling
    const rel = claim(dir, `link-${word(rng)}`);
    Deno.symlinkSync(target, abs(rel));
    stamp(rel);
  }

  // Times last: non-directories, then directories deepest first, then the root.
  const isDir = new Set(dirs);
  for (const [rel, sec] of times) if (!isDir.has(rel)) setTime(abs(rel), sec, 0);
  for (const d of [...dirs].sort((a, b) => depth(b) - depth(a))) setTime(abs(d), times.get(d)!, 0);
  setTime(dest, T0, 0);
}

/**
 * Write `count` files of `mib` MiB of PRNG bytes (`big-00.bin`, …) into
 * `dest` (created).
 *
 * @example
 * ```ts
 * import { generateBigFiles } from "./trees.ts";
 * const dir = await Deno.makeTempDir();
 * generateBigFiles(`${dir}/big`, 2, 1);
 * ```
 */
export function generateBigFiles(dest: string, count: number, mib: number, seed = 42): void {
  const rng = new Prng(seed);
  const pool = new ContentPool(rng);
  Deno.mkdirSync(dest, { recursive: true });
  for (let i = 0; i < count; i++) {
    const path = join(dest, `big-${String(i).padStart(2, "0")}.bin`);
    pool.write(rng, path, mib << 20, 0o644);
    setTime(path, 1700000000 + i, 0);
  }
  setTime(dest, 1700000000, 0);
}

/** All entries under `root` (relative paths, sorted), split by kind. */
function listTree(root: string): { files: string[]; dirs: string[]; links: string[] } {
  const files: string[] = [], dirs: string[] = [], links: string[] = [];
  const walk = (rel: string) => {
    const names = [...Deno.readDirSync(rel === "" ? root : join(root, rel))]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of names) {
      const p = rel === "" ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory) {
        dirs.push(p);
        walk(p);
      } else if (e.isSymlink) links.push(p);
      else if (e.isFile) files.push(p);
    }
  };
  walk("");
  return { files, dirs, links };
}

/**
 * Change a mounted rootfs the way a container's writes would, through the
 * union at `mnt` (so the backend records copy-ups, whiteouts and opaque
 * directories): about 2,000 entries in all — files rewritten (400),
 * chmodded (100), deleted (300), symlinks deleted (20), directories deleted
 * (10) or emptied and refilled (opaque, 5), files added (900), new
 * directories with files (20), symlinks (50) and hardlinks (20) added.
 * Returns the number of operations done.
 *
 * @example
 * ```ts
 * import { scriptedChanges } from "./trees.ts";
 * // const n = scriptedChanges(await driver.get(child)); await driver.put(child);
 * console.log(typeof scriptedChanges);
 * ```
 */
export function scriptedChanges(mnt: string, seed = 43): number {
  const rng = new Prng(seed);
  const pool = new ContentPool(rng);
  const tree = listTree(mnt);
  const gone = new Set<string>();
  const isGone = (rel: string) => {
    for (let p = rel; p !== ""; p = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "") {
      if (gone.has(p)) return true;
    }
    return false;
  };
  const abs = (rel: string) => join(mnt, rel);
  const deep = tree.dirs.filter((d) => depth(d) >= 2);
  let ops = 0;

  for (let i = 0; i < 10; i++) {
    const d = rng.pick(deep);
    if (isGone(d)) continue;
    Deno.removeSync(abs(d), { recursive: true });
    gone.add(d);
    ops++;
  }
  for (let i = 0; i < 5; i++) {
    const d = rng.pick(deep);
    if (isGone(d)) continue;
    Deno.removeSync(abs(d), { recursive: true });
    gone.add(d);
    Deno.mkdirSync(abs(d)); // a dir made again over a deleted lower one: opaque
    for (let k = 0; k < 3; k++) pool.write(rng, abs(`${d}/refilled-${k}`), rng.int(5000), 0o644);
    ops += 4;
  }
  const live = () => tree.files.filter((f) => !isGone(f));
  let files = live();
  for (let i = 0; i < 300; i++) {
    const f = rng.pick(files);
    if (gone.has(f)) continue;
    Deno.removeSync(abs(f));
    gone.add(f);
    ops++;
  }
  for (let i = 0; i < 20; i++) {
    const l = rng.pick(tree.links);
    if (isGone(l)) continue;
    Deno.removeSync(abs(l));
    gone.add(l);
    ops++;
  }
  files = live();
  const touched = new Set<string>();
  for (let i = 0; i < 400; i++) {
    const f = rng.pick(files);
    if (touched.has(f)) continue;
    touched.add(f);
    const mode = Deno.lstatSync(abs(f)).mode! & 0o7777;
    Deno.removeSync(abs(f));
    pool.write(rng, abs(f), fileSize(rng), mode);
    ops++;
  }
  for (let i = 0; i < 100; i++) {
    const f = rng.pick(files);
    if (touched.has(f)) continue;
    touched.add(f);
    Deno.chmodSync(abs(f), (Deno.lstatSync(abs(f)).mode! & 0o7777) ^ 0o044);
    ops++;
  }
  const dirs = tree.dirs.filter((d) => !isGone(d));
  const added: string[] = [];
  for (let i = 0; i < 900; i++) {
    const rel = `${rng.pick(dirs)}/rw-${i}-${fileName(rng)}`;
    pool.write(rng, abs(rel), fileSize(rng), 0o644);
    added.push(rel);
    ops++;
  }
  for (let i = 0; i < 20; i++) {
    const d = `${rng.pick(dirs)}/rwdir-${i}-${word(rng)}`;
    Deno.mkdirSync(abs(d));
    ops++;
    for (let k = 1 + rng.int(20); k > 0; k--) {
      const rel = `${d}/${fileName(rng)}.${k}`;
      pool.write(rng, abs(rel), rng.int(16384), 0o644);
      added.push(rel);
      ops++;
    }
  }
  for (let i = 0; i < 50; i++) {
    Deno.symlinkSync(`/${rng.pick(added)}`, abs(`${rng.pick(dirs)}/rwlink-${i}`));
    ops++;
  }
  for (let i = 0; i < 20; i++) {
    const src = rng.pick(added);
    Deno.linkSync(abs(src), abs(`${src}.hardlink-${i}`));
    ops++;
  }
  return ops;
}

/** Options of {@linkcode makeTrees}. */
export interface TreeOptions {
  /** Regular files of the rootfs tree (default 30,000). */
  files?: number;
  /** Directories of the rootfs tree (default 3,000). */
  dirs?: number;
  /** Number of big files (default 8). */
  bigCount?: number;
  /** Size of each big file in MiB (default 128). */
  bigMib?: number;
}

/** Where {@linkcode makeTrees} put the trees. */
export interface Trees {
  /** The rootfs-shaped tree. */
  rootfs: string;
  /** The big files. */
  bigfiles: string;
  /**
   * mktree's `aufs-rw` layer over `rootfs` (aufs whiteouts, plain files), or
   * `undefined` when the built-in generator made the trees: then the change
   * set is {@linkcode scriptedChanges}, made through a union mount.
   */
  aufsRw: string | undefined;
  /** Which generator made them. */
  source: "mktree.sh" | "built-in";
}

function missingNote(): void {
  console.log(`${MKTREE} not found: using the built-in deterministic tree generator`);
}

/**
 * Make only the big-files tree, `dir/bigfiles` (default 8 × 128 MiB), with
 * `mktree.sh` or the built-in generator; returns its path.
 *
 * @example
 * ```ts
 * import { makeBigTree } from "./trees.ts";
 * const dir = await Deno.makeTempDir();
 * console.log(await makeBigTree(dir, { bigCount: 1, bigMib: 1 }));
 * ```
 */
export async function makeBigTree(dir: string, opts: TreeOptions = {}): Promise<string> {
  const bigCount = opts.bigCount ?? 8, bigMib = opts.bigMib ?? 128;
  const bigfiles = join(dir, "bigfiles");
  if (hasMktree()) {
    await run(MKTREE, [
      "--big-count",
      `${bigCount}`,
      "--big-mib",
      `${bigMib}`,
      "bigfiles",
      bigfiles,
    ]);
  } else {
    missingNote();
    generateBigFiles(bigfiles, bigCount, bigMib);
  }
  return bigfiles;
}

/**
 * Make the bench trees under `dir`: with `mktree.sh` when it is there
 * (`rootfs`, `bigfiles` and an `aufs-rw` change set), else with the built-in
 * generator (saying so on one line).
 *
 * @example
 * ```ts
 * import { makeTrees } from "./trees.ts";
 * const dir = await Deno.makeTempDir();
 * const trees = await makeTrees(dir, { files: 300, dirs: 30, bigCount: 1, bigMib: 1 });
 * console.log(trees.source);
 * ```
 */
export async function makeTrees(dir: string, opts: TreeOptions = {}): Promise<Trees> {
  const files = opts.files ?? 30000, dirs = opts.dirs ?? 3000;
  const rootfs = join(dir, "rootfs");
  if (hasMktree()) {
    const aufsRw = join(dir, "aufs-rw");
    await run(MKTREE, ["--files", `${files}`, "--dirs", `${dirs}`, "rootfs", rootfs]);
    const bigfiles = await makeBigTree(dir, opts);
    await run(MKTREE, ["--files", `${files}`, "--plain-whiteouts", "aufs-rw", aufsRw, rootfs]);
    return { rootfs, bigfiles, aufsRw, source: "mktree.sh" };
  }
  missingNote();
  generateRootfs(rootfs, { files, dirs });
  const bigfiles = join(dir, "bigfiles");
  generateBigFiles(bigfiles, opts.bigCount ?? 8, opts.bigMib ?? 128);
  return { rootfs, bigfiles, aufsRw: undefined, source: "built-in" };
}
