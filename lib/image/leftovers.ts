/**
 * What an interrupted image operation can leave in `<root>/images`, for
 * `strata check`: temp blobs of an import cut short, partial downloads of a
 * pull cut short (a later pull resumes them; repair deletes them), temp
 * record files, and layer records whose layer is gone.
 *
 * @module
 */

import { join } from "node:path";

/** One leftover. */
export interface ImageLeftover {
  /** Its path. */
  path: string;
  /** What it is. */
  detail: string;
}

function names(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/**
 * The leftovers under `root/images`; `complete` are the ids of the root's
 * complete layers.
 *
 * @example
 * ```ts
 * import { imageLeftovers } from "./leftovers.ts";
 * console.log(imageLeftovers("/var/lib/strata", new Set()));
 * ```
 */
export function imageLeftovers(root: string, complete: ReadonlySet<string>): ImageLeftover[] {
  const dir = join(root, "images");
  const out: ImageLeftover[] = [];
  const blobs = join(dir, "blobs", "sha256");
  for (const n of names(blobs)) {
    if (n.endsWith(".tmp")) {
      out.push({
        path: join(blobs, n),
        detail: "temp blob left by an image import that did not finish",
      });
    }
  }
  const tmp = join(dir, "tmp");
  for (const n of names(tmp)) {
    out.push({
      path: join(tmp, n),
      detail: n.endsWith(".partial")
        ? "partial download of a pull that did not finish (a pull of the image resumes it)"
        : "not a download",
    });
  }
  for (const sub of ["layers", "images"]) {
    const d = join(dir, sub);
    for (const n of names(d)) {
      if (n.endsWith(".tmp")) {
        out.push({ path: join(d, n), detail: "temp record left by a write that did not finish" });
      } else if (sub === "layers" && n.endsWith(".json") && !complete.has(n.slice(0, -5))) {
        out.push({ path: join(d, n), detail: "image layer record of a layer that does not exist" });
      }
    }
  }
  return out;
}
