/**
 * Child process for the cross-process lock tests. Usage:
 *   deno run -A lock_child.ts <layer|global> <lockDir> <id> <log> <tag> <rounds> <holdMs>
 * Appends "<tag> waiting" once, then per round "<tag> in" and "<tag> out"
 * around a hold of <holdMs> ms inside the lock.
 *
 * @module
 */

import { LayerLocks } from "../../lib/locks.ts";

const [mode, lockDir, id, log, tag, rounds, holdMs] = Deno.args;
const note = (s: string) => Deno.writeTextFileSync(log, `${tag} ${s}\n`, { append: true });
const locks = new LayerLocks(lockDir);
const hold = async () => {
  note("in");
  await new Promise((r) => setTimeout(r, Number(holdMs)));
  note("out");
};
note("waiting");
for (let i = 0; i < Number(rounds); i++) {
  if (mode === "global") await locks.withGlobal(hold);
  else await locks.withLayer(id, hold);
}
