/**
 * Real drivers of every backend, for tests that must know where they run.
 *
 * The host kernel has overlay and no aufs; the aufs guest (`deno task
 * test:aufs`) has both. {@linkcode backendTest} registers one test per backend
 * and `ignore`s, with the reason in its name, the ones the kernel cannot run:
 * never a silent `return`. {@linkcode withBackend} opens a real driver in a
 * temp dir and tears it down, proving no mount is left behind.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { MNT, systemLibc } from "../../ffi/libc.ts";
import { AufsDriver, type AufsOptions } from "../../lib/aufs/driver.ts";
import { OverlayDriver } from "../../lib/overlay/driver.ts";
import { mountpointsUnder, readMountinfo, recursiveUnmount } from "../../lib/mounts.ts";
import type { UnionDriver } from "../../lib/union.ts";

/** The union backends strata has. */
export type BackendName = "aufs" | "overlay";

/** Every backend, aufs first (the order `openDriver("auto")` tries them). */
export const BACKENDS: readonly BackendName[] = ["aufs", "overlay"];

function readFilesystems(): string[] {
  try {
    return Deno.readTextFileSync("/proc/filesystems").split("\n")
      .map((l) => l.split("\t").pop()!.trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}

const FILESYSTEMS = readFilesystems();

/** Whether this kernel lists `fs` in `/proc/filesystems` (modules already loaded). */
export function kernelHas(fs: string): boolean {
  return FILESYSTEMS.includes(fs);
}

/** Whether this process runs in the aufs guest (a kernel with aufs). */
export const HAS_AUFS = kernelHas("aufs");
/** Whether this kernel has overlayfs. */
export const HAS_OVERLAY = kernelHas("overlay");
/** Whether we are root (every real mount needs it). */
export const IS_ROOT = Deno.uid() === 0;

/** Why `backend` cannot run here, or `undefined` when it can. */
export function missing(backend: BackendName): string | undefined {
  if (!IS_ROOT) return "needs root";
  return kernelHas(backend) ? undefined : `this kernel has no ${backend}`;
}

/** Options of {@linkcode backendTest}. */
export interface BackendTestOptions {
  /**
   * A slow test whose non-aufs variant is left to the host: in the aufs guest
   * (TCG-emulated, every second counts) only the aufs variant runs.
   */
  hostOnly?: boolean;
}

/**
 * `Deno.test` for one backend: named `<backend>: <title>`, and `ignore`d with
 * `[ignored: <reason>]` in the name when the kernel lacks the backend.
 *
 * @example
 * ```ts
 * import { BACKENDS, backendTest } from "./backends.ts";
 * for (const b of BACKENDS) backendTest(b, "creates a layer", async () => {});
 * ```
 */
export function backendTest(
  backend: BackendName,
  title: string,
  fn: () => Promise<void>,
  opts: BackendTestOptions = {},
): void {
  const why = missing(backend) ??
    (opts.hostOnly && HAS_AUFS && backend !== "aufs"
      ? `${backend} runs this on the host; too slow to repeat in the emulated aufs guest`
      : undefined);
  Deno.test({
    name: `${backend}: ${title}${why ? ` [ignored: ${why}]` : ""}`,
    ignore: why !== undefined,
    fn,
  });
}

/** What {@linkcode withBackend} gives a test besides the driver. */
export interface BackendHarness {
  /** The temp dir holding everything. */
  base: string;
  /** The driver root, `<base>/<backend>`. */
  root: string;
  /** Warnings the driver reported. */
  warnings: string[];
  /** Open another driver on the same root (same options). */
  reopen(): Promise<UnionDriver>;
}

/** Options of {@linkcode withBackend}. */
export interface WithBackendOptions {
  /** Extra driver options (aufs: `auplink`, `tmpDir`; both: `onWarning` is the harness's). */
  driver?: AufsOptions;
  /** Name of the root below the temp dir (default: the backend's name). */
  rootName?: string;
  /**
   * Mount a tmpfs on the temp dir first (default true): layer creation
   * fsyncs its metadata, which a tmpfs makes free.
   */
  tmpfs?: boolean;
}

/** Open a real driver of `backend` at `root`. */
export function openBackend(
  backend: BackendName,
  root: string,
  opts: AufsOptions = {},
): Promise<UnionDriver> {
  const common = { loadModule: async () => {}, unmountRetryDelayMs: 1, ...opts };
  return backend === "aufs"
    ? AufsDriver.init(root, { auplink: null, ...common })
    : OverlayDriver.init(root, common);
}

/**
 * Run `fn` with a fresh real driver of `backend` in a temp dir. Afterwards,
 * always: `cleanup()` (its failure fails a test that had passed), the check
 * that no mount is left below the temp dir (but the harness's tmpfs), unmounting whatever is (so a
 * failing test leaks nothing), and the temp dir's deletion.
 *
 * @example
 * ```ts
 * import { withBackend } from "./backends.ts";
 * await withBackend("overlay", async (driver) => {
 *   await driver.create("base", "");
 * });
 * ```
 */
export async function withBackend(
  backend: BackendName,
  fn: (driver: UnionDriver, h: BackendHarness) => Promise<void>,
  opts: WithBackendOptions = {},
): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: `strata-${backend}-` });
  const root = join(base, opts.rootName ?? backend);
  const warnings: string[] = [];
  const options: AufsOptions = { onWarning: (m) => warnings.push(m), ...opts.driver };
  const h: BackendHarness = {
    base,
    root,
    warnings,
    reopen: () => openBackend(backend, root, options),
  };
  const tmpfs = opts.tmpfs ?? true;
  try {
    if (tmpfs) systemLibc().mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
    const driver = await h.reopen();
    let failed = false;
    try {
      await fn(driver, h);
    } catch (e) {
      failed = true;
      throw e;
    } finally {
      await driver.cleanup().catch((e) => {
        if (!failed) throw e;
      });
      if (!failed) {
        const left = mountpointsUnder(base).filter((m) => !(tmpfs && m === base));
        assert.deepEqual(left, [], "mounts left below the temp dir");
      }
    }
  } finally {
    try {
      recursiveUnmount(systemLibc(), base);
    } catch {
      for (const mp of mountpointsUnder(base)) {
        try {
          systemLibc().umount2(mp, MNT.DETACH);
        } catch {
          // best effort; the assertion above reports what stayed
        }
      }
    }
    await Deno.remove(base, { recursive: true });
  }
}

