/**
 * `strata image SUBCOMMAND ...`: images in and out of the store beside the
 * layers — `import oci:DIR[:TAG]`, `export IMAGE oci:DIR[:TAG]`,
 * `pull REF`, `push IMAGE REF`, `ls`, `inspect IMAGE`, `rm IMAGE`.
 *
 * @module
 */

import { commitLayer, imageTopLayer } from "../lib/image/commit.ts";
import { imageDocuments } from "../lib/image/ingest.ts";
import { pullImage, pushImage, type TransferOptions } from "../lib/image/pull.ts";
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

/** Registry options from the flags: --insecure, --creds USER:PASS, --authfile F, --jobs N. */
function transferOptions(ctx: Context, verb: string): TransferOptions {
  const opts: TransferOptions = {
    insecure: ctx.flags.insecure === true,
    authFile: stringFlag(ctx, "authfile"),
    onProgress: layerProgress(ctx, verb),
  };
  const creds = stringFlag(ctx, "creds");
  if (creds !== undefined) {
    const colon = creds.indexOf(":");
    if (colon <= 0) throw new UsageError("--creds must be USER:PASSWORD", "strata image --help");
    opts.credentials = { username: creds.slice(0, colon), password: creds.slice(colon + 1) };
  }
  const jobs = stringFlag(ctx, "jobs");
  if (jobs !== undefined) {
    const n = Number(jobs);
    if (!Number.isInteger(n) || n < 1 || n > 32) {
      throw new UsageError("--jobs must be a whole number from 1 to 32", "strata image --help");
    }
    opts.jobs = n;
  }
  return opts;
}

async function imagePull(ctx: Context, ref: string): Promise<Result> {
  const store = await ImageStore.open(ctx.driver);
  const r = await pullImage(store, ref, transferOptions(ctx, "pull"));
  const fetched = r.layers.reduce((n, l) => n + l.downloaded, 0);
  return {
    json: { image: r.image, layers: r.layers },
    text: [r.image.digest],
    note: [
      `pulled ${r.image.names[0]}: ${r.layers.length} layer(s), ${humanBytes(fetched)} downloaded`,
    ],
  };
}

async function imagePush(ctx: Context, image: string, ref: string): Promise<Result> {
  const store = await ImageStore.open(ctx.driver);
  const r = await pushImage(store, image, ref, transferOptions(ctx, "push"));
  const count = (how: string) => r.blobs.filter((b) => b.how === how).length;
  return {
    json: r,
    text: [r.digest],
    note: [
      `pushed ${ref}: ${count("uploaded")} blob(s) uploaded, ${count("mounted")} mounted, ${
        count("exists")
      } already there`,
    ],
  };
}

/** `strata commit LAYER IMAGE`: a new image from the layer's diff against its parent. */
export const commit: Handler = async (ctx) => {
  const [layer, name] = ctx.operands;
  ctx.setLayer(layer);
  const store = await ImageStore.open(ctx.driver);
  const img = await commitLayer(store, layer, name);
  return { json: { image: img }, text: [img.digest], note: [`committed ${layer} as ${name}`] };
};

/** The top layer of image `ref`, for `strata create NAME --image IMAGE`. */
export async function imageParent(ctx: Context, ref: string): Promise<string> {
  return await imageTopLayer(await ImageStore.open(ctx.driver), ref);
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
    case "pull":
      return await imagePull(ctx, rest[0]);
    case "push":
      return await imagePush(ctx, rest[0], rest[1]);
    case "ls":
      return await imageLs(ctx);
    case "inspect":
      return await imageInspect(ctx, rest[0]);
    case "rm":
      return await imageRm(ctx, rest[0]);
    default:
      throw new UsageError(`image ${sub}: unknown`, "strata image --help");
  }
};
