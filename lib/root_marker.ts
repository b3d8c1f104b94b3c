/**
 * What makes a directory strata's root: a marker file, `strata.json`, written
 * when strata makes the root (or adopts an existing containers/storage aufs
 * root on request). A directory without it is never changed: not laid out,
 * not swept, not repaired, not bind-mounted. `/` and other system
 * directories are refused whatever they contain.
 *
 * The marker is JSON and extensible: besides its format version and the
 * driver that made the root, it caches the results of Init's kernel probes
 * per kernel release, so that opening a root needs neither a test mount nor
 * free space. Fields this version does not know are kept when it rewrites
 * the file.
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { isTempName, writeFileAtomic } from "./atomic_write.ts";
import { NotStrataRootError } from "./errors.ts";
import { REMOVING_SUFFIX } from "./ids.ts";
import { granted } from "./permissions.ts";
import { readTextFileViaLibc } from "../ffi/libc.ts";

/**
 * File name of the marker in the root.
 *
 * @example
 * ```ts
 * import { MARKER_NAME } from "../mod.ts";
 * console.log(`/var/lib/strata/${MARKER_NAME}`); // the file that says a root is strata's
 * ```
 */
export const MARKER_NAME = "strata.json";
/** The value of the marker's `format` field. */
export const MARKER_FORMAT = "strata-root";
/** The marker format this version writes, and the newest it opens. */
export const MARKER_VERSION = 1;

/**
 * The cached outcome of one backend's Init probes on one kernel release.
 *
 * @example
 * ```ts
 * import { type ProbeRecord, readMarker } from "../mod.ts";
 * const probes = readMarker("/var/lib/strata")?.probes ?? {};
 * for (const [release, byBackend] of Object.entries(probes)) {
 *   const rec: ProbeRecord | undefined = byBackend["overlay"];
 *   console.log(release, rec?.backingFs, rec?.results);
 * }
 * ```
 */
export interface ProbeRecord {
  /** Backing filesystem of the root when probed. */
  backingFs: string;
  /** Backend-specific results, e.g. `{ dtype: true, mount: true }`. */
  results: Record<string, unknown>;
}

/**
 * The content of `strata.json`.
 *
 * @example
 * ```ts
 * import { readMarker, type RootMarker } from "../mod.ts";
 * const marker: RootMarker | undefined = readMarker("/var/lib/strata");
 * console.log(marker ? `${marker.driver} root, format ${marker.version}` : "not a strata root");
 * ```
 */
export interface RootMarker {
  /** Always {@linkcode MARKER_FORMAT}. */
  format: string;
  /** Format version ({@linkcode MARKER_VERSION}). */
  version: number;
  /** The driver whose layers the root holds (`"aufs"`, `"overlay"`). */
  driver: string;
  /** When the marker was written (ISO 8601). */
  created?: string;
  /** Set when an existing containers/storage root was adopted rather than made. */
  adopted?: boolean;
  /** Probe results by kernel release, then by backend name. */
  probes?: Record<string, Record<string, ProbeRecord>>;
  /** Fields of newer versions, kept as they are. */
  [field: string]: unknown;
}

/**
 * Directories that are never a driver root, whatever they hold: the file
 * system root and the system directories below it (after symlinks are
 * resolved). Anything below `/proc`, `/sys` and `/dev` is refused too.
 */
const SYSTEM_DIRS = new Set([
  "/",
  "/bin",
  "/boot",
  "/dev",
  "/etc",
  "/home",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/media",
  "/mnt",
  "/opt",
  "/proc",
  "/root",
  "/run",
  "/sbin",
  "/srv",
  "/sys",
  "/tmp",
  "/usr",
  "/usr/bin",
  "/usr/lib",
  "/usr/local",
  "/usr/sbin",
  "/usr/share",
  "/var",
  "/var/lib",
  "/var/log",
  "/var/tmp",
]);
const VIRTUAL_TREES = ["/proc/", "/sys/", "/dev/"];

/**
 * `path` with the symlinks of its longest existing prefix resolved (the
 * rest appended as given).
 */
function resolveExisting(path: string): string {
  const abs = resolve(path);
  const rest: string[] = [];
  for (let dir = abs;; dir = dirname(dir)) {
    // Resolve only where reading is granted (never a permission prompt).
    if (!granted({ name: "read", path: dir })) return abs;
    try {
      return join(Deno.realPathSync(dir), ...rest.reverse());
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound) || dirname(dir) === dir) return abs;
      rest.push(dir.slice(dirname(dir).length).replace(/^\//, ""));
    }
  }
}

/**
 * Why `root` must never be a driver root, or `undefined` when it may be:
 * `/`, a system directory (`/usr`, `/var/lib`, ...), anything below `/proc`,
 * `/sys` or `/dev`, or the home directory itself.
 *
 * @example
 * ```ts
 * import { systemPathProblem } from "./root_marker.ts";
 * console.log(systemPathProblem("/")); // "/ is a system directory"
 * console.log(systemPathProblem("/var/lib/strata")); // undefined
 * ```
 */
export function systemPathProblem(root: string): string | undefined {
  const real = resolveExisting(root);
  for (const p of new Set([resolve(root), real])) {
    if (SYSTEM_DIRS.has(p)) return `${p} is a system directory`;
    if (VIRTUAL_TREES.some((t) => p.startsWith(t))) return `${p} is inside a kernel filesystem`;
  }
  const home = granted({ name: "env", variable: "HOME" }) ? Deno.env.get("HOME") : undefined;
  if (home && home !== "/" && (real === resolve(home) || real === resolveExisting(home))) {
    return `${real} is a home directory`;
  }
  return undefined;
}

