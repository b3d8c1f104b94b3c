/**
 * Differential tests of the tar-out side against the Go peer
 * (`/tmp/peers/bin/storagepeer`, containers/storage 1.43) and GNU tar, on
 * small trees made once per run by the peer's `mktree.sh`.
 *
 * Without the peer binary each peer test is registered as ignored and says
 * so in one line; the GNU tar checks need only GNU tar and mktree.sh.
 */

import { runCommand } from "./support/run.ts";
import assert from "node:assert/strict";
import { changesDirs, layerChanges } from "../lib/archive/changes.ts";
import { exportChanges } from "../lib/archive/export.ts";
import { pathFromBytes } from "../lib/archive/path_bytes.ts";
import { directorySize } from "../lib/archive/size.ts";
import { tarDirectory } from "../lib/archive/tar_dir.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";
import type { Change } from "../lib/driver.ts";
import { readAll } from "./support/tar_entries.ts";
import { MKTREE, PEER, peerAvailable } from "./support/peer.ts";

const havePeer = peerAvailable();
const dec = new TextDecoder();

function run(cmd: string, args: string[], opts: { stdin?: Uint8Array; cwd?: string } = {}) {
  return runCommand(cmd, args, opts);
}

async function ok(cmd: string, args: string[], opts: { stdin?: Uint8Array; cwd?: string } = {}) {
  const r = await run(cmd, args, opts);
  assert.equal(r.code, 0, `${cmd} ${args.join(" ")}: ${r.err}`);
  return r.stdout;
}

// ---------------------------------------------------------------- the trees, made once

interface Trees {
  root: string;
  rootfs: string;
  bigfiles: string;
  rw: string;
  /** An rw layer where three lower files became directories. */
  rwFileToDir: string;
  /** rootfs with the peer's tar of aufs-rw applied (peer only). */
  merged?: string;
}

