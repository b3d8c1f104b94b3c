/**
 * Commands that manage layers as a whole: `status`, `layers`, `create`, `rm`,
 * `mount`, `umount`, `exists`, `cleanup`.
 *
 * @module
 */

import {
  describeIncomplete,
  LayerError,
  LayerIncompleteError,
  LayerInUseError,
  LayerNotFoundError,
  validateLayerId,
} from "../mod.ts";
import { UsageError } from "./args.ts";
import { type Handler, requireLayer, stringFlag } from "./context.ts";
import { imageParent } from "./image_commands.ts";
import { humanBytes, type Result, table } from "./output.ts";

/** `strata status`: the backend and its facts. */
export const status: Handler = async (ctx) => {
  const pairs = await ctx.driver.status();
  return {
    json: { driver: ctx.driver.name, root: ctx.driver.root, status: Object.fromEntries(pairs) },
    text: table([["Driver", ctx.driver.name], ...pairs].map(([k, v]) => [`${k}:`, v])),
  };
};

/** One row of `strata layers`. */
export interface LayerRow {
  id: string;
  /** Direct parent, null for a base layer. */
  parent: string | null;
  /** Current mount references. */
  mounts: number;
  /** Files not all in place (an interrupted create or apply). */
  incomplete: boolean;
  /** Size of the layer's own changes (with `--size`). */
  size?: number;
}

/** `strata layers [--size]`. */
export const layers: Handler = async (ctx) => {
  const wantSize = ctx.flags.size === true;
  const incomplete = new Set((await ctx.view.incomplete()).map((m) => m.id));
  const rows: LayerRow[] = [];
  for (const id of await ctx.view.ids()) {
    try {
      const parent = (await ctx.view.parents(id))[0] ?? null;
      const row: LayerRow = {
        id,
        parent,
        mounts: await ctx.view.mountCount(id),
        incomplete: incomplete.has(id),
      };
      if (wantSize && !row.incomplete) row.size = await ctx.driver.diffSize(id, parent ?? "");
      rows.push(row);
    } catch (e) {
      if (!(e instanceof LayerNotFoundError)) throw e;
      // A create cut short before its chain was written: still worth showing.
      if (incomplete.has(id)) rows.push({ id, parent: null, mounts: 0, incomplete: true });
      // Otherwise removed by another process while we listed: not a layer any more.
    }
  }
  const header = ["ID", "PARENT", "MOUNTS", ...(wantSize ? ["SIZE"] : []), "STATE"];
  const body = rows.map((r) => [
    r.id,
    r.parent ?? "-",
    String(r.mounts),
    ...(wantSize ? [r.size === undefined ? "-" : humanBytes(r.size)] : []),
    r.incomplete ? "incomplete" : "ok",
  ]);
  return { json: { layers: rows }, text: rows.length ? table([header, ...body]) : [] };
};

/** `strata create ID [--parent P] [--rw] [--label L]`. */
export const create: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  const image = stringFlag(ctx, "image");
  if (image !== undefined && stringFlag(ctx, "parent") !== undefined) {
    throw new UsageError("create: give --parent or --image, not both", "strata create --help");
  }
  const parent = image !== undefined
    ? await imageParent(ctx, image)
    : stringFlag(ctx, "parent") ?? "";
  const rw = ctx.flags.rw === true;
  const mountLabel = stringFlag(ctx, "label");
  validateLayerId(id);
  if (parent !== "") validateLayerId(parent);
  const mark = (await ctx.view.incomplete()).find((m) => m.id === id);
  if (mark) throw new LayerIncompleteError(id, "create", mark.why);
  if (await ctx.view.known(id)) {
    throw new LayerError(id, "create", "", new Error("a layer with this id already exists"));
  }
  if (parent !== "" && !(await ctx.driver.exists(parent))) {
    throw new LayerNotFoundError(parent, `parent of ${id}`);
  }
  const opts = mountLabel === undefined ? undefined : { mountLabel };
  if (rw) await ctx.driver.createReadWrite(id, parent, opts);
  else await ctx.driver.create(id, parent, opts);
  return {
    json: { id, parent: parent || null, rw },
    text: [],
    note: [`created ${id}${parent ? ` on ${parent}` : " (base layer)"}`],
  };
};

/** `strata rm ID [--force]`: refuses a parent or a mounted layer unless `--force`. */
export const rm: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  const force = ctx.flags.force === true;
  if (!(await ctx.view.known(id))) {
    if (force) return { json: { id, removed: false }, text: [], note: [`${id}: no such layer`] };
    throw new LayerNotFoundError(id);
  }
  const children = await ctx.view.children(id);
  const mounts = await ctx.view.mountCount(id);
  try {
    // The driver re-checks under the layer's lock, so a concurrent mount cannot slip in.
    await ctx.driver.remove(id, { ifUnused: !force });
  } catch (e) {
    if (!(e instanceof LayerInUseError)) throw e;
    const hint = e.children.length > 0
      ? "remove them first or use --force"
      : "umount it first or use --force";
    throw new LayerError(
      id,
      "rm",
      "",
      new Error(`refusing: ${(e.cause as Error).message.replace(/^in use: /, "")}; ${hint}`),
    );
  }
  return {
    json: { id, removed: true, orphaned: children, unmounted: mounts },
    text: [],
    note: [`removed ${id}${children.length ? ` (orphaning ${children.join(", ")})` : ""}`],
  };
};

/** `strata mount ID [--label L]`: prints the mount path. */
export const mount: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  await requireLayer(ctx, id);
  const mountLabel = stringFlag(ctx, "label");
  const path = await ctx.driver.get(id, mountLabel === undefined ? undefined : { mountLabel });
  const mounts = await ctx.view.mountCount(id);
  return { json: { id, path, mounts }, text: [path] };
};

/** `strata umount ID`: releases one reference; the last one unmounts. */
export const umount: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  await requireLayer(ctx, id);
  if ((await ctx.view.mountCount(id)) === 0) {
    throw new LayerError(id, "umount", "", new Error("not mounted (mount count is 0)"));
  }
  await ctx.driver.put(id);
  const mounts = await ctx.view.mountCount(id);
  return {
    json: { id, mounts },
    text: [],
    note: [mounts === 0 ? `unmounted ${id}` : `${id}: ${mounts} reference(s) left`],
  };
};

/** `strata exists ID`: exit 0 when it exists, 1 when not; prints nothing without `--json`. */
export const exists: Handler = async (ctx): Promise<Result> => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  const found = await ctx.driver.exists(id);
  // A layer left incomplete does not exist as a usable layer, but say what it is.
  const mark = found ? undefined : (await ctx.view.incomplete()).find((m) => m.id === id);
  if (mark) ctx.out.warn(`layer ${id}: ${describeIncomplete(mark.why)}`);
  return {
    json: mark ? { id, exists: false, incomplete: mark.why } : { id, exists: found },
    text: [],
    exitCode: found ? 0 : 1,
  };
};

/** `strata cleanup`: unmount every layer under the root. */
export const cleanup: Handler = async (ctx) => {
  await ctx.driver.cleanup();
  return {
    json: { root: ctx.driver.root, cleaned: true },
    text: [],
    note: [`unmounted every layer under ${ctx.driver.root}`],
  };
};
