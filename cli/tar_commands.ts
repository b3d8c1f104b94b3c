/**
 * Commands that move layer content: `diff` (tar out), `apply` (tar in),
 * `changes` and `diff-size`.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { UsageError } from "./args.ts";
import { type Handler, parentOf, progressFor, requireLayer, stringFlag } from "./context.ts";
import { openTarInput } from "./decompress.ts";
import { NotedError } from "./errors.ts";
import { humanBytes } from "./output.ts";
import { tarProgress } from "./progress.ts";

async function isRegularOrMissing(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return true;
    throw e;
  }
}

/**
 * Stream `tar` into `file`: a regular file is written beside it first and
 * renamed into place when complete, so a failure never leaves half a tar
 * under the requested name; a device or fifo is written directly.
 */
async function writeTarFile(tar: ReadableStream<Uint8Array>, file: string): Promise<void> {
  if (!(await isRegularOrMissing(file))) {
    const f = await Deno.open(file, { write: true });
    await tar.pipeTo(f.writable);
    return;
  }
  const temp = join(dirname(file), `.${file.split("/").pop()}.strata-${Deno.pid}.partial`);
  const f = await Deno.open(temp, { write: true, create: true, truncate: true, mode: 0o644 });
  try {
    await tar.pipeTo(f.writable); // closes f
    await Deno.rename(temp, file);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw new Error(`write ${file}: ${(e as Error).message}`, { cause: e });
  }
}

/** `strata diff ID [--parent P] [-o FILE]`: the layer's changes as a tar. */
export const diff: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  const file = stringFlag(ctx, "output");
  if (file === undefined && Deno.stdout.isTerminal()) {
    throw new UsageError(
      "refusing to write a tar to a terminal",
      `strata diff ${id} -o FILE, or redirect stdout`,
    );
  }
  await requireLayer(ctx, id);
  const parent = await parentOf(ctx, id);
  const progress = progressFor(ctx, `diff ${id}`);
  try {
    const tar = (await ctx.driver.diff(id, parent)).pipeThrough(tarProgress(progress));
    if (file === undefined) {
      await tar.pipeTo(Deno.stdout.writable, { preventClose: true });
      return { json: undefined, text: [], silent: true };
    }
    await writeTarFile(tar, file);
  } finally {
    progress.done();
  }
  return {
    json: { id, parent: parent || null, file, bytes: progress.bytes, entries: progress.entries },
    text: [],
    note: [`wrote ${humanBytes(progress.bytes)} (${progress.entries} entries) to ${file}`],
  };
};

/** `strata apply ID [--parent P] [FILE|-]`: apply a plain or gzip layer tar; prints the size. */
export const apply: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  const source = ctx.operands[1] ?? "-";
  if (source === "-" && Deno.stdin.isTerminal()) {
    throw new UsageError(
      "refusing to read a tar from a terminal",
      `strata apply ${id} FILE, or redirect stdin`,
    );
  }
  await requireLayer(ctx, id);
  const parent = await parentOf(ctx, id);
  // A plain file goes on as its own byte stream (the extraction's BYOB fast
  // path); gzip and zstd are inflated by a worker on the second core.
  const { stream, format } = await openTarInput(source);
  const progress = progressFor(ctx, `apply ${id}`);
  let size: number;
  try {
    // The driver marks the layer incomplete while it fills it: a crash or a
    // bad tar leaves it flagged for `strata check`, not silently half-applied.
    // Bytes and entries are counted by the extraction itself.
    size = await ctx.driver.applyDiff(id, parent, stream, {
      onProgress: (bytes, entries) =>
        progress.add(bytes - progress.bytes, entries - progress.entries),
    });
  } catch (e) {
    const left = (await ctx.view.incomplete().catch(() => [])).some((m) => m.id === id);
    if (!left) throw e;
    throw new NotedError(
      e,
      `layer ${id} is left marked incomplete: \`strata check --repair\` removes it`,
    );
  } finally {
    progress.done();
  }
  return {
    json: {
      id,
      parent: parent || null,
      size,
      compression: format,
      bytes: progress.bytes,
      entries: progress.entries,
    },
    text: [String(size)],
  };
};

/** Open a tar file for reading, naming it in the error. */
export async function openInput(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (e) {
    throw new Error(`open ${path}: ${(e as Error).message}`, { cause: e });
  }
}

const KIND_LETTER = { add: "A", modify: "C", delete: "D" } as const;

/** `strata changes ID [--parent P]`: `A /path`, `C /path`, `D /path`, as `docker diff`. */
export const changes: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  await requireLayer(ctx, id);
  const parent = await parentOf(ctx, id);
  const list = await ctx.driver.changes(id, parent);
  return {
    json: { id, parent: parent || null, changes: list },
    text: list.map((c) => `${KIND_LETTER[c.kind]} ${c.path}`),
  };
};

/** `strata diff-size ID [--parent P]`: bytes of the layer's changes. */
export const diffSize: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  await requireLayer(ctx, id);
  const parent = await parentOf(ctx, id);
  const size = await ctx.driver.diffSize(id, parent);
  return { json: { id, parent: parent || null, size }, text: [String(size)] };
};
