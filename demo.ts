/**
 * The strata demo (`deno task demo`, as root): builds a three-layer stack in a
 * temporary root, mounts it, shows the merged view and the changes, exports
 * every layer as a tar, re-applies the tars to a fresh chain, proves the two
 * merged trees identical, then unmounts and removes everything — timing each
 * step and cleaning up even when interrupted (Ctrl-C).
 *
 * Not root: it says so and exits 1 without touching anything.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  type Driver,
  effectiveUid,
  FfiPermissionError,
  openDriver,
  readTextFileViaLibc,
} from "./mod.ts";

const encoder = new TextEncoder();

/** Deterministic bytes (mulberry32), so every run builds the same trees. */
function pseudoRandom(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed >>> 0;
  for (let i = 0; i < length; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (t ^ (t >>> 14)) & 0xff;
  }
  return out;
}

/** One entry of a tree, as compared between the original and the re-applied stack. */
interface Entry {
  path: string;
  type: "dir" | "file" | "symlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  /** sha256 of a file's content. */
  sha256?: string;
  size?: number;
  /** A symlink's target. */
  target?: string;
  /** Other paths of the tree sharing this file's inode (hard links). */
  links?: string[];
}

/** Walk `root` (not following symlinks) into a sorted manifest. */
async function manifest(root: string): Promise<Entry[]> {
  const entries: Entry[] = [];
  const byInode = new Map<string, string[]>();
  const inodeOf = new Map<Entry, string>();
  const walk = async (rel: string) => {
    const names: string[] = [];
    for await (const e of Deno.readDir(join(root, rel))) names.push(e.name);
    names.sort();
    for (const name of names) {
      const path = rel ? `${rel}/${name}` : name;
      const full = join(root, path);
      const st = await Deno.lstat(full);
      const entry: Entry = {
        path: "/" + path,
        type: st.isDirectory ? "dir" : st.isFile ? "file" : st.isSymlink ? "symlink" : "other",
        mode: (st.mode ?? 0) & 0o7777,
        uid: st.uid ?? -1,
        gid: st.gid ?? -1,
      };
      if (st.isFile) {
        const data = await Deno.readFile(full);
        entry.sha256 = createHash("sha256").update(data).digest("hex");
        entry.size = data.length;
        if ((st.nlink ?? 1) > 1) {
          const key = `${st.dev}:${st.ino}`;
          byInode.set(key, [...(byInode.get(key) ?? []), entry.path]);
          inodeOf.set(entry, key);
        }
      }
      if (st.isSymlink) entry.target = await Deno.readLink(full);
      entries.push(entry);
      if (st.isDirectory) await walk(path);
    }
  };
  await walk("");
  // Each hard-linked entry lists the other members of its group.
  for (const [e, key] of inodeOf) {
    e.links = byInode.get(key)!.filter((p) => p !== e.path).sort();
  }
  return entries;
}

/** The manifest as one comparable string per entry. */
function describe(e: Entry): string {
  const parts = [e.path, e.type, e.mode.toString(8), `${e.uid}:${e.gid}`];
  if (e.sha256) parts.push(`sha256:${e.sha256}`, `${e.size}B`);
  if (e.target !== undefined) parts.push(`-> ${e.target}`);
  if (e.links?.length) parts.push(`links=${e.links.join(",")}`);
  return parts.join(" ");
}

function modeString(e: Entry): string {
  const t = e.type === "dir" ? "d" : e.type === "symlink" ? "l" : e.type === "file" ? "-" : "?";
  const bits = "rwxrwxrwx";
  const chars = [...bits].map((c, i) => (e.mode & (1 << (8 - i)) ? c : "-"));
  if (e.mode & 0o4000) chars[2] = chars[2] === "x" ? "s" : "S";
  if (e.mode & 0o2000) chars[5] = chars[5] === "x" ? "s" : "S";
  if (e.mode & 0o1000) chars[8] = chars[8] === "x" ? "t" : "T";
  return t + chars.join("");
}

