/**
 * tarDirectory vs GNU tar on the same trees, both streamed into a sink that
 * drops the bytes: strata's stream is read to the end in-process, GNU
 * `tar -cf - .` writes into a pipe this process drains (GNU tar would skip
 * reading file data if it wrote to /dev/null).
 *
 * The trees are made once with the go-storage peer's mktree.sh in a tmpfs
 * mounted on a temp dir (unmounted and removed at the end):
 * - "small files": a rootfs-shaped tree (default 30 000 files, 3 000 dirs;
 *   STRATA_BENCH_FILES / STRATA_BENCH_DIRS override);
 * - "big files": 2 × 64 MiB.
 *
 * Run: `deno bench --allow-all bench/archive_out_bench.ts` (as root: mount).
 *
 * @module
 */

import { tarDirectory } from "../lib/archive/tar_dir.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";

const MKTREE = new URL("../../shared/peers/go-storage/mktree.sh", import.meta.url).pathname;
const files = Deno.env.get("STRATA_BENCH_FILES") ?? "30000";
const dirs = Deno.env.get("STRATA_BENCH_DIRS") ?? "3000";

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

const base = await Deno.makeTempDir({ prefix: "strata-bench-out-" });
await run("mount", ["-t", "tmpfs", "-o", "size=1g", "tmpfs", base]);
let cleaned = false;
/** Unmount and remove the tmpfs (also when a bench fails: the unload event still fires). */
const cleanup = () => {
  if (cleaned) return;
  cleaned = true;
  new Deno.Command("umount", { args: [base] }).outputSync();
  Deno.removeSync(base, { recursive: true });
};
globalThis.addEventListener("unload", cleanup);
try {
  await run(MKTREE, ["--files", files, "--dirs", dirs, "rootfs", `${base}/rootfs`]);
  await run(MKTREE, ["--big-count", "2", "--big-mib", "64", "bigfiles", `${base}/bigfiles`]);
} catch (e) {
  cleanup();
  throw e;
}

/** Read a stream to its end, counting bytes. */
async function drain(stream: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of stream) n += chunk.length;
  return n;
}

async function strata(tree: string): Promise<void> {
  const n = await drain(
    tarDirectory(`${base}/${tree}`, { excludePatterns: [...AUFS_DIFF_EXCLUDES] }),
  );
  if (n === 0) throw new Error("empty tar");
}

async function gnuTar(tree: string): Promise<void> {
  const child = new Deno.Command("tar", {
    args: ["-cf", "-", "."],
    cwd: `${base}/${tree}`,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const n = await drain(child.stdout);
  await child.status; // exit status 1 is expected: it warns about the socket
  if (n === 0) throw new Error("empty tar");
}

for (const [tree, label] of [["rootfs", "small files"], ["bigfiles", "big files"]] as const) {
  Deno.bench({
    name: `GNU tar -cf - . (${label})`,
    group: label,
    baseline: true,
    // An async function: deno bench awaits only those.
    async fn() {
      await gnuTar(tree);
    },
  });
  Deno.bench({
    name: `tarDirectory (${label})`,
    group: label,
    async fn() {
      await strata(tree);
    },
  });
}
