/**
 * `strata import FILE... [--prefix P]`: one layer per tar, chained in the
 * order given.
 *
 * Ids: with `--prefix`, `P-1`, `P-2`, ... and each tar is read once (hashed
 * while it is applied, the digest is reported). Without it a layer is named
 * by the sha256 of its uncompressed tar, which is only known once the whole
 * tar was read; the driver cannot rename a layer, so the file is hashed
 * first, then applied under its final id while being hashed again: a file
 * that changed between the two reads is refused (its layer removed), so a
 * layer's name always matches its content. While a layer is being filled the
 * driver marks it incomplete: a crash leaves it for `strata check --repair`,
 * not a half layer under a content name. A layer that already exists with
 * the same id and parent is reused (the import is idempotent).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { LayerError } from "../mod.ts";
import { type Context, type Handler, progressFor } from "./context.ts";
import { decompressed } from "./decompress.ts";
import type { Progress } from "./progress.ts";
import { inputProgress, tarProgress } from "./progress.ts";
import { openInput } from "./tar_commands.ts";

/** One imported layer, as `import` reports it. */
export interface ImportedLayer {
  id: string;
  parent: string | null;
  file: string;
  /** sha256 of the uncompressed tar, `sha256:<hex>`. */
  digest: string;
  /** The size `applyDiff` returned (0 when reused). */
  size: number;
  /** True when the layer existed already and was left as it was. */
  reused: boolean;
}

/** A pass-through stream hashing what flows through it. */
function hashing(hash: ReturnType<typeof createHash>): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      hash.update(chunk);
      controller.enqueue(chunk);
    },
  });
}

/** The uncompressed tar of `file`, as a stream; its reading counts towards `progress`'s percent. */
async function tarOf(file: string, progress: Progress): Promise<ReadableStream<Uint8Array>> {
  const f = await openInput(file);
  const info = await f.stat();
  progress.startInput(info.isFile ? info.size : undefined);
  return (await decompressed(f.readable.pipeThrough(inputProgress(progress)), file)).stream;
}

/** sha256 of the uncompressed tar in `file` (first read). */
async function digestOf(file: string, progress: Progress): Promise<string> {
  const hash = createHash("sha256");
  const stream = (await tarOf(file, progress)).pipeThrough(tarProgress(progress));
  for await (const chunk of stream) hash.update(chunk);
  return hash.digest("hex");
}

/**
 * Create `id` on `parent` and fill it from `file`; returns the digest and
 * size. The driver marks the layer incomplete while it is created and while
 * the tar is applied; a failure removes the layer again.
 */
async function fill(
  ctx: Context,
  id: string,
  parent: string,
  file: string,
  progress: Progress,
): Promise<{ digest: string; size: number }> {
  await ctx.driver.create(id, parent, { incomplete: "import" });
  try {
    const hash = createHash("sha256");
    const stream = (await tarOf(file, progress)).pipeThrough(hashing(hash)).pipeThrough(
      tarProgress(progress),
    );
    const size = await ctx.driver.applyDiff(id, parent, stream);
    return { digest: hash.digest("hex"), size };
  } catch (e) {
    // A half-filled layer is of no use: take it away (a crash leaves it to `check --repair`).
    await ctx.driver.remove(id).catch((undo) => {
      ctx.out.warn(`could not remove the half-imported layer ${id}: ${(undo as Error).message}`);
    });
    throw e;
  }
}

/** `strata import FILE... [--prefix P]`. */
export const importTars: Handler = async (ctx) => {
  const prefix = typeof ctx.flags.prefix === "string" ? ctx.flags.prefix : undefined;
  const imported: ImportedLayer[] = [];
  let parent = "";
  const progress = progressFor(ctx, "import");
  try {
    for (const [i, file] of ctx.operands.entries()) {
      progress.relabel(`import ${file}`);
      let id: string;
      let expected: string | undefined;
      if (prefix !== undefined) {
        id = `${prefix}-${i + 1}`;
      } else {
        progress.relabel(`import ${file} (hashing)`);
        expected = await digestOf(file, progress);
        id = expected;
        progress.relabel(`import ${file}`);
      }
      ctx.setLayer(id);
      const reused = await reuse(ctx, id, parent, prefix === undefined);
      if (reused) {
        imported.push({
          id,
          parent: parent || null,
          file,
          digest: `sha256:${id}`,
          size: 0,
          reused,
        });
        parent = id;
        continue;
      }
      const { digest, size } = await fill(ctx, id, parent, file, progress);
      if (expected !== undefined && digest !== expected) {
        await ctx.driver.remove(id);
        throw new LayerError(
          id,
          "import",
          file,
          new Error(`the file changed while it was imported (sha256 now ${digest}); layer removed`),
        );
      }
      imported.push({ id, parent: parent || null, file, digest: `sha256:${digest}`, size, reused });
      parent = id;
    }
  } finally {
    progress.done();
  }
  return {
    json: { layers: imported },
    text: imported.map((l) => l.id),
    note: imported.filter((l) => l.reused).map((l) => `${l.id}: already imported, reused`),
  };
};

/**
 * Whether `id` can be reused as is: it exists, on `parent`, and ids are
 * content names. A leftover incomplete layer of that id is removed first.
 * Any other existing layer is an error.
 */
async function reuse(
  ctx: Context,
  id: string,
  parent: string,
  contentNamed: boolean,
): Promise<boolean> {
  const incomplete = (await ctx.view.incomplete()).some((m) => m.id === id);
  if (!incomplete && await ctx.driver.exists(id)) {
    const actual = (await ctx.view.parents(id))[0] ?? "";
    if (contentNamed && actual === parent) return true;
    const why = actual === parent
      ? "a layer with this id already exists"
      : `a layer with this id already exists on ${actual ? `parent ${actual}` : "no parent"}, not ${
        parent || "no parent"
      }`;
    throw new LayerError(id, "import", "", new Error(why));
  }
  if (await ctx.view.known(id)) await ctx.driver.remove(id); // incomplete leftover of a crash
  return false;
}