/** Write the base layer's content under `dir`. */
async function writeBase(dir: string): Promise<void> {
  const file = (p: string, data: Uint8Array | string, mode = 0o644) =>
    Deno.writeFile(join(dir, p), typeof data === "string" ? encoder.encode(data) : data, { mode });
  for (const d of ["etc", "usr/bin", "usr/share/doc", "var/lib/app", "opt/tool/plugins", "tmp"]) {
    await Deno.mkdir(join(dir, d), { recursive: true, mode: 0o755 });
  }
  await Deno.chmod(join(dir, "tmp"), 0o1777);
  await file("etc/config", "mode=production\nworkers=4\n");
  await file("etc/hostname", "strata-demo\n");
  await file("usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755);
  await file("usr/share/doc/README", pseudoRandom(1, 3000));
  await file("var/lib/app/data.bin", pseudoRandom(2, 64 * 1024), 0o600);
  await file("opt/tool/plugins/a.so", pseudoRandom(3, 4096), 0o755);
  await file("opt/tool/VERSION", "1.0\n");
  await file("tmp/delete-me", "this file is deleted by the middle layer\n");
  await Deno.link(join(dir, "usr/bin/tool"), join(dir, "usr/bin/tool-alias"));
  await Deno.symlink("usr/bin", join(dir, "bin"));
  await Deno.symlink("/etc/hostname", join(dir, "etc/name-link"));
  await Deno.symlink("../share/doc/README", join(dir, "usr/bin/readme"));
}

/** The middle layer: modify a file, delete another, replace a directory. */
async function changeMiddle(dir: string): Promise<void> {
  await Deno.writeTextFile(join(dir, "etc/config"), "mode=staging\nworkers=8\ndebug=true\n");
  await Deno.remove(join(dir, "tmp/delete-me"));
  await Deno.remove(join(dir, "opt/tool"), { recursive: true });
  await Deno.mkdir(join(dir, "opt/tool/bin"), { recursive: true, mode: 0o755 });
  await Deno.writeTextFile(join(dir, "opt/tool/VERSION"), "2.0\n");
  await Deno.writeFile(join(dir, "opt/tool/bin/tool2"), pseudoRandom(4, 2048), { mode: 0o755 });
}

/** The top (read-write) layer: what a container would write. */
async function changeTop(dir: string): Promise<void> {
  await Deno.mkdir(join(dir, "home/user"), { recursive: true, mode: 0o750 });
  await Deno.writeTextFile(join(dir, "home/user/notes.txt"), "written in the top layer\n");
  await Deno.writeTextFile(join(dir, "var/lib/app/state"), "running\n");
}

/** Step timings, printed at the end. */
const timings: [string, number][] = [];

async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const result = await fn();
  const ms = performance.now() - t0;
  timings.push([name, ms]);
  console.log(`  ${name.padEnd(44)} ${ms.toFixed(1).padStart(8)} ms`);
  return result;
}

function currentUid(): number | undefined {
  try {
    return effectiveUid();
  } catch {
    return undefined;
  }
}

/** Mountpoints at or under `dir`, from the mount table. */
function mountsUnder(dir: string): string[] {
  const real = Deno.realPathSync(dir);
  return readTextFileViaLibc("/proc/self/mountinfo").split("\n")
    .map((line) => line.split(" ")[4])
    .filter((mp) => mp !== undefined)
    .map((mp) => mp.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))))
    .filter((mp) => mp === real || mp.startsWith(real + "/"));
}

/** What the demo made, so that cleanup (normal or on a signal) can undo it. */
interface Made {
  tempDir?: string;
  driver?: Driver;
  /** Layers created, in order. */
  layers: string[];
  /** Layers with a reference taken by `get`. */
  held: string[];
  /** Set once cleanup began: no new layers or mounts from then on. */
  stopping?: boolean;
}

/**
 * Undo everything: drop references, remove layers (newest first), unmount
 * what is left, then delete the temporary root — but never while anything
 * is still mounted under it (deleting would reach into the mounts).
 */
