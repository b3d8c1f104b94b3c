/**
 * Tar in, side by side with GNU tar: extract a rootfs-shaped tar (mktree.sh
 * rootfs, 30,000 files by default) into a tmpfs with `untar` (both name
 * resolvers, in-process and as a fresh `deno run` process) and with GNU
 * `tar -xf`; the Go peer's `storagepeer untar --plain` and our `applyLayer`
 * are listed for reference. Median wall time of each, interleaved runs.
 *
 *   deno run -A bench/archive_in_bench.ts [--files N] [--runs N]
 *
 * Needs root (tmpfs mount, owners, devices) and
 * ../shared/peers/go-storage/mktree.sh (beside the repository). The tmpfs is mounted in a temp
 * dir and unmounted in a `finally`.
 *
 * @module
 */

import { join } from "node:path";
import { MNT, systemLibc } from "../ffi/libc.ts";
import { applyLayer } from "../lib/archive/apply_layer.ts";
import { untar } from "../lib/archive/untar.ts";

const MKTREE = new URL("../../shared/peers/go-storage/mktree.sh", import.meta.url).pathname;
const PEER = "/tmp/peers/bin/storagepeer";

// Child mode: `--extract <tar> <dest>` untars and exits (the "fresh process" row).
if (Deno.args[0] === "--extract") {
  const f = await Deno.open(Deno.args[1]);
  await untar(f.readable, Deno.args[2]);
  Deno.exit(0);
}

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const files = flag("--files", 30000);
const runs = flag("--runs", 5);

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[], stdin?: string, stdout?: string): Promise<void> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin ? "piped" : "null",
    stdout: stdout ? "piped" : "null",
    stderr: "piped",
  }).spawn();
  const errText = new Response(child.stderr).text();
  const writing = stdin ? (await Deno.open(stdin)).readable.pipeTo(child.stdin) : null;
  const reading = stdout
    ? child.stdout.pipeTo((await Deno.open(stdout, { write: true, create: true })).writable)
    : null;
  const [status, err] = await Promise.all([child.status, errText, writing, reading]);
  if (!status.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${err}`);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

if (!exists(MKTREE)) {
  console.log(`archive_in_bench: ${MKTREE} missing: nothing to measure`);
} else {
  const libc = systemLibc();
  const base = await Deno.makeTempDir({ prefix: "strata-bench-in-" });
  const mnt = join(base, "mnt");
  let mounted = false;
  try {
    const tree = join(base, "rootfs");
    const tar = join(base, "rootfs.tar");
    console.log(`generating a rootfs-shaped tree with ${files} files (mktree.sh)...`);
    await run(MKTREE, ["--files", String(files), "rootfs", tree]);
    if (exists(PEER)) await run(PEER, ["tar", tree], undefined, tar);
    else await run("tar", ["--sort=name", "--xattrs", "-cf", tar, "-C", tree, "."]);
    const size = Deno.statSync(tar).size;
    Deno.mkdirSync(mnt);
    libc.mount("tmpfs", mnt, "tmpfs", 0n, "size=4g,mode=0755");
    mounted = true;

    const dest = join(mnt, "dest");
    const fresh = () => {
      try {
        Deno.removeSync(dest, { recursive: true });
      } catch { /* absent */ }
    };
    const contenders: [string, () => Promise<unknown>][] = [
      ["GNU tar -xf", async () => {
        Deno.mkdirSync(dest);
        await run("tar", ["-xf", tar, "-C", dest]);
      }],
      ["untar (openat2)", async () => untar((await Deno.open(tar)).readable, dest)],
      [
        "untar (walk fallback)",
        async () => untar((await Deno.open(tar)).readable, dest, { forceFallback: true }),
      ],
      [
        "untar, fresh deno process",
        () => run(Deno.execPath(), ["run", "-A", import.meta.filename!, "--extract", tar, dest]),
      ],
      ["applyLayer (openat2)", async () => applyLayer((await Deno.open(tar)).readable, dest)],
    ];
    if (exists(PEER)) {
      contenders.push([
        "storagepeer untar --plain",
        () => run(PEER, ["untar", "--plain", dest], tar),
      ]);
    }
    const times = new Map<string, number[]>(contenders.map(([n]) => [n, []]));
    // One warm-up round (page cache, JIT), then interleaved measured rounds.
    for (let round = 0; round <= runs; round++) {
      for (const [name, fn] of contenders) {
        fresh();
        const ms = await timed(fn);
        if (round > 0) times.get(name)!.push(ms);
      }
    }
    fresh();
    const gnu = median(times.get("GNU tar -xf")!);
    const load = Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
    console.log(
      `\nuntar into tmpfs: ${files} files, tar of ${(size / 2 ** 20).toFixed(0)} MiB, ` +
        `median of ${runs}, load average ${load}\n`,
    );
    console.log("| contender | median ms | / GNU tar |");
    console.log("|---|---:|---:|");
    for (const [name] of contenders) {
      const m = median(times.get(name)!);
      console.log(`| ${name} | ${m.toFixed(0)} | ${(m / gnu).toFixed(2)} |`);
    }
  } finally {
    if (mounted) libc.umount2(mnt, MNT.DETACH);
    await Deno.remove(base, { recursive: true });
  }
}