/** The marker path of `root`. */
export function markerPath(root: string): string {
  return join(root, MARKER_NAME);
}

/**
 * Read and validate `root`'s marker: `undefined` when there is none; throws
 * {@linkcode NotStrataRootError} when it is not a regular file, not a
 * strata marker, or from a newer format.
 *
 * @example
 * ```ts
 * import { readMarker } from "./root_marker.ts";
 * console.log(readMarker(await Deno.makeTempDir())); // undefined
 * ```
 */
export function readMarker(root: string): RootMarker | undefined {
  const path = markerPath(root);
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw new NotStrataRootError(root, `cannot read ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (!st.isFile) throw new NotStrataRootError(root, `${path} is not a regular file`);
  let data: unknown;
  try {
    data = JSON.parse(Deno.readTextFileSync(path));
  } catch (e) {
    throw new NotStrataRootError(root, `${path} is not valid JSON: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const m = data as RootMarker;
  if (typeof m !== "object" || m === null || m.format !== MARKER_FORMAT) {
    throw new NotStrataRootError(root, `${path} is not a strata root marker`);
  }
  if (typeof m.version !== "number" || typeof m.driver !== "string") {
    throw new NotStrataRootError(root, `${path} has no valid version or driver field`);
  }
  if (m.version > MARKER_VERSION) {
    throw new NotStrataRootError(
      root,
      `it was made by a newer strata (root format ${m.version}; this strata opens format ` +
        `${MARKER_VERSION} and older)`,
    );
  }
  return m;
}

/**
 * Write `marker` as `root`'s marker, atomically and durably.
 *
 * @example
 * ```ts
 * import { MARKER_FORMAT, MARKER_VERSION, writeMarker } from "./root_marker.ts";
 * await writeMarker(await Deno.makeTempDir(), {
 *   format: MARKER_FORMAT,
 *   version: MARKER_VERSION,
 *   driver: "overlay",
 * });
 * ```
 */
export async function writeMarker(root: string, marker: RootMarker): Promise<void> {
  const text = JSON.stringify(marker, null, 2) + "\n";
  await writeFileAtomic(root, MARKER_NAME, new TextEncoder().encode(text), { mode: 0o600 });
}

/** What is at a would-be root. */
export type RootState =
  /** Nothing: the root would be made. */
  | "missing"
  /** An empty directory (or one holding only `lost+found`): it may be made a root. */
  | "empty"
  /** A strata root (marker present). */
  | "marked"
  /** Something else, which strata must not change. */
  | "foreign";

/** Entries a containers/storage aufs root (or an older strata root) may hold. */
const ADOPTABLE_ENTRIES = new Set([
  "layers",
  "diff",
  "mnt",
  "work",
  "l",
  "locks",
  "counts",
  "incomplete",
  "lost+found",
]);

/**
 * Classify `root` without changing anything. Throws for a root that exists
 * but is not a directory.
 *
 * @example
 * ```ts
 * import { rootState } from "./root_marker.ts";
 * console.log(rootState("/nonexistent/strata")); // "missing"
 * ```
 */
export function rootState(root: string): RootState {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(root);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "missing";
    throw new NotStrataRootError(root, `cannot stat it: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isDirectory) throw new NotStrataRootError(root, "it is not a directory");
  if (readMarker(root) !== undefined) return "marked";
  for (const e of Deno.readDirSync(root)) {
    // A concurrent Init's marker being written is a temp file.
    if (e.name === "lost+found" || isTempName(e.name)) continue;
    return "foreign";
  }
  return "empty";
}

/**
 * Why `root` (not marked) cannot be adopted as a containers/storage aufs
 * root, or `undefined` when it can: it must hold `layers/`, `diff/` and
 * `mnt/` directories and nothing but the entries such a root has.
 *
 * @example
 * ```ts
 * import { adoptionProblem } from "./root_marker.ts";
 * console.log(adoptionProblem(await Deno.makeTempDir())); // "it has no layers/ directory"
 * ```
 */
export function adoptionProblem(root: string): string | undefined {
  for (const dir of ["layers", "diff", "mnt"]) {
    try {
      if (!Deno.lstatSync(join(root, dir)).isDirectory) return `its ${dir} is not a directory`;
    } catch {
      return `it has no ${dir}/ directory`;
    }
  }
  for (const e of Deno.readDirSync(root)) {
    if (ADOPTABLE_ENTRIES.has(e.name) || isTempName(e.name)) continue;
    if (e.name.startsWith(".overlay-probe-") || e.name.startsWith(".dtype-probe-")) continue;
    if (e.name.endsWith(REMOVING_SUFFIX)) continue;
    return `it holds ${JSON.stringify(e.name)}, which a containers/storage root does not`;
  }
  return undefined;
}

/**
 * The kernel release (`uname -r`), the key of cached probe results;
 * `"unknown"` when it cannot be read.
 *
 * @example
 * ```ts
 * import { kernelRelease } from "./root_marker.ts";
 * console.log(kernelRelease()); // e.g. 6.1.0-18-amd64
 * ```
 */
export function kernelRelease(procRoot = "/proc"): string {
  try {
    return readTextFileViaLibc(join(procRoot, "sys/kernel/osrelease")).trim() || "unknown";
  } catch {
    return "unknown";
  }
}
