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
import { Output } from "./output.ts";
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

/** Output flags as far as they can be read from a command line that may not parse. */
function roughOutput(args: readonly string[]): Output {
  return new Output({
    json: args.includes("--json"),
    quiet: args.includes("-q") || args.includes("--quiet"),
  });
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
export async function main(args: readonly string[]): Promise<number> {
  let inv: Invocation;
  try {
    inv = parseCommandLine(args, strataRootFromEnv);
  } catch (e) {
    const out = roughOutput(args);
    const r = describeError(e, {});
    out.error(r.message, r.kind, r.exitCode);
    return r.exitCode;
  }
  const out = new Output({ json: inv.globals.json, quiet: inv.globals.quiet });
  if (inv.globals.version) {
    if (out.json) out.result({ json: { version: VERSION }, text: [] });
    else out.text(`strata ${VERSION}`);
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
    // Union drivers take `onWarning` (beyond DriverOptions): route it through -q.
    const opts: DriverOptions & { onWarning: (m: string) => void } = {
      onWarning: (m) => out.warn(m),
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
    const r = describeError(e, where);
    out.error(r.message, r.kind, r.exitCode);
    return r.exitCode;
  }
}
