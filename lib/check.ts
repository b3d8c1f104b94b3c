/**
 * Consistency check of a union driver root (`strata check`): finds layers
 * left incomplete by a crash, chains naming layers that are gone, unions
 * mounted with no reference, references to unions that are not mounted,
 * leftover `*-removing` directories and layer directories no layer owns; with
 * `repair`, fixes what can be fixed without losing data anyone still uses.
 *
 * Every repair of a layer runs under that layer's lock and re-checks the
 * problem first, so an operation running meanwhile in another process is
 * never undone (it holds the lock; its marker is gone when we get it).
 *
 * @module
 */

import { join } from "node:path";
import { Errno, errnoOf } from "../ffi/libc.ts";
import { LayerNotFoundError } from "./errors.ts";
import { compareBytewise, layerIdProblem, REMOVING_SUFFIX, TEMP_SUFFIX } from "./ids.ts";
import { mountpointsUnder } from "./mounts.ts";
import { MountCounts } from "./refcount.ts";
import { atomicRemove, ensureRemoveAll } from "./remove.ts";
import type { UnionDriver } from "./union.ts";
import { TAR_SPLIT_SUFFIX } from "./tar_split_store.ts";
import { imageLeftovers } from "./image/leftovers.ts";
import { rootPair } from "./archive/idmap.ts";
import { describeIncomplete } from "./incomplete.ts";
import { staleTempFiles } from "./atomic_write.ts";
import { staleProbeDirs } from "./overlay/probe.ts";

/**
 * The kinds of problem `checkRoot` reports.
 *
 * @example
 * ```ts
 * import type { Finding, FindingKind } from "../mod.ts";
 * const onlyIncomplete = (fs: Finding[]) => fs.filter((f) => f.kind === ("incomplete" satisfies FindingKind));
 * console.log(onlyIncomplete([]).length);
 * ```
 */
export type FindingKind =
  /** A layer marked incomplete (create, apply or import cut short). */
  | "incomplete"
  /** A layer's chain names a layer that does not exist. */
  | "missing-parent"
  /** A layer's chain file cannot be read or parsed. */
  | "bad-chain"
  /** A union is mounted under `mnt/` but no reference is recorded. */
  | "stale-mount"
  /** References are recorded for a union that is not mounted, or for no layer. */
  | "stale-count"
  /** A `*-removing` directory left by an interrupted removal. */
  | "removing-leftover"
  /** A layer directory (`diff/<id>`, `mnt/<id>`, ...) of no layer. */
  | "orphan-dir"
  /** A tar-split record (`tar-split/<id>.tar-split.gz`) of no layer, or a temp file of one. */
  | "orphan-tar-split"
  /** Under `images/`: a temp blob or record, a partial download, a record of no layer. */
  | "image-leftover"
  /** A layer's own directory (`diff/<id>`, `mnt/<id>`, ...) is missing or not a directory. */
  | "missing-dir"
  /** A layer's chain names itself or one ancestor twice. */
  | "chain-cycle"
  /** A layer's chain disagrees with its parent's (one of the two was truncated or emptied). */
  | "chain-mismatch"
  /** A mount count file that is not a count (garbage, negative, a directory). */
  | "bad-count"
  /** Something not of this driver's filesystem is mounted on `mnt/<id>`. */
  | "foreign-mount"
  /** A lock file of a layer that does not exist. */
  | "stale-lock"
  /** A temp file of an atomic write whose writer was killed. */
  | "temp-file"
  /** A probe scratch dir (maybe with its test mount) of a killed Init. */
  | "probe-leftover"
  /** A backend's entry of a layer that is gone (overlay: a dangling short link in `l/`). */
  | "stray-entry"
  /** A reference taken for one operation by a process that died before releasing it (`refs/`). */
  | "dead-reference";

/**
 * What became of a finding.
 *
 * @example
 * ```ts
 * import type { Finding, RepairState } from "../mod.ts";
 * const left: RepairState[] = ["found", "unsafe", "failed"];
 * const remaining = (fs: Finding[]) => fs.filter((f) => left.includes(f.state));
 * console.log(remaining([]).length);
 * ```
 */
