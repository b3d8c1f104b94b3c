/**
 * What every command handler receives, and the handler type.
 *
 * @module
 */

import { type Driver, LayerIncompleteError, LayerNotFoundError } from "../mod.ts";
import type { GlobalFlags } from "./args.ts";
import type { LayerView } from "./layer_view.ts";
import type { Output, Result } from "./output.ts";
import { Progress, progressWanted } from "./progress.ts";

/** The parsed command line, the open driver, and where to print. */
export interface Context {
  globals: GlobalFlags;
  /** The command's own flags. */
  flags: Record<string, string | boolean | undefined>;
  /** The command's operands. */
  operands: string[];
  out: Output;
  driver: Driver;
  /** Layer facts beyond the `Driver` interface (parents, counts, incomplete). */
  view: LayerView;
  /** The command's name, e.g. `"apply"`. */
  operation: string;
  /** Records the layer a command works on, for error messages. */
  setLayer(id: string): void;
}

/** A command: does its work, returns what to print. */
export type Handler = (ctx: Context) => Promise<Result>;

/** A progress line for `label`, drawn only when stderr is a terminal and not `-q`. */
export function progressFor(ctx: Context, label: string): Progress {
  return new Progress(label, { enabled: progressWanted(ctx.globals.quiet) });
}

/** The string flag `name`, or undefined. */
export function stringFlag(ctx: Context, name: string): string | undefined {
  const v = ctx.flags[name];
  return typeof v === "string" ? v : undefined;
}

/** The parent to diff against: `--parent`, else the layer's own parent (`""` for a base layer). */
export async function parentOf(ctx: Context, id: string): Promise<string> {
  const given = stringFlag(ctx, "parent");
  if (given !== undefined) return given;
  return (await ctx.view.parents(id))[0] ?? "";
}

/**
 * Throw unless `id` is a complete layer: {@linkcode LayerNotFoundError} when
 * there is no such layer, {@linkcode LayerIncompleteError} (saying what was
 * interrupted and what can be done) when it is marked incomplete.
 */
export async function requireLayer(ctx: Context, id: string): Promise<void> {
  const mark = (await ctx.view.incomplete()).find((m) => m.id === id);
  if (mark) throw new LayerIncompleteError(id, ctx.operation, mark.why);
  if (!(await ctx.driver.exists(id))) throw new LayerNotFoundError(id);
}