async function cleanUp(made: Made, log: (s: string) => void): Promise<boolean> {
  const { driver, tempDir } = made;
  made.stopping = true;
  let ok = true;
  if (driver) {
    for (const id of made.held.splice(0).reverse()) {
      await driver.put(id).catch((e) => log(`put ${id}: ${e.message}`));
    }
    for (const id of made.layers.splice(0).reverse()) {
      await driver.remove(id).catch((e) => {
        ok = false;
        log(`remove ${id}: ${e.message}`);
      });
    }
    await driver.cleanup().catch((e) => {
      ok = false;
      log(`cleanup: ${e.message}`);
    });
  }
  if (tempDir) {
    let left: string[] = [];
    try {
      left = mountsUnder(tempDir);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        log(`not deleting ${tempDir}: cannot read the mount table: ${(e as Error).message}`);
        return false;
      }
    }
    if (left.length > 0) {
      log(`not deleting ${tempDir}: still mounted: ${left.join(", ")}`);
      return false;
    }
    await Deno.remove(tempDir, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) {
        ok = false;
        log(`delete ${tempDir}: ${e.message}`);
      }
    });
    made.tempDir = undefined;
  }
  return ok;
}

async function exportDiff(driver: Driver, id: string, parent: string, file: string) {
  const out = await Deno.open(file, { write: true, create: true, truncate: true });
  await (await driver.diff(id, parent)).pipeTo(out.writable);
  return (await Deno.stat(file)).size;
}

async function applyFile(driver: Driver, id: string, parent: string, file: string) {
  const input = await Deno.open(file);
  return await driver.applyDiff(id, parent, input.readable);
}

