/**
 * A fake `/proc` for driver tests: `filesystems` and `self/uid_map` are
 * files the test chooses, while `self/mountinfo` is a symlink to the real
 * `/proc/self/mountinfo`, so the mount table (the root's bind mount) is the
 * reading process's own.
 *
 * @module
 */

import { join } from "node:path";

/** What the fake `/proc` says. */
export interface FakeProcOptions {
  /** Content of `filesystems` (default: lists aufs); `null` leaves the file out. */
  filesystems?: string | null;
  /** Content of `self/uid_map` (default: the initial namespace); `null` leaves it out. */
  uidMap?: string | null;
  /** Directory to make it in (default: a new temp dir). */
  dir?: string;
}

/** `filesystems` of a kernel with aufs. */
export const FILESYSTEMS_WITH_AUFS =
  "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\taufs\nnodev\toverlay\n";

/** `self/uid_map` of the initial user namespace. */
export const INIT_UID_MAP = "         0          0 4294967295\n";

/**
 * Make the fake `/proc` and return its path.
 *
 * @example
 * ```ts
 * import { makeFakeProc } from "./fake_proc.ts";
 * const proc = await makeFakeProc({ uidMap: "0 100000 65536\n" });
 * ```
 */
export async function makeFakeProc(opts: FakeProcOptions = {}): Promise<string> {
  const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "strata-proc-" });
  await Deno.mkdir(join(dir, "self"), { recursive: true });
  const filesystems = opts.filesystems === undefined ? FILESYSTEMS_WITH_AUFS : opts.filesystems;
  if (filesystems !== null) await Deno.writeTextFile(join(dir, "filesystems"), filesystems);
  const uidMap = opts.uidMap === undefined ? INIT_UID_MAP : opts.uidMap;
  if (uidMap !== null) await Deno.writeTextFile(join(dir, "self", "uid_map"), uidMap);
  await Deno.symlink("/proc/self/mountinfo", join(dir, "self", "mountinfo"));
  return dir;
}
