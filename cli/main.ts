/**
 * `strata` from arguments to exit status: parse, answer `--help` and
 * `--version` without touching anything, check permissions and root, open
 * the driver, run the command, print its result or its error.
 *
 * @module
 */

import config from "../deno.json" with { type: "json" };
import { type Driver, type DriverOptions, openDriver } from "../mod.ts";
import { helpText, type Invocation, parseCommandLine } from "./args.ts";
import { check } from "./check_command.ts";
import type { Context, Handler } from "./context.ts";
import { describeError, type ErrorContext } from "./errors.ts";
import { commit, image } from "./image_commands.ts";
import { importTars } from "./import_command.ts";
import * as layer from "./layer_commands.ts";
import { layerView } from "./layer_view.ts";
import { Output, type SyncWriter } from "./output.ts";
import { requireFfi, requireFsAccess, requireRoot, strataRootFromEnv } from "./preflight.ts";
import * as tar from "./tar_commands.ts";

/** The version in deno.json. */
export const VERSION: string = config.version;

const HANDLERS: Record<string, Handler> = {
  status: layer.status,
  layers: layer.layers,
  create: layer.create,
  rm: layer.rm,
  mount: layer.mount,
  umount: layer.umount,
  exists: layer.exists,
  cleanup: layer.cleanup,
  diff: tar.diff,
  apply: tar.apply,
  changes: tar.changes,
  "diff-size": tar.diffSize,
  import: importTars,
  image,
  commit,
  check,
};

/** Commands that only read: their driver is opened read-only (Init changes nothing). */
const READ_ONLY_COMMANDS = new Set(["status", "layers", "exists", "diff", "changes", "diff-size"]);

/** Commands that may make the root when it does not exist yet (they add layers or images). */
const ROOT_MAKING_COMMANDS = new Set(["create", "import", "image", "commit"]);

/**
 * How `command` opens the driver: read-only for the commands that only read
 * (and `check` without `--repair`, and `cleanup`, which only unmounts what
 * strata mounted); the root is made only by the commands that add layers.
 */
export function openMode(
  command: string,
  flags: Record<string, string | boolean | undefined>,
): { readOnly: boolean; createRoot: boolean } {
  const readOnly = READ_ONLY_COMMANDS.has(command) || command === "cleanup" ||
    (command === "check" && flags.repair !== true);
  return { readOnly, createRoot: ROOT_MAKING_COMMANDS.has(command) };
}

/** Output flags as far as they can be read from a command line that may not parse. */
function roughOutput(args: readonly string[], io: MainIO): Output {
  return new Output({
    json: args.includes("--json"),
    quiet: args.includes("-q") || args.includes("--quiet"),
    ...io,
  });
}

/** strata's version and the runtime's, as `strata --version` prints them. */
export function versions(): { version: string; deno: string; v8: string; typescript: string } {
  return {
    version: VERSION,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
  };
}

/**
 * Run `strata` with `args` (without the program name); resolves to the exit
 * status: 0 success, 1 runtime error (or `exists`: no such layer), 2 usage.
 *
 * @example
 * ```ts
 * import { main } from "./main.ts";
 * Deno.exit(await main(["--help"]));
 * ```
 */
export async function main(args: readonly string[], io: MainIO = {}): Promise<number> {
  try {
    return await run(args, io);
  } catch (e) {
    // Help or version piped into `head`: the same quiet end.
    if (isBrokenPipe(e)) return 0;
    throw e;
  }
}

/**
 * Where {@linkcode main} prints (default: the process's stdout and stderr).
 *
 * @example
 * ```ts
 * import { main, type MainIO } from "../cli.ts";
 * let text = "";
 * const io: MainIO = { stdout: { writeSync: (p) => (text += new TextDecoder().decode(p), p.length) } };
 * await main(["--version"], io);
 * console.log(text); // strata 0.1.0 (deno ...)
 * ```
 */
export interface MainIO {
  /** Where results, help and the version go. */
  stdout?: SyncWriter;
  /** Where errors and warnings go. */
  stderr?: SyncWriter;
}

async function run(args: readonly string[], io: MainIO): Promise<number> {
  let inv: Invocation;
  try {
    inv = parseCommandLine(args, strataRootFromEnv);
  } catch (e) {
    const out = roughOutput(args, io);
    const r = describeError(e, {});
    out.error(r.message, r.kind, r.exitCode);
    return r.exitCode;
  }
  const out = new Output({ json: inv.globals.json, quiet: inv.globals.quiet, ...io });
  if (inv.globals.version) {
    const v = versions();
    if (out.json) out.result({ json: v, text: [] });
    else out.text(`strata ${v.version} (deno ${v.deno}, v8 ${v.v8}, typescript ${v.typescript})`);
    return 0;
  }
  if (inv.globals.help || !inv.command) {
    out.text(helpText(inv.command));
    if (!inv.command && !inv.globals.help) {
      out.error("no command given (see: strata --help)", "usage", 2);
      return 2;
    }
    return 0;
  }
  const command = inv.command.name;
  const where: ErrorContext = { command, driver: inv.globals.driver };
  let driver: Driver | undefined;
  try {
    requireFfi(command);
    requireFsAccess(command, inv.globals.root);
    requireRoot(command);
    // Warnings go through Output, so -q silences them.
    const opts: DriverOptions = {
      onWarning: (m) => out.warn(m),
      adopt: inv.globals.adopt,
      ...openMode(command, inv.flags),
    };
    driver = await openDriver(inv.globals.driver, inv.globals.root, opts);
    const ctx: Context = {
      globals: inv.globals,
      flags: inv.flags,
      operands: inv.operands,
      out,
      driver,
      view: layerView(driver),
      operation: command,
      setLayer: (id) => where.id = id,
    };
    const result = await HANDLERS[command](ctx);
    out.result(result);
    return result.exitCode ?? 0;
  } catch (e) {
    // The reader of our output went away (`strata layers | head -1`): like
    // coreutils, stop quietly; there is no one left to tell.
    if (isBrokenPipe(e)) return 0;
    const r = describeError(e, where);
    try {
      out.error(r.message, r.kind, r.exitCode);
    } catch (printing) {
      if (!isBrokenPipe(printing)) throw printing;
    }
    return r.exitCode;
  }
}

/** Whether `e` (or an error in its cause chain) is a write to a pipe nobody reads any more. */
export function isBrokenPipe(e: unknown): boolean {
  for (let cur = e, depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    if (cur instanceof Deno.errors.BrokenPipe) return true;
    if ((cur as { code?: string }).code === "EPIPE") return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}
