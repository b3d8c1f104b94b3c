/**
 * `strata image SUBCOMMAND ...`: images in and out of the store beside the
 * layers — `import oci:DIR[:TAG]`, `export IMAGE oci:DIR[:TAG]`,
 * `pull REF`, `push IMAGE REF`, `ls`, `inspect IMAGE`, `rm IMAGE`.
 *
 * @module
 */

import { imageDocuments } from "../lib/image/ingest.ts";
import { exportOciLayout, importOciLayout, parseOciRef } from "../lib/image/oci_layout.ts";
import { ImageStore, layerIdOf } from "../lib/image/store.ts";
import { UsageError } from "./args.ts";
import { type Context, type Handler, stringFlag } from "./context.ts";
import { humanBytes, type Result, table } from "./output.ts";

/** Subcommands of `strata image`, with their operands. */
export const IMAGE_SUBCOMMANDS: Record<string, { operands: string[]; summary: string }> = {
  import: { operands: ["oci:DIR[:TAG]"], summary: "import an image from an OCI layout" },
  export: { operands: ["IMAGE", "oci:DIR[:TAG]"], summary: "write an image as an OCI layout" },
  pull: { operands: ["REF"], summary: "pull an image from a registry" },
  push: { operands: ["IMAGE", "REF"], summary: "push an image to a registry" },
  ls: { operands: [], summary: "list images" },
  inspect: { operands: ["IMAGE"], summary: "print an image's manifest, config and layers" },
  rm: { operands: ["IMAGE"], summary: "remove an image (and layers nothing else uses)" },
};

function args(ctx: Context): { sub: string; rest: string[] } {
  const [sub, ...rest] = ctx.operands;
  const spec = IMAGE_SUBCOMMANDS[sub];
  if (!spec) {
    throw new UsageError(
      `image: unknown subcommand ${JSON.stringify(sub)} (one of ${
        Object.keys(IMAGE_SUBCOMMANDS).join(", ")
      })`,
      "strata image --help",
    );
  }
  if (rest.length !== spec.operands.length) {
    throw new UsageError(
      `image ${sub}: takes ${spec.operands.join(" ") || "no operands"}`,
      "strata image --help",
    );
  }
  return { sub, rest };
}

/** A line per layer while stderr is a terminal and not `-q`. */
function layerProgress(ctx: Context, verb: string) {
  const tty = !ctx.globals.quiet && Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let last = 0;
  return (p: { index: number; digest: string; done: number; total: number; phase: string }) => {
    if (!tty) return;
    const now = performance.now();
    const final = p.phase !== "applying" && p.phase !== "downloading";
    if (!final && now - last < 100) return;
    last = now;
    const pct = p.total > 0 ? Math.floor((p.done / p.total) * 100) : 100;
    const line = `${verb} layer ${p.index + 1} ${p.digest.slice(7, 19)}: ${p.phase} ${
      humanBytes(p.done)
    }/${humanBytes(p.total)} (${pct}%)`;
    Deno.stderr.writeSync(enc.encode(`\r\x1b[K${line}${final ? "\n" : ""}`));
  };
}

async function imageImport(ctx: Context, ref: string): Promise<Result> {
  const store = await ImageStore.open(ctx.driver);
  const name = stringFlag(ctx, "name");
  const r = await importOciLayout(store, parseOciRef(ref), {
    names: name !== undefined ? [name] : undefined,
    onProgress: layerProgress(ctx, "import"),
  });
  return {
    json: { image: r.image, layers: r.layers },
    text: [r.image.digest],
    note: [
      `imported ${r.layers.length} layer(s), ${r.layers.filter((l) => l.reused).length} reused`,
    ],
  };
}

async function imageExport(ctx: Context, image: string, ref: string): Promise<Result> {
  const store = await ImageStore.open(ctx.driver);
  const desc = await exportOciLayout(store, image, parseOciRef(ref));
  return { json: { manifest: desc }, text: [desc.digest] };
}

async function imageLs(ctx: Context): Promise<Result> {
  const store = await ImageStore.open(ctx.driver);
  const images = await store.images();
  const rows = images.map((i) => [
    i.names.join(",") || "<none>",
    i.digest.slice(7, 19),
    String(i.layers.length),
    i.created,
  ]);
  return {
    json: { images },
    text: rows.length ? table([["NAME", "DIGEST", "LAYERS", "CREATED"], ...rows]) : [],
  };
}

async function imageInspect(ctx: Context, ref: string): Promise<Result> {
  const store = await ImageStore.open(ctx.driver);
  const img = await store.resolve(ref);
  const { manifest, config } = await imageDocuments(store, img);
  const layers = img.layers.map((chainId, i) => ({
    layer: layerIdOf(chainId),
    chainId,
    diffId: config.rootfs.diff_ids[i],
    blob: manifest.layers[i],
  }));
  const doc = { image: img, manifest, config, layers };
  return { json: doc, text: [JSON.stringify(doc, null, 2)] };
}

async function imageRm(ctx: Context, ref: string): Promise<Result> {
  const store = await ImageStore.open(ctx.driver);
  const r = await store.remove(ref);
  return {
    json: { image: ref, ...r },
    text: [],
    note: [
      r.untagged
        ? `untagged ${ref}`
        : `removed ${ref}: ${r.layers.length} layer(s), ${r.blobs} blob(s)`,
    ],
  };
}

/** `strata image SUBCOMMAND ...`. */
export const image: Handler = async (ctx) => {
  const { sub, rest } = args(ctx);
  switch (sub) {
    case "import":
      return await imageImport(ctx, rest[0]);
    case "export":
      return await imageExport(ctx, rest[0], rest[1]);
    case "ls":
      return await imageLs(ctx);
    case "inspect":
      return await imageInspect(ctx, rest[0]);
    case "rm":
      return await imageRm(ctx, rest[0]);
    default:
      throw new UsageError(`image ${sub}: not available yet`, "strata image --help");
  }
};
