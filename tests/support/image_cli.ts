/**
 * Running `strata` (cli.ts) as a subprocess for the image tests, in a temp
 * dir with a driver root; whatever is mounted under it is undone after.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Ran, runCommand } from "./run.ts";
import { mountsBelow, unmountAllBelow } from "./overlay_harness.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

/** `strata --root ROOT args…` as a subprocess. */
export type Strata = (...args: string[]) => Promise<Ran>;

/** Run `fn` with a `strata` bound to a fresh root in a temp dir `dir`. */
export async function withCliRoot(
  fn: (strata: Strata, dir: string, root: string) => Promise<void>,
  env?: Record<string, string>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-image-cli-" });
  const root = join(dir, "root");
  const strata: Strata = (...args) =>
    runCommand(Deno.execPath(), ["run", "--no-prompt", "-A", CLI, "--root", root, ...args], {
      env,
    });
  try {
    await fn(strata, dir, root);
  } finally {
    await strata("-q", "cleanup");
    unmountAllBelow(dir);
    assert.deepEqual(mountsBelow(dir), [], "mounts left behind");
    await Deno.remove(dir, { recursive: true });
  }
}

/** stdout of a run that must have succeeded. */
export function ok(r: Ran): string {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.err}`);
  return r.out;
}

/** Whether `cmd` is on PATH. */
export function onPath(cmd: string): boolean {
  return (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").some((d) => {
    try {
      return Deno.statSync(join(d, cmd)).isFile;
    } catch {
      return false;
    }
  });
}

/**
 * Whether the external tools are there. When one is absent: print ONE line
 * (`file: tool absent: tests ignored`) and return false; with `CI=true`
 * throw instead (a missing tool fails CI).
 */
export function toolsPresent(file: string, tools: string[]): boolean {
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length === 0) return true;
  if (Deno.env.get("CI") === "true") {
    throw new Error(`${file}: ${missing.join(", ")} missing (CI=true: a failure)`);
  }
  console.log(`${file}: ${missing.join(", ")} absent: tests ignored`);
  return false;
}
