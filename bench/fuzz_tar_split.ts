/**
 * The long tar-split round trip: thousands of random tars
 * (tests/support/random_tars.ts: USTAR/PAX/GNU/v7 headers, long and non-UTF-8
 * names, odd paddings and endings) extracted while recording their
 * tar-split (literally, and as overlay layers, alternately), then
 * reassembled from the record and the files; every one must give its
 * original bytes. Every tenth case also puts a random tree through GNU tar
 * (gnu, pax, ustar or v7 format).
 *
 *   deno run -A bench/fuzz_tar_split.ts [cases=3000] [seed=1]
 *
 * Stops at the first mismatch and prints the seed to replay.
 *
 * @module
 */

import { join } from "node:path";
import { randomTar, randomTree, tarSplitRoundTrip } from "../tests/support/random_tars.ts";

const cases = Number(Deno.args[0] ?? 3000);
const seed = Number(Deno.args[1] ?? 1);
const started = performance.now();
const dir = await Deno.makeTempDir({ prefix: "strata-fuzz-ts-" });
const hasTar = (() => {
  try {
    return Deno.statSync("/usr/bin/tar").isFile;
  } catch {
    return false;
  }
})();
const formats = ["gnu", "pax", "ustar", "v7"];
let recorded = 0;
let tried = 0;
let bytes = 0;
let gnu = 0;
try {
  for (let i = 0; i < cases; i++) {
    const s = seed * 1_000_003 + i;
    const dest = join(dir, "x");
    let tar: Uint8Array | null;
    let label: string;
    if (hasTar && i % 10 === 9) {
      const tree = join(dir, "tree");
      await randomTree(s, tree);
      const format = formats[i % formats.length];
      const p = new Deno.Command("tar", {
        args: ["-C", tree, `--format=${format}`, "-cf", "-", "."],
        stdout: "piped",
        stderr: "null",
      }).outputSync();
      tar = p.success ? p.stdout : null; // v7/ustar refuse some long names
      label = `GNU tar --format=${format} of random tree ${s}`;
      await Deno.remove(tree, { recursive: true });
      if (tar !== null) gnu++;
    } else {
      tar = randomTar(s, 40).bytes;
      label = `randomTar(${s})`;
    }
    if (tar !== null) {
      const mode = i % 2 === 0 ? "untar" : "overlay";
      const r = await tarSplitRoundTrip(tar, dest, mode);
      if (!r.same) {
        console.error(`MISMATCH: ${label} (${mode}): first difference at byte ${r.firstDiff}`);
        Deno.exit(1);
      }
      tried++;
      if (r.recorded) recorded++;
      bytes += tar.length;
      await Deno.remove(dest, { recursive: true });
    }
    if ((i + 1) % 500 === 0) {
      const secs = ((performance.now() - started) / 1000).toFixed(0);
      console.log(`${i + 1}/${cases} cases, ${recorded} recorded, ${secs} s`);
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
const secs = (performance.now() - started) / 1000;
console.log(
  `seed ${seed}: ${tried} tars (${gnu} by GNU tar; ${cases - tried} trees GNU tar refused in ` +
    `that format) in ${secs.toFixed(1)} s: ${recorded} recorded and reassembled to their ` +
    `original bytes (${(bytes / 1048576).toFixed(1)} MiB), ${tried - recorded} not describable`,
);