/** The filesystem type of the topmost mount at `path`, or `undefined` when none. */
export function fsTypeAt(path: string): string | undefined {
  return readMountinfo().findLast((m) => m.mountPoint === path)?.fsType;
}

/**
 * The tree under `root` as sorted lines `path type mode uid:gid content`
 * (content: file text, link target, or nothing for dirs), skipping aufs's
 * own `.wh..wh.*` entries at the top (they belong to the mount, not the
 * layer). Two unions with equal snapshots show the same tree.
 */
export function snapshotTree(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const names = [...Deno.readDirSync(join(root, rel))].map((e) => e.name).sort();
    for (const name of names) {
      if (rel === "" && name.startsWith(".wh..wh.")) continue;
      const path = rel ? `${rel}/${name}` : name;
      const full = join(root, path);
      const st = Deno.lstatSync(full);
      const kind = st.isDirectory ? "dir" : st.isSymlink ? "link" : st.isFile ? "file" : "other";
      const content = st.isFile
        ? Deno.readTextFileSync(full)
        : st.isSymlink
        ? Deno.readLinkSync(full)
        : "";
      out.push(`${path} ${kind} ${(st.mode! & 0o7777).toString(8)} ${st.uid}:${st.gid} ${content}`);
      if (st.isDirectory) walk(path);
    }
  };
  walk("");
  return out;
}
