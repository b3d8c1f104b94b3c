/**
 * Test roots made the way strata makes them: a directory holding a
 * `strata.json` marker, so that a test can put leftovers in a root before
 * the driver under test opens it.
 *
 * @module
 */

import { MARKER_FORMAT, MARKER_VERSION, writeMarker } from "../../lib/root_marker.ts";

/**
 * Make `root` (and its parents) a strata root of `driver`, as Init would.
 *
 * @example
 * ```ts
 * import { markRoot } from "./root.ts";
 * await markRoot(await Deno.makeTempDir(), "overlay");
 * ```
 */
export async function markRoot(root: string, driver: string): Promise<void> {
  await Deno.mkdir(root, { recursive: true, mode: 0o700 });
  await writeMarker(root, { format: MARKER_FORMAT, version: MARKER_VERSION, driver });
}