let trees: Promise<Trees> | undefined;
function getTrees(): Promise<Trees> {
  trees ??= (async () => {
    const root = await Deno.makeTempDir({ prefix: "strata-diffpeer-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
    const small = ["--files", "300", "--dirs", "40"];
    await ok(MKTREE, [...small, "--big-count", "1", "--big-mib", "1", "all", root]);
    const t: Trees = {
      root,
      rootfs: `${root}/rootfs`,
      bigfiles: `${root}/bigfiles`,
      rw: `${root}/aufs-rw`,
      rwFileToDir: `${root}/aufs-rw-f2d`,
    };
    await ok(MKTREE, [...small, "--file-to-dir", "aufs-rw", t.rwFileToDir, t.rootfs]);
    if (havePeer) {
      t.merged = `${root}/merged`;
      await ok("cp", ["-a", t.rootfs, t.merged]);
      const layer = await ok(PEER, ["tar", t.rw]);
      await ok(PEER, ["applylayer", t.merged], { stdin: layer });
    }
    return t;
  })();
  return trees;
}

function peerTest(name: string, fn: (t: Trees) => Promise<void>): void {
  if (!havePeer) {
    console.log(`skipping "${name}": the Go peer ${PEER} is absent`);
    Deno.test({ name, ignore: true, fn() {} });
    return;
  }
  Deno.test(name, async () => fn(await getTrees()));
}

const LETTER = { add: "A", modify: "C", delete: "D" } as const;
const lines = (cs: Change[]) => cs.map((c) => `${LETTER[c.kind]} ${c.path}`);
/** The peer's sorted "A|C|D /path" lines, paths decoded like ours. */
function peerLines(out: Uint8Array): string[] {
  const res: string[] = [];
  let start = 0;
  for (let i = 0; i < out.length; i++) {
    if (out[i] !== 0x0a) continue;
    res.push(pathFromBytes(out.subarray(start, i)));
    start = i + 1;
  }
  return res;
}

// ---------------------------------------------------------------- tar

for (const tree of ["rootfs", "rw", "bigfiles"] as const) {
  peerTest(`tarDirectory(${tree}) is byte-identical to storagepeer tar`, async (t) => {
    const peer = await ok(PEER, ["tar", t[tree]]);
    const ours = await readAll(tarDirectory(t[tree], { excludePatterns: [...AUFS_DIFF_EXCLUDES] }));
    assert.equal(ours.length, peer.length, "length");
    assert.ok(ours.every((b, i) => b === peer[i]), "bytes differ");
  });
}

// ---------------------------------------------------------------- changes

function lstatOrNull(p: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(p);
  } catch {
    return null;
  }
}

/** Whether the peer may see `path` differently because a lower path component is a symlink. */
function lowerSymlinkOnPath(lower: string, path: string): boolean {
  let p = "";
  for (const part of path.split("/").filter(Boolean)) {
    p += "/" + part;
    try {
      if (Deno.lstatSync(lower + p).isSymlink) return true;
    } catch {
      return false;
    }
  }
  return false;
}

peerTest(
  "layerChanges(aufs-rw, [rootfs]) equals storagepeer changes but for the pinned deviations",
  async (t) => {
    const peer = peerLines(await ok(PEER, ["changes", t.rw, t.rootfs]));
    const ours = lines(layerChanges([t.rootfs], t.rw));
    const plnk = (l: string) =>
      l.slice(2) === "/.wh..wh.plnk" || l.slice(2).startsWith("/.wh..wh.plnk/");
    assert.ok(peer.some(plnk), "the tree has aufs pseudo-links (Go reports them)");
    assert.equal(ours.some(plnk), false, "we skip the pseudo-link dir");
    const tolerated = (l: string) => plnk(l) || lowerSymlinkOnPath(t.rootfs, l.slice(2));
    assert.deepEqual(ours.filter((l) => !tolerated(l)), peer.filter((l) => !tolerated(l)));
    assert.ok(ours.length > 50, `a real comparison (${ours.length} changes)`);
  },
);

peerTest(
  "layerChanges works where storagepeer changes fails with ENOTDIR (--file-to-dir)",
  async (t) => {
    const peer = await run(PEER, ["changes", t.rwFileToDir, t.rootfs]);
    assert.notEqual(peer.code, 0, "Go 1.43 fails on this tree");
    assert.match(peer.err, /not a directory/);
    const ours = layerChanges([t.rootfs], t.rwFileToDir);
    // Every lower regular file that is a directory in the layer is a modify, its children adds.
    let replaced = 0;
    for (const c of ours) {
      const lower = lstatOrNull(t.rootfs + c.path);
      if (!lower?.isFile || !lstatOrNull(t.rwFileToDir + c.path)?.isDirectory) continue;
      replaced++;
      assert.equal(c.kind, "modify", c.path);
      // (aufs marks such a new directory opaque: that marker reads as "delete <dir>/.wh..opq".)
      const below = ours.filter((x) =>
        x.path.startsWith(c.path + "/") && x.path !== `${c.path}/.wh..opq`
      );
      assert.ok(below.length > 0 && below.every((x) => x.kind === "add"), c.path);
    }
    assert.equal(replaced, 3);
  },
);

peerTest(
  'changesDirs equals storagepeer changesdirs (merged/rootfs both ways, rootfs/"")',
  async (t) => {
    for (const [a, b] of [[t.merged!, t.rootfs], [t.rootfs, t.merged!], [t.rootfs, ""]]) {
      const peer = peerLines(await ok(PEER, ["changesdirs", a, b]));
      assert.deepEqual(lines(changesDirs(a, b)), peer, `${a} vs ${b || '""'}`);
    }
  },
);

/** Blanks the mtime and checksum of Go-style whiteout headers (mode 0, type '0'): they hold "now". */
function maskWhiteoutTimes(tar: Uint8Array): Uint8Array {
  const b = tar.slice();
  let i = 0;
  while (i + 512 <= b.length) {
    const h = b.subarray(i, i + 512);
    if (h.every((x) => x === 0)) break;
    const size = parseInt(dec.decode(h.subarray(124, 136)).replace(/\0.*$/, "").trim() || "0", 8);
    if (dec.decode(h.subarray(100, 108)) === "0000000\0" && h[156] === 0x30) {
      h.fill(0x20, 136, 156);
    }
    i += 512 + Math.ceil(size / 512) * 512;
  }
  return b;
}

peerTest(
  "exportChanges(changesDirs) equals storagepeer exportchanges, whiteout times masked",
  async (t) => {
    const peer = maskWhiteoutTimes(await ok(PEER, ["exportchanges", t.merged!, t.rootfs]));
    const ours = maskWhiteoutTimes(
      await readAll(exportChanges(t.merged!, changesDirs(t.merged!, t.rootfs))),
    );
    assert.equal(ours.length, peer.length, "length");
    assert.ok(ours.every((x, i) => x === peer[i]), "bytes differ");
  },
);

peerTest("directorySize equals storagepeer size", async (t) => {
  for (const dir of [t.rootfs, t.rw, t.merged!]) {
    const peer = Number(dec.decode(await ok(PEER, ["size", dir])).trim());
    assert.equal(directorySize(dir), peer, dir);
  }
});

// ---------------------------------------------------------------- GNU tar

/** check.sh's normalisation of `tar --full-time -tvf` listings. */
function normaliseListing(text: string): string[] {
  return text.split("\n").filter((l) => l !== "").map((l) =>
    l.replace(/^(\S+) +(\S+) +(\S+) +(\S+) +(\S+) /, "$1 $2 $3 $4 $5 ")
      .replace(/^(\S+ \S+ \S+ \S+ [0-9:]{8})(\.[0-9]+)? +/, "$1 ")
      .replace(/^(\S+ \S+ \S+ \S+ \S+ )\.\//, "$1")
      .replace(/ link to \.\//, " link to ")
      .replace(/^(d.*)\/$/, "$1")
  ).filter((l) => !/^d\S* \S+ \S+ \S+ \S+ \.?$/.test(l) && !/^d\S* \S+ \S+ \S+ \S+ \.\/$/.test(l));
}

for (const tree of ["rootfs", "rw"] as const) {
  Deno.test(`GNU tar lists tarDirectory(${tree}) like its own --sort=name archive`, async () => {
    const t = await getTrees();
    const dir = t[tree];
    const ours = await readAll(tarDirectory(dir, { excludePatterns: [...AUFS_DIFF_EXCLUDES] }));
    const ex = tree === "rw"
      ? ["--exclude=./.wh..wh.aufs", "--exclude=./.wh..wh.plnk", "--exclude=./.wh..wh.orph"]
      : [];
    const gnuTar = (await run("tar", [
      "--sort=name",
      "--xattrs",
      "--xattrs-include=*",
      ...ex,
      "-cf",
      "-",
      ".",
    ], { cwd: dir })).stdout;
    const list = async (tar: Uint8Array) =>
      normaliseListing(dec.decode(await ok("tar", ["--full-time", "-tvf", "-"], { stdin: tar })));
    const mine = await list(ours);
    assert.deepEqual(mine, await list(gnuTar));
    assert.ok(mine.length > 50, `a real comparison (${mine.length} entries)`);
  });
}

Deno.test("GNU tar extracts tarDirectory(rootfs) to the same tree", async () => {
  const t = await getTrees();
  const dest = `${t.root}/gnu-extract`;
  await Deno.mkdir(dest);
  const ours = await readAll(tarDirectory(t.rootfs));
  await ok("tar", ["--xattrs", "--xattrs-include=*", "-xpf", "-", "-C", dest], { stdin: ours });
  const manifest = async (d: string) =>
    dec.decode(await ok(MKTREE, ["manifest", d])).split("\n")
      .filter((l) => l !== "" && !l.startsWith(". ") && !/^\S+ s /.test(l))
      .map((l) => l.replace(/mtime=([0-9-]+)\.[0-9]+/, "mtime=$1"));
  const want = await manifest(t.rootfs);
  assert.deepEqual(await manifest(dest), want);
  assert.ok(want.length > 300);
});
