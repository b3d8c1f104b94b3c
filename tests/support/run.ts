/**
 * Running programs from tests: one helper for the subprocesses the CLI, demo
 * and differential tests start, and one for running Deno as an unprivileged
 * user.
 *
 * @module
 */

import { join } from "node:path";

const decoder = new TextDecoder();

/** What a finished subprocess left. */
export interface Ran {
  code: number;
  /** Standard output, as bytes. */
  stdout: Uint8Array;
  /** Standard output, as text. */
  out: string;
  /** Standard error, as text. */
  err: string;
}

/** Options of {@linkcode runCommand}. */
export interface RunCommandOptions {
  /** Bytes fed to stdin, or `{ file }` to stream a file in (default: stdin closed). */
  stdin?: Uint8Array | { file: string };
  cwd?: string;
  env?: Record<string, string>;
}

/** Run `cmd args…` to completion and collect its output. */
export async function runCommand(
  cmd: string,
  args: string[],
  opts: RunCommandOptions = {},
): Promise<Ran> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin instanceof Uint8Array) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  } else if (opts.stdin) {
    const f = await Deno.open(opts.stdin.file);
    await f.readable.pipeTo(child.stdin);
  }
  const res = await child.output();
  return {
    code: res.code,
    stdout: res.stdout,
    out: decoder.decode(res.stdout),
    err: decoder.decode(res.stderr),
  };
}

/**
 * Prepare `dir` (a fresh temp dir) so user 65534 can run Deno from it: a copy
 * of the deno binary (the original may sit where that user cannot reach it), a
 * writable DENO_DIR and TMPDIR. Returns the binary and the environment.
 */
export async function unprivilegedDeno(
  dir: string,
): Promise<{ deno: string; env: Record<string, string>; tmp: string }> {
  const deno = join(dir, "deno");
  await Deno.copyFile(Deno.execPath(), deno);
  await Deno.chmod(dir, 0o755);
  for (const sub of ["deno-dir", "tmp"]) {
    await Deno.mkdir(join(dir, sub), { mode: 0o777 });
    await Deno.chmod(join(dir, sub), 0o777);
  }
  const tmp = join(dir, "tmp");
  return { deno, tmp, env: { DENO_DIR: join(dir, "deno-dir"), HOME: dir, TMPDIR: tmp } };
}

/** The `setpriv` arguments that run the rest as user and group 65534. */
export const AS_NOBODY: readonly string[] = ["--reuid=65534", "--regid=65534", "--clear-groups"];
