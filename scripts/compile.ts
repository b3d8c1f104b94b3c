/**
 * `deno task compile`: build `dist/strata`, a self-contained `strata` binary.
 *
 * Permissions: `--allow-ffi` (libc: mount, statfs, the *at calls, and the
 * reads of `/proc`, which Deno itself would only allow with `--allow-all`),
 * `--allow-read`/`--allow-write` (the root, tars), `--allow-env` (`STRATA_ROOT`,
 * `TMPDIR`) and `--allow-run=modprobe,auplink` (the kernel module probe and
 * aufs's unmount flush; both optional, their failure is ignored), and
 * `--allow-net` (`strata image pull/push` talk to registries).
 *
 * `deno compile` downloads the `denort` runtime for the target on first use.
 * Without network that fails with a long backtrace; this script turns it into
 * one line that says what happened and how to build elsewhere.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** Permission flags given to `deno compile` (see the module doc for why each). */
export const PERMISSIONS = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run=modprobe,auplink",
  "--allow-net",
] as const;

/** True when `deno compile`'s stderr says the runtime download failed. */
export function isDownloadFailure(stderr: string): boolean {
  return /denort|Setting up base binary|error sending request|dns error|dl\.deno\.land/i.test(
    stderr,
  );
}

async function main(): Promise<number> {
  const project = fileURLToPath(new URL("..", import.meta.url));
  // The gzip/zstd worker is loaded by URL at run time: it must be embedded.
  const args = [
    "compile",
    ...PERMISSIONS,
    "--include",
    "lib/decompress_worker.ts",
    "--output",
    "dist/strata",
    "cli.ts",
  ];
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