function formatBytes(n: number): string {
  return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`;
}

async function run(made: Made): Promise<number> {
  const tempDir = await Deno.makeTempDir({ prefix: "strata-demo-" });
  made.tempDir = tempDir;
  const root = join(tempDir, "root");
  const tars = join(tempDir, "tars");
  await Deno.mkdir(tars);

  console.log("strata demo: build, mount, diff and re-apply a three-layer stack");
  const driver = await step("open driver (auto)", () => openDriver("auto", root));
  made.driver = driver;
  console.log(`  backend ${driver.name}, root ${root}`);

  const stillRunning = () => {
    if (made.stopping) throw new Error("interrupted");
  };
  const create = async (id: string, parent: string, rw = false) => {
    stillRunning();
    made.layers.push(id);
    if (rw) await driver.createReadWrite(id, parent);
    else await driver.create(id, parent);
  };
  const get = async (id: string) => {
    stillRunning();
    const path = await driver.get(id);
    made.held.push(id);
    return path;
  };
  const put = async (id: string) => {
    made.held.splice(made.held.lastIndexOf(id), 1);
    await driver.put(id);
  };

  await step("base: create, write files/links/dirs", async () => {
    await create("base", "");
    await writeBase(await get("base"));
    await put("base");
  });
  await step("middle: modify, delete, replace a dir", async () => {
    await create("middle", "base");
    await changeMiddle(await get("middle"));
    await put("middle");
  });
  const top = await step("top (read-write): create and mount", async () => {
    await create("top", "middle", true);
    const path = await get("top");
    await changeTop(path);
    return path;
  });

  const view = await step("read the merged view", () => manifest(top));
  console.log(`\nmerged view of top (${top}):`);
  for (const e of view) {
    const size = e.size === undefined ? "" : String(e.size);
    const extra = e.target !== undefined
      ? ` -> ${e.target}`
      : e.links?.length
      ? ` (hard link: ${e.links.join(", ")})`
      : "";
    console.log(`  ${modeString(e)} ${size.padStart(6)}  ${e.path}${extra}`);
  }
  console.log();

  for (const [id, parent] of [["middle", "base"], ["top", "middle"]]) {
    const changes = await step(
      `changes ${id} (against ${parent})`,
      () => driver.changes(id, parent),
    );
    for (const c of changes) {
      console.log(`      ${{ add: "A", modify: "C", delete: "D" }[c.kind]} ${c.path}`);
    }
  }

  const chain: [string, string][] = [["base", ""], ["middle", "base"], ["top", "middle"]];
  for (const [id, parent] of chain) {
    const size = await step(
      `export diff ${id}`,
      () => exportDiff(driver, id, parent, join(tars, `${id}.tar`)),
    );
    console.log(`      ${id}.tar: ${formatBytes(size)}`);
  }

  for (const [id, parent] of chain) {
    const copy = `${id}2`;
    const copyParent = parent ? `${parent}2` : "";
    const size = await step(`apply ${id}.tar to ${copy}`, async () => {
      await create(copy, copyParent, id === "top");
      return await applyFile(driver, copy, copyParent, join(tars, `${id}.tar`));
    });
    console.log(`      ${copy}: size ${formatBytes(size)}`);
  }

  const top2 = await step("mount top2", () => get("top2"));
  const [a, b] = await step(
    "compare the merged trees",
    async () => [await manifest(top), await manifest(top2)],
  );
  const left = a.map(describe), right = b.map(describe);
  const differences = [
    ...left.filter((x) => !right.includes(x)).map((x) => `only in top:  ${x}`),
    ...right.filter((x) => !left.includes(x)).map((x) => `only in top2: ${x}`),
  ];
  const digest = createHash("sha256").update(left.join("\n")).digest("hex").slice(0, 16);
  if (differences.length > 0) {
    console.log(`\nmerged trees DIFFER (${differences.length} entries):`);
    for (const d of differences) console.log(`  ${d}`);
  } else {
    console.log(
      `\nmerged trees identical: ${a.length} entries (content hashes, modes, owners, link targets, hard links), manifest ${digest}\n`,
    );
  }

  const count = made.layers.length;
  await step("unmount, remove layers, delete the root", async () => {
    if (!(await cleanUp(made, (s) => console.error(`demo: ${s}`)))) {
      throw new Error("cleanup did not finish (see above)");
    }
  });
  console.log(`  removed ${count} layers; nothing left under ${tempDir}`);

  const total = timings.reduce((s, [, ms]) => s + ms, 0);
  console.log(`\n${timings.length} steps, ${total.toFixed(0)} ms in all, backend ${driver.name}`);
  return differences.length === 0 ? 0 : 1;
}

/**
 * Run the demo; resolves to the exit status.
 *
 * @example
 * ```ts
 * import { demo } from "./demo.ts";
 * Deno.exit(await demo());
 * ```
 */
export async function demo(): Promise<number> {
  const uid = currentUid();
  if (uid !== undefined && uid !== 0) {
    console.error(
      `demo: must run as root (effective uid ${uid}): it mounts filesystems. Nothing was touched.`,
    );
    return 1;
  }
  try {
    readTextFileViaLibc("/proc/self/mountinfo");
  } catch (e) {
    if (e instanceof FfiPermissionError) {
      console.error(
        "demo: run it with --allow-ffi (`deno task demo`): strata reaches the kernel through libc. " +
          "Nothing was touched.",
      );
      return 1;
    }
  }
  const made: Made = { layers: [], held: [] };
  let interrupted: Promise<never> | undefined;
  const onSignal = (signal: Deno.Signal) => () => {
    interrupted ??= (async () => {
      console.error(`\ndemo: ${signal}: cleaning up`);
      const ok = await cleanUp(made, (s) => console.error(`demo: ${s}`));
      console.error(ok ? "demo: cleaned up" : "demo: cleanup incomplete (see above)");
      Deno.exit(130);
    })();
  };
  const signals: [Deno.Signal, () => void][] = [["SIGINT", onSignal("SIGINT")], [
    "SIGTERM",
    onSignal("SIGTERM"),
  ]];
  for (const [s, h] of signals) Deno.addSignalListener(s, h);
  try {
    return await run(made);
  } catch (e) {
    if (interrupted) await interrupted; // the signal handler exits
    console.error(`demo: ${(e as Error).message}`);
    return 1;
  } finally {
    if (!interrupted) await cleanUp(made, (s) => console.error(`demo: ${s}`));
    for (const [s, h] of signals) Deno.removeSignalListener(s, h);
  }
}

if (import.meta.main) Deno.exit(await demo());
