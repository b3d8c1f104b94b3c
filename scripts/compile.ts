/**
 * `deno task compile`: build `dist/strata`, a self-contained `strata` binary.
 *
 * Permissions: what strata uses is `--allow-ffi` (libc: mount, statfs, the
 * *at calls), `--allow-read`/`--allow-write` (the root, tars),
 * `--allow-env=STRATA_ROOT` and `--allow-run=modprobe,auplink` (the aufs
 * probe and unmount flush). But Deno 2.x lets a program read `/proc` only
 * with `--allow-all`, and strata must read `/proc/self/mountinfo` and
 * `/proc/filesystems`; with the list above every command fails. So the
 * narrowest set that works is `--allow-all` — which grants nothing
 * `--allow-ffi` does not already (FFI code can do anything the process can).
 *
 * `deno compile` downloads the `denort` runtime for the target on first use.
 * Without network that fails with a long backtrace; this script turns it into
 * one line that says what happened and how to build elsewhere.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** Permission flags given to `deno compile` (see the module doc for why). */
export const PERMISSIONS = ["--allow-all"] as const;

/** True when `deno compile`'s stderr says the runtime download failed. */
export function isDownloadFailure(stderr: string): boolean {
  return /denort|Setting up base binary|error sending request|dns error|dl\.deno\.land/i.test(
    stderr,
  );
}

async function main(): Promise<number> {
  const project = fileURLToPath(new URL("..", import.meta.url));
  const args = ["compile", ...PERMISSIONS, "--output", "dist/strata", "cli.ts"];
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: project,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.success) {
    await Deno.stderr.write(out.stderr);
    console.error(`built ${project}dist/strata`);
    return 0;
  }
  if (isDownloadFailure(stderr)) {
    console.error(
      `compile: deno compile could not download its runtime (denort ${Deno.version.deno}; no network): ` +
        `run \`deno task compile\` on a machine with network access (then copy dist/strata here), ` +
        `or set DENORT_BIN to a local denort binary`,
    );
  } else {
    await Deno.stderr.write(out.stderr);
  }
  return out.code === 0 ? 1 : out.code;
}

if (import.meta.main) Deno.exit(await main());
