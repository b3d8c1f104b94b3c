/**
 * Child process for the cross-process mount count test. Usage:
 *   deno run -A count_child.ts <increment|decrement> <root> <id>
 * Takes the layer lock, changes the count (base layer: no path) and prints it.
 *
 * @module
 */

import { join } from "node:path";
import { LayerLocks } from "../../lib/locks.ts";
import { MountCounts } from "../../lib/refcount.ts";

const [op, root, id] = Deno.args;
const counts = new MountCounts(join(root, "counts"), () => false);
const n = await new LayerLocks(join(root, "locks")).withLayer(
  id,
  () => op === "increment" ? counts.increment(id, null) : counts.decrement(id, null),
);
console.log(n);
