/**
 * The long fuzz run: 100,000 adversarial tars (tests/support/fuzz_tar.ts)
 * extracted with untar / applyLayer under both resolvers, each checked for
 * confinement, typed errors, descriptor leaks and a removable destination.
 *
 *   deno run -A bench/fuzz_untar.ts [cases=100000] [seed=1] [from=0]
 *
 * Stops at the first broken promise and prints the seed and case to replay.
 *
 * @module
 */

import { runFuzz } from "../tests/support/fuzz_tar.ts";

const cases = Number(Deno.args[0] ?? 100_000);
const seed = Number(Deno.args[1] ?? 1);
const from = Number(Deno.args[2] ?? 0);
const started = performance.now();
const stats = await runFuzz(seed, from, from + cases, (done, s) => {
  if (done % 5000 === 0) {
    const secs = ((performance.now() - started) / 1000).toFixed(0);
    console.log(`${done}/${cases} cases, ${s.ok} extracted, ${secs} s`);
  }
});
const secs = (performance.now() - started) / 1000;
console.log(
  `seed ${seed}: ${stats.cases} cases in ${secs.toFixed(1)} s: ${stats.ok} extracted, ` +
    `typed errors ${JSON.stringify(stats.errors)}; nothing outside dest changed`,
);