export type RepairState =
  /** Reported only (check without repair). */
  | "found"
  /** Fixed. */
  | "repaired"
  /** Not fixed: fixing it could lose data or break layers (see `detail`). */
  | "unsafe"
  /** The repair was tried and failed (see `detail`). */
  | "failed"
  /** Gone by the time the repair looked again (another process fixed it). */
  | "vanished";

/**
 * One problem found.
 *
 * @example
 * ```ts
 * import { checkRoot, type Finding, OverlayDriver } from "../mod.ts";
 * await using driver = await OverlayDriver.init("/var/lib/strata");
 * const show = (f: Finding) => `${f.state} ${f.kind} ${f.id ?? ""} ${f.path}: ${f.detail}`;
 * for (const f of (await checkRoot(driver)).findings) console.log(show(f));
 * ```
 */
export interface Finding {
  /** What is wrong. */
  kind: FindingKind;
  /** The layer concerned, when there is one. */
  id?: string;
  /** The path concerned. */
  path: string;
  /** What is wrong (and, after a repair attempt, what happened). */
  detail: string;
  /** Whether it was repaired. */
  state: RepairState;
}

/**
 * The outcome of {@linkcode checkRoot}.
 *
 * @example
 * ```ts
 * import { type CheckReport, checkRoot, OverlayDriver } from "../mod.ts";
 * await using driver = await OverlayDriver.init("/var/lib/strata");
 * const report: CheckReport = await checkRoot(driver);
 * console.log(`${report.layers} layers, ${report.findings.length} problems`);
 * ```
 */
export interface CheckReport {
  /** The driver root checked. */
  root: string;
  /** Backend name. */
  driver: string;
  /** Layers seen (complete and incomplete). */
  layers: number;
  /** The problems, in the order the checks ran. */
  findings: Finding[];
  /** True when nothing is left to fix (no findings, or every one repaired or vanished). */
  clean: boolean;
}

/**
 * Options of {@linkcode checkRoot}.
 *
 * @example
 * ```ts
 * import { type CheckOptions, checkRoot, OverlayDriver } from "../mod.ts";
 * await using driver = await OverlayDriver.init("/var/lib/strata");
 * const opts: CheckOptions = { repair: false, onLayer: (n) => console.log(`${n} layers checked`) };
 * console.log((await checkRoot(driver, opts)).clean);
 * ```
 */
export interface CheckOptions {
  /** Fix what is safe (default false: report only). */
  repair?: boolean;
  /** Called after each layer is examined, with the count so far. */
  onLayer?: (done: number) => void;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function namesIn(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort(compareBytewise);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw new Error(`list ${dir}: ${message(e)}`, { cause: e });
  }
}

function pathExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function realPath(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

/**
 * Check the root of `driver`; with `repair`, fix what is safe:
 *
 * - incomplete layer → removed, unless other layers build on it (unsafe);
 * - union mounted with no recorded reference → unmounted (fails if busy);
 * - recorded references without a mount, or for no layer → reset to 0;
 * - `*-removing` directory → deleted;
 * - orphan layer directory → deleted (not when something is mounted there);
 * - tar-split record of no layer, or a temp file of an interrupted apply → deleted.
 *
 * Missing parents and unreadable chains are reported, never repaired: the
 * data they need is gone.
 *
 * @example
 * ```ts
 * import { openDriver, UnionDriver } from "../mod.ts";
 * import { checkRoot } from "./check.ts";
 * const d = await openDriver("overlay", "/var/lib/strata");
 * if (d instanceof UnionDriver) {
 *   const report = await checkRoot(d, { repair: false });
 *   for (const f of report.findings) console.log(f.kind, f.id ?? "", f.detail);
 * }
 * ```
 */
export async function checkRoot(
  driver: UnionDriver,
  opts: CheckOptions = {},
): Promise<CheckReport> {
  const repair = opts.repair ?? false;
  const findings: Finding[] = [];
  const complete = await driver.store.list();
  const incomplete = await driver.store.incomplete();
  const known = new Set([...complete, ...incomplete.map((m) => m.id)]);
  const completeSet = new Set(complete);
  const counts = new MountCounts(join(driver.root, "counts"), (p) => driver.isMounted(p));
  const add = (f: Omit<Finding, "state">): Finding => {
    const finding: Finding = { ...f, state: "found" };
    findings.push(finding);
    return finding;
  };

  let done = 0;
  const chains = new Map<string, string[]>();
  for (const id of [...known].sort(compareBytewise)) {
    try {
      chains.set(id, await driver.store.parents(id));
    } catch (e) {
      if (!(e instanceof LayerNotFoundError)) {
        const f = add({ kind: "bad-chain", id, path: driver.store.fileOf(id), detail: message(e) });
        if (repair) refuse(f, "which ancestors it had is lost");
      }
    }
    opts.onLayer?.(++done);
  }

  // Chains naming layers that are gone.
  for (const [id, chain] of chains) {
    const missing = chain.filter((p) => !completeSet.has(p));
    if (missing.length === 0) continue;
    const gone = missing.filter((p) => !known.has(p));
    const what = gone.length > 0
      ? `ancestor(s) ${gone.join(", ")} do not exist`
      : `ancestor(s) ${missing.join(", ")} are incomplete`;
    const f = add({ kind: "missing-parent", id, path: driver.store.fileOf(id), detail: what });
    if (repair) refuse(f, "the layer cannot be rebuilt without them");
  }

  await checkLayerShape(driver, chains, completeSet, repair, add);

  // Incomplete layers. One whose lock is held is being worked on right now
  // (an apply in another process): not a problem, unless repair waits it out.
  for (const { id, why } of incomplete) {
    if (!repair && driver.isLayerBusy(id)) continue;
    const f = add({
      kind: "incomplete",
      id,
      path: join(driver.store.incompleteDir, id),
      detail: `${describeIncomplete(why)} (\`check --repair\` removes it)`,
    });
    if (repair) await repairIncomplete(driver, f, id);
  }

  // References of processes killed between get and put.
  for (const { id, path } of driver.refs.dead()) {
    const f = add({
      kind: "dead-reference",
      id,
      path,
      detail: `a reference taken for one operation by process ${
        path.slice(path.lastIndexOf("/") + 1).split(".")[0]
      }, which is gone`,
    });
    if (repair) await repairDeadReference(driver, f, id, path, known.has(id));
  }

  // Mounts under mnt/ with no reference recorded.
  const mntDir = join(driver.root, "mnt");
  const mntReal = realPath(mntDir);
  for (const mp of mountpointsUnder(mntDir, driver.procRoot)) {
    const slash = mp.lastIndexOf("/");
    if (mp.slice(0, slash) !== mntReal) continue; // the root itself, or mounts inside a union
    const name = mp.slice(slash + 1);
    const path = join(mntDir, name);
    const isLayer = known.has(name);
    if (!driver.isMounted(path)) {
      // Not a union of this driver: strata did not mount it, so it never unmounts it.
      const f = add({
        kind: "foreign-mount",
        id: isLayer ? name : undefined,
        path,
        detail: "something that is not a " + driver.name + " union is mounted here",
      });
      if (repair) refuse(f, "strata did not mount it; unmount it yourself");
      continue;
    }
    if (isLayer && (await counts.get(name, null)) > 0) continue;
    if (!repair && layerIdProblem(name) === undefined && driver.isLayerBusy(name)) continue;
    const f = add({
      kind: "stale-mount",
      id: isLayer ? name : undefined,
      path,
      detail: isLayer
        ? "mounted, but no reference is recorded (left by a crash, or mounted by hand)"
        : "mounted, but no layer has this name",
    });
    if (repair) await repairStaleMount(driver, counts, f, name, path);
  }

  // References recorded for unions that are not mounted, or for no layer.
  for (const name of namesIn(join(driver.root, "counts"))) {
    if (layerIdProblem(name) !== undefined) continue; // temp files of the count writer
    const bad = await counts.problem(name);
    if (bad !== undefined) {
      const chain = chains.get(name);
      const f = add({
        kind: "bad-count",
        id: name,
        path: join(driver.root, "counts", name),
        detail: bad,
      });
      if (repair) {
        const mountPath = chain !== undefined && chain.length > 0 ? driver.mountDir(name) : null;
        await attempt(f, () => driver.withLayerLock(name, () => counts.rebuild(name, mountPath)));
        if (f.state === "repaired") f.detail += "; rebuilt from the mount table";
      }
      continue;
    }
    const stored = await counts.get(name, null);
    if (stored === 0) continue;
    const chain = chains.get(name);
    if (chain !== undefined && chain.length === 0) continue; // base layers are never mounted
    const path = driver.mountDir(name);
    if (chain !== undefined && driver.isMounted(path)) continue;
    const f = add({
      kind: "stale-count",
      id: name,
      path: join(driver.root, "counts", name),
      detail: chain === undefined
        ? `${stored} reference(s) recorded for a layer that does not exist`
        : `${stored} reference(s) recorded but ${path} is not mounted`,
    });
    if (repair) await repairStaleCount(driver, counts, f, name);
  }

  // Leftovers of removals, and layer directories without a layer.
  for (const dirName of ["mnt", "diff", ...driver.backend.layerDirs]) {
    const dir = join(driver.root, dirName);
    for (const name of namesIn(dir)) {
      const path = join(dir, name);
      if (name.endsWith(REMOVING_SUFFIX)) {
        const f = add({
          kind: "removing-leftover",
          path,
          detail: "left by a removal that did not finish",
        });
        if (repair) await attempt(f, () => ensureRemoveAll(driver.libc, path, driver.procRoot));
        continue;
      }
      if (layerIdProblem(name) !== undefined || known.has(name)) continue;
      const f = add({ kind: "orphan-dir", path, detail: "no layer owns this directory" });
      if (repair) await repairOrphan(driver, f, name, path);
    }
  }

  // tar-split records without a layer, and temp files of applies cut short.
  // (A temp record beside an incomplete layer is part of it: removing the layer removes it.)
  const { records, temps, other } = driver.tarSplit.list();
  const incompleteIds = new Set(incomplete.map((m) => m.id));
  const orphans = [
    ...records.filter((id) => !completeSet.has(id) && !incompleteIds.has(id)).map((id) => ({
      id,
      name: id + TAR_SPLIT_SUFFIX,
      detail: "tar-split record of no layer",
    })),
    ...temps.filter((id) => !incompleteIds.has(id)).map((id) => ({
      id,
      name: id + TAR_SPLIT_SUFFIX + TEMP_SUFFIX,
      detail: "temp tar-split record left by an apply that did not finish",
    })),
  ];
  for (const { id, name, detail } of orphans) {
    const path = join(driver.tarSplit.dir, name);
    const f = add({ kind: "orphan-tar-split", path, detail });
    if (repair) await repairOrphanRecord(driver, f, id, path);
  }
  for (const name of other) {
    const path = join(driver.tarSplit.dir, name);
    const f = add({ kind: "orphan-tar-split", path, detail: "not a tar-split record" });
    if (repair) await attempt(f, () => Deno.remove(path, { recursive: true }));
  }

  for (const { path, detail } of imageLeftovers(driver.root, completeSet)) {
    const f = add({ kind: "image-leftover", path, detail });
    if (repair) await attempt(f, () => Deno.remove(path, { recursive: true }));
  }

  await checkLeftovers(driver, known, add, repair);

  const clean = findings.every((f) => f.state === "repaired" || f.state === "vanished");
  return { root: driver.root, driver: driver.name, layers: known.size, findings, clean };
}

function refuse(f: Finding, why: string): void {
  f.state = "unsafe";
  f.detail += `; not repaired: ${why}`;
}

async function attempt(f: Finding, fix: () => Promise<void>): Promise<void> {
  try {
    await fix();
    f.state = "repaired";
  } catch (e) {
    f.state = "failed";
    f.detail += `; repair failed: ${message(e)}`;
  }
}

async function stillIncomplete(driver: UnionDriver, id: string): Promise<boolean> {
  return (await driver.store.incomplete()).some((m) => m.id === id);
}

async function repairIncomplete(driver: UnionDriver, f: Finding, id: string): Promise<void> {
  const children = await driver.store.children(id);
  if (children.length > 0) {
    f.state = "unsafe";
    f.detail += `; not removed: ${children.join(", ")} build on it`;
    return;
  }
  // Wait for whoever may still work on it; a live operation clears its marker before unlocking.
  const stale = await driver.withLayerLock(id, () => stillIncomplete(driver, id));
  if (!stale) {
    f.state = "vanished";
    return;
  }
  await attempt(f, () => driver.remove(id));
  if (f.state === "repaired") f.detail += "; removed";
}

async function repairDeadReference(
  driver: UnionDriver,
  f: Finding,
  id: string,
  path: string,
  isLayer: boolean,
): Promise<void> {
  try {
    const done = isLayer && layerIdProblem(id) === undefined
      ? await driver.dropDeadReference(id, path)
      : (await driver.refs.removeRecord(id, path), true);
    f.state = done ? "repaired" : "vanished";
    if (done) f.detail += "; reference released";
  } catch (e) {
    f.state = "failed";
    f.detail += `; repair failed: ${message(e)}`;
  }
}

async function repairStaleMount(
  driver: UnionDriver,
  counts: MountCounts,
  f: Finding,
  name: string,
  path: string,
): Promise<void> {
  const unmount = async () => {
    if (!driver.isMounted(path)) return false;
    if (layerIdProblem(name) === undefined && (await counts.get(name, null)) > 0) return false;
    await driver.backend.unmount(path);
    if (mountpointsUnder(path, driver.procRoot).includes(realPath(path))) {
      throw new Error(`${path} is still mounted after the unmount (another mount under it)`);
    }
    return true;
  };
  try {
    const did = layerIdProblem(name) === undefined
      ? await driver.withLayerLock(name, unmount)
      : await unmount();
    f.state = did ? "repaired" : "vanished";
    if (did) f.detail += "; unmounted";
  } catch (e) {
    f.state = "failed";
    const busy = errnoOf(e) === Errno.EBUSY ? " (in use: stop its users, then retry)" : "";
    f.detail += `; unmount failed${busy}: ${message(e)}`;
  }
}

async function repairStaleCount(
  driver: UnionDriver,
  counts: MountCounts,
  f: Finding,
  name: string,
): Promise<void> {
  await attempt(f, async () => {
    await driver.withLayerLock(name, async () => {
      if (driver.isMounted(driver.mountDir(name))) return;
      await counts.reset(name);
    });
  });
  if (f.state === "repaired") f.detail += "; reset to 0";
}

async function repairOrphanRecord(
  driver: UnionDriver,
  f: Finding,
  id: string,
  path: string,
): Promise<void> {
  const remove = async () => {
    if (await stillIncomplete(driver, id)) return false;
    if (!path.endsWith(TEMP_SUFFIX) && await driver.store.exists(id)) return false;
    if (!pathExists(path)) return false;
    await Deno.remove(path);
    return true;
  };
  try {
    const removed = layerIdProblem(id) === undefined
      ? await driver.withLayerLock(id, remove)
      : await remove();
    f.state = removed ? "repaired" : "vanished";
    if (removed) f.detail += "; removed";
  } catch (e) {
    f.state = "failed";
    f.detail += `; repair failed: ${message(e)}`;
  }
}

async function repairOrphan(
  driver: UnionDriver,
  f: Finding,
  name: string,
  path: string,
): Promise<void> {
  if (mountpointsUnder(path, driver.procRoot).length > 0) {
    f.state = "unsafe";
    f.detail += "; not removed: something is mounted there";
    return;
  }
  try {
    const removed = await driver.withLayerLock(name, async () => {
      if (await driver.store.exists(name) || await stillIncomplete(driver, name)) return false;
      if (!pathExists(path)) return false;
      await atomicRemove(driver.libc, path, driver.procRoot);
      return true;
    });
    f.state = removed ? "repaired" : "vanished";
    if (removed) f.detail += "; removed";
  } catch (e) {
    f.state = "failed";
    f.detail += `; repair failed: ${message(e)}`;
  }
}

// ------------------------------------------------------------ layer shape (issue 9 item 7)

type AddFinding = (f: Omit<Finding, "state">) => Finding;

function sameChain(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function startsWith(long: readonly string[], short: readonly string[]): boolean {
  return short.length <= long.length && short.every((x, i) => x === long[i]);
}

/**
 * The checks of a layer's own shape: its directories are there (and real
 * directories), its chain has no cycle, and its chain agrees with its
 * parent's (chain = [parent, ...chain of parent]). With `repair`, a missing
 * `mnt/<id>` or backend dir (empty by nature) is made again, and a chain that
 * is a truncated copy of what its child or parent records is completed from
 * it; a missing `diff/<id>` (the layer's files) and cycles cannot be repaired.
 */
async function checkLayerShape(
  driver: UnionDriver,
  chains: Map<string, string[]>,
  completeSet: Set<string>,
  repair: boolean,
  add: AddFinding,
): Promise<void> {
  const cyclic = new Set<string>();
  for (const [id, chain] of chains) {
    let why: string | undefined;
    if (chain.includes(id)) why = "its chain names the layer itself";
    else if (new Set(chain).size !== chain.length) why = "its chain names an ancestor twice";
    else {
      // Parents' parents, by each layer's own file: a loop that no single chain shows.
      const seen = [id];
      for (let p: string | undefined = chain[0]; p !== undefined; p = chains.get(p)?.[0]) {
        if (p === id) {
          why = `its parents lead back to it: ${[...seen, id].join(" <- ")}`;
          break;
        }
        if (seen.includes(p)) break; // a loop further up: reported on its own layers
        seen.push(p);
      }
    }
    if (why === undefined) continue;
    cyclic.add(id);
    const f = add({
      kind: "chain-cycle",
      id,
      path: driver.store.fileOf(id),
      detail: `${why} (${chain.join(" <- ")})`,
    });
    if (repair) refuse(f, "which ancestors it really has is unknown");
  }

  for (const id of completeSet) await checkLayerDirs(driver, id, repair, add);

  const fixed = new Set<string>();
  for (const [id, chain] of chains) {
    if (chain.length === 0 || cyclic.has(id) || fixed.has(id)) continue;
    const parent = chain[0];
    const parentChain = chains.get(parent);
    if (parentChain === undefined || cyclic.has(parent) || fixed.has(parent)) continue;
    const recorded = chain.slice(1);
    if (sameChain(recorded, parentChain)) continue;
    // Which side lost entries: a truncated (or emptied) file keeps a prefix of its chain.
    let target: string, want: string[], detail: string;
    if (startsWith(recorded, parentChain)) {
      target = parent;
      want = recorded;
      detail = `its chain (${parentChain.length} ancestor(s)) is shorter than what its child ` +
        `${id} records (${recorded.join(" <- ")}): truncated or emptied`;
    } else if (startsWith(parentChain, recorded)) {
      target = id;
      want = [parent, ...parentChain];
      detail = `its chain is shorter than its parent ${parent}'s (${want.join(" <- ")}): truncated`;
    } else {
      const f = add({
        kind: "chain-mismatch",
        id,
        path: driver.store.fileOf(id),
        detail: `its chain (${chain.join(" <- ")}) disagrees with its parent ${parent}'s (${
          parentChain.join(" <- ") || "a base layer"
        })`,
      });
      if (repair) refuse(f, "which of the two is right is unknown");
      continue;
    }
    const f = add({
      kind: "chain-mismatch",
      id: target,
      path: driver.store.fileOf(target),
      detail,
    });
    if (!repair) continue;
    if (want.includes(target) || new Set(want).size !== want.length) {
      refuse(f, "the completed chain would hold a cycle");
      continue;
    }
    if (want.some((p) => !completeSet.has(p))) {
      refuse(f, "an ancestor it should name does not exist");
      continue;
    }
    const before = chains.get(target) ?? [];
    await attempt(f, () =>
      driver.withLayerLock(target, async () => {
        const now = await driver.store.parents(target);
        if (!sameChain(now, before)) throw new Error("the chain changed meanwhile; check again");
        await driver.store.write(target, want);
      }));
    if (f.state === "repaired") {
      f.detail += `; rewritten as ${want.join(" <- ")}`;
      fixed.add(target);
      chains.set(target, want);
    }
  }
}

/** `diff/<id>`, `mnt/<id>` and the backend's dirs of a complete layer must be directories. */
async function checkLayerDirs(
  driver: UnionDriver,
  id: string,
  repair: boolean,
  add: AddFinding,
): Promise<void> {
  const dirs: [string, boolean][] = [
    [driver.diffDir(id), false],
    [driver.mountDir(id), true],
    ...driver.backend.layerDirs.map((d): [string, boolean] => [driver.layerDir(d, id), true]),
  ];
  for (const [path, empty] of dirs) {
    let st: Deno.FileInfo | undefined;
    try {
      st = Deno.lstatSync(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (st?.isDirectory) continue;
    const f = add({
      kind: "missing-dir",
      id,
      path,
      detail: st === undefined
        ? "the layer's directory is missing"
        : "the layer's directory is not a directory (left alone: strata follows no links)",
    });
    if (!repair) continue;
    if (st !== undefined) {
      refuse(f, "something else is there; move it away, then check again");
    } else if (!empty) {
      refuse(f, "the layer's files are gone: remove the layer");
    } else {
      await attempt(f, () =>
        driver.withLayerLock(id, async () => {
          const owner = rootPair(driver);
          await Deno.mkdir(path, { mode: 0o755 });
          await Deno.chown(path, owner.uid, owner.gid);
        }));
      if (f.state === "repaired") f.detail += "; made again (it holds nothing of its own)";
    }
  }
}

/**
 * Leftovers that belong to no layer: lock files of layers that are gone,
 * temp files of atomic writes whose writer was killed, and probe scratch
 * dirs (and their test mounts) of a killed Init. Held locks, temp files and
 * probe dirs belong to live processes and are not reported.
 */
async function checkLeftovers(
  driver: UnionDriver,
  known: ReadonlySet<string>,
  add: (f: Omit<Finding, "state">) => Finding,
  repair: boolean,
): Promise<void> {
  const locks = join(driver.root, "locks");
  for (const name of namesIn(locks)) {
    if (layerIdProblem(name) !== undefined || known.has(name)) continue;
    if (driver.isLayerBusy(name)) continue;
    const path = join(locks, name);
    const f = add({ kind: "stale-lock", id: name, path, detail: "lock file of no layer" });
    // Taking the lock of a layer that is not there deletes its file on release.
    if (repair) await attempt(f, () => driver.withLayerLock(name, () => Promise.resolve()));
  }
  const metaDirs = [driver.root, driver.store.layersDir, driver.store.incompleteDir];
  for (const dir of [...metaDirs, join(driver.root, "counts")]) {
    // With repair, each is deleted as it is found free (a live writer holds its lock).
    for (const path of staleTempFiles(dir, { remove: repair })) {
      const f = add({ kind: "temp-file", path, detail: "temp file of a write that was cut short" });
      if (repair) f.state = "repaired";
    }
  }
  const stray = driver.backend.strayEntries?.() ?? [];
  const swept = repair && stray.length > 0
    ? new Set(driver.backend.sweepStrayEntries?.() ?? [])
    : new Set<string>();
  for (const path of stray) {
    const f = add({
      kind: "stray-entry",
      path,
      detail: `${driver.name} entry of a layer that is gone`,
    });
    if (repair) {
      f.state = swept.has(path) ? "repaired" : "vanished";
      if (f.state === "repaired") f.detail += "; removed";
    }
  }
  const probes = await staleProbeDirs(driver.libc, driver.root, { procRoot: driver.procRoot });
  for (const path of probes) {
    const mounted = mountpointsUnder(path, driver.procRoot).length > 0;
    const f = add({
      kind: "probe-leftover",
      path,
      detail: `scratch dir of an Init that was killed${
        mounted ? ", its test mount still mounted" : ""
      }`,
    });
    if (repair) await attempt(f, () => ensureRemoveAll(driver.libc, path, driver.procRoot));
  }
}
