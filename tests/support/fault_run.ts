/**
 * Running `strata` command lines for the fault tests: in this process (the
 * CLI's `main`, its output captured, optionally with the fault seam
 * installed) or in a child process that the seam may kill.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { systemLibc } from "../../ffi/libc.ts";
import { main } from "../../cli/main.ts";
import { type FaultPlan, installFaultSeam, type SeamCall } from "./fault_seam.ts";
import { runCommand } from "./run.ts";

const decoder = new TextDecoder();

/** What a command run left. */
export interface CliRun {
  /** Exit status; `null` when the process was killed. */
  code: number | null;
  out: string;
  err: string;
  /** The calls the seam counted (empty for killed children). */
  calls: SeamCall[];
  /** The call made to fail, if any. */
  injected?: SeamCall;
  /** Libc fds opened in the root and still open when the command returned. */
  leakedFds: number[];
}

/** A writer standing in for `Deno.stdout`/`Deno.stderr` while `main` runs in-process. */
function capture(stream: { writeSync(p: Uint8Array): number }, into: Uint8Array[]): () => void {
  const own = Object.prototype.hasOwnProperty.call(stream, "writeSync");
  const before = stream.writeSync;
  stream.writeSync = (p: Uint8Array) => {
    into.push(p.slice());
    return p.length;
  };
  return () => {
    if (own) stream.writeSync = before;
    else delete (stream as { writeSync?: unknown }).writeSync;
  };
}

function joined(parts: Uint8Array[]): string {
  return parts.map((p) => decoder.decode(p)).join("");
}

/**
 * Run `strata ARGS` in this process with its stdout and stderr captured; with
 * a `plan`, the fault seam counts the calls inside `root` (and fails one).
 */
export async function runCli(
  args: string[],
  root?: string,
  plan?: FaultPlan,
): Promise<CliRun> {
  const out: Uint8Array[] = [];
  const err: Uint8Array[] = [];
  const restoreOut = capture(Deno.stdout, out);
  const restoreErr = capture(Deno.stderr, err);
  const seam = plan && root ? installFaultSeam(systemLibc(), root, plan) : undefined;
  let code: number;
  try {
    code = await main(args);
  } finally {
    seam?.uninstall();
    restoreErr();
    restoreOut();
  }
  return {
    code,
    out: joined(out),
    err: joined(err),
    calls: seam?.calls ?? [],
    injected: seam?.injected,
    leakedFds: seam?.openFds() ?? [],
  };
}

const CHILD = fileURLToPath(new URL("./fault_child.ts", import.meta.url));

/**
 * Run `strata ARGS` in a child process with the seam set to SIGKILL it just
 * before root call `at` (with `at` 0, nothing is injected and the calls are
 * returned).
 */
export async function runCliChild(args: string[], root: string, at: number): Promise<CliRun> {
  const trace = at === 0 ? await Deno.makeTempFile({ prefix: "strata-fault-trace-" }) : undefined;
  try {
    const plan: FaultPlan = at === 0 ? { kind: "count" } : { kind: "kill", at };
    const ran = await runCommand(Deno.execPath(), ["run", "-A", "--no-check", CHILD, ...args], {
      env: { STRATA_FAULT_PLAN: JSON.stringify({ root, plan, trace }), NO_COLOR: "1" },
    });
    const calls = trace ? JSON.parse(await Deno.readTextFile(trace) || "[]") : [];
    return {
      code: ran.code === 137 || ran.code === -9 ? null : ran.code,
      out: ran.out,
      err: ran.err,
      calls,
      leakedFds: [],
    };
  } finally {
    if (trace) await Deno.remove(trace);
  }
}
