/**
 * Peak resident memory of a layer's tar out and in: a fresh `deno run`
 * process opens the overlay driver, diffs a 1 GiB layer (8 × 128 MiB files)
 * to /dev/null, then applies the layer's diff into a fresh layer (the tar
 * streamed from `diff` straight into `applyDiff`), removes that layer, and
 * reports its VmHWM (the high-water mark of its resident set, from
 * /proc/self/status):
 *
 *   peak RSS diff+apply 1 GiB: N MiB (target ≤ 64)
 *
 * Two ways to run it (root: tmpfs and overlay mounts):
 * - `deno run -A bench/peak_rss.ts` — sets up its own tmpfs, tree and layer
 *   (mktree.sh bigfiles, or the built-in generator), measures in a child
 *   process, prints the line and tears everything down;
 * - `deno run -A bench/peak_rss.ts --measure <driver root> <layer id>` — the
 *   measuring child itself, on an existing overlay driver root (the layer
 *   bench runs it this way). Add `--verbose` for the high-water mark after
 *   each step.
 *
 * @module
 */

import { join } from "node:path";
import { AT, O, openDriver, OverlayDriver, readTextFileViaLibc, systemLibc } from "../mod.ts";
import { TarStream } from "../lib/archive/tar_appender.ts";
import { recursiveUnmount } from "../lib/mounts.ts";
import { makeBigTree, run } from "./support/trees.ts";

/** The target of the layer-tar issue, in MiB. */
export const PEAK_RSS_TARGET_MIB = 64;

/** The process's resident-set high-water mark in MiB (VmHWM). */
function vmHwmMib(): number {
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readTextFileViaLibc("/proc/self/status"));
  if (!m) throw new Error("no VmHWM line in /proc/self/status");
  return Number(m[1]) / 1024;
}

function sizeLabel(bytes: number): string {
  const gib = bytes / 2 ** 30;
  return gib >= 1 ? `${Number(gib.toFixed(2))} GiB` : `${Math.round(bytes / 2 ** 20)} MiB`;
}

/** The child: diff `id` to /dev/null, apply it into a fresh layer, print VmHWM. */
async function measure(root: string, id: string, verbose: boolean): Promise<void> {
  const driver = await openDriver("overlay", root);
  const steps: string[] = [`after init ${vmHwmMib().toFixed(0)} MiB`];
  const size = await driver.diffSize(id, "");
  // As strata diff does: the tar writes itself to the descriptor, or (a tar
  // reassembled from its tar-split record) is read into one recycled buffer.
  const libc = systemLibc();
  const out = libc.openat(AT.FDCWD, "/dev/null", O.WRONLY);
  try {
    const tar = await driver.diff(id, "");
    if (tar instanceof TarStream) tar.writeToFd(out);
    else {
      const reader = tar.getReader({ mode: "byob" });
      let buf = new Uint8Array(1 << 20);
      for (;;) {
        const { done, value } = await reader.read(buf);
        if (done || !value) break;
        libc.writeAll(out, value);
        buf = new Uint8Array(value.buffer);
      }
    }
  } finally {
    libc.close(out);
  }
  steps.push(`after diff ${vmHwmMib().toFixed(0)} MiB`);
  const fresh = `peak-rss-${Deno.pid}`;
  await driver.create(fresh, "");
  try {
    await driver.applyDiff(fresh, "", await driver.diff(id, ""));
    steps.push(`after apply ${vmHwmMib().toFixed(0)} MiB`);
  } finally {
    await driver.remove(fresh);
  }
  // No driver.cleanup(): the root's bind mount belongs to whoever set the root up.
  const peak = vmHwmMib();
  console.log(
    `peak RSS diff+apply ${sizeLabel(size)}: ${peak.toFixed(0)} MiB ` +
      `(target ≤ ${PEAK_RSS_TARGET_MIB})`,
  );
  if (verbose) console.log(`  ${steps.join(", ")}`);
}

/**
 * Run the measuring child on layer `id` of the overlay root `root` and return
 * the line it printed.
 *
 * @example
 * ```ts
 * import { peakRssLine } from "./peak_rss.ts";
 * // console.log(await peakRssLine("/tmp/x/overlay", "big"));
 * console.log(typeof peakRssLine);
 * ```
 */
export async function peakRssLine(root: string, id: string, verbose = false): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--no-prompt",
      import.meta.filename!,
      "--measure",
      root,
      id,
      ...(verbose ? ["--verbose"] : []),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trimEnd();
  if (!out.success) {
    throw new Error(
      `peak RSS child failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** Standalone: own tmpfs, tree and layer; the measurement in a child process. */
async function standalone(verbose: boolean): Promise<void> {
  const libc = systemLibc();
  const base = await Deno.makeTempDir({ prefix: "strata-peak-rss-" });
  try {
    libc.mount("tmpfs", base, "tmpfs", 0n, "mode=0700");
  } catch (e) {
    Deno.removeSync(base);
    throw new Error(`peak_rss: cannot mount a tmpfs on ${base} (run as root)`, { cause: e });
  }
  try {
    const tree = await makeBigTree(base);
    const tar = join(base, "big.tar");
    await run("tar", ["-cf", tar, "-C", tree, "."]);
    await Deno.remove(tree, { recursive: true });
    const driver = await openDriver("overlay", join(base, "overlay"));
    if (!(driver instanceof OverlayDriver)) throw new Error("openDriver gave no OverlayDriver");
    await driver.create("big", "");
    await driver.applyDiff("big", "", (await Deno.open(tar)).readable);
    await Deno.remove(tar);
    console.log(await peakRssLine(driver.root, "big", verbose));
    await driver.cleanup();
  } finally {
    recursiveUnmount(libc, base);
    await Deno.remove(base, { recursive: true });
  }
}

if (import.meta.main) {
  const verbose = Deno.args.includes("--verbose");
  const args = Deno.args.filter((a) => a !== "--verbose");
  if (args[0] === "--measure") {
    if (args.length !== 3) throw new Error("usage: peak_rss.ts --measure <driver root> <layer id>");
    await measure(args[1], args[2], verbose);
  } else await standalone(verbose);
}
