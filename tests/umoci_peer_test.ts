/**
 * umoci as a second, independent consumer of layer tars (its own Go tar and
 * whiteout code): the tars strata writes must unpack in umoci to the tree
 * strata's own applyLayer gives. Trees come from the peer's mktree.sh; umoci
 * from Debian (`.ci/run` installs it with the peer). (The other direction is
 * not tested: the layer umoci 0.4.7's `insert` writes here ends mid-entry, and
 * GNU tar rejects it too.)
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { applyLayer } from "../lib/archive/apply_layer.ts";
import { tarDirectory } from "../lib/archive/tar_dir.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";
import { MKTREE } from "./support/peer.ts";

const UMOCI_PEER = new URL("../../shared/peers/go-storage/umoci-peer.sh", import.meta.url)
  .pathname;

function isFile(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

function onPath(cmd: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((d) => isFile(join(d, cmd)));
}

const available = isFile(MKTREE) && isFile(UMOCI_PEER) && onPath("umoci");
if (!available) {
  console.log("umoci_peer_test: umoci, umoci-peer.sh or mktree.sh is absent: tests ignored");
}

async function sh(cmd: string, args: string[], env?: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

async function save(stream: ReadableStream<Uint8Array>, path: string): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  await stream.pipeTo(f.writable);
}

/** Manifest without directory mtimes (umoci sets the root's to 0) and sub-second mtimes cut. */
async function manifest(dir: string): Promise<string[]> {
  const text = await sh(MKTREE, ["manifest", "--no-dir-mtime", dir]);
  return text.split("\n").filter((l) => l !== "" && !l.startsWith(". d "))
    .map((l) => l.replace(/(mtime=[0-9-]+)\.[0-9]+/, "$1"));
}

function sameLines(a: string[], b: string[], what: string): void {
  const sa = new Set(a), sb = new Set(b);
  const onlyA = a.filter((l) => !sb.has(l)), onlyB = b.filter((l) => !sa.has(l));
  assert.deepEqual(
    { onlyA: onlyA.slice(0, 5), onlyB: onlyB.slice(0, 5) },
    { onlyA: [], onlyB: [] },
    what,
  );
  assert.equal(a.length, b.length, what);
}

Deno.test({
  name: "umoci unpacks strata's layer tars (base + aufs branch) to the tree strata applies",
  ignore: !available,
  async fn() {
    const base = await Deno.makeTempDir({ prefix: "strata-umoci-" });
    const env = { PEER_TMP: join(base, "peer") };
    try {
      const t = join(base, "t");
      await sh(MKTREE, [
        "--files",
        "300",
        "--dirs",
        "40",
        "--big-count",
        "1",
        "--big-mib",
        "1",
        "all",
        t,
      ]);
      // umoci cannot carry sockets; neither tar writes them anyway.
      await sh("find", [join(t, "rootfs"), "-type", "s", "-delete"]);
      await save(tarDirectory(join(t, "rootfs")), join(base, "rootfs.tar"));
      await save(
        tarDirectory(join(t, "aufs-rw"), { excludePatterns: [...AUFS_DIFF_EXCLUDES] }),
        join(base, "aufs-rw.tar"),
      );
      const ours = join(base, "ours");
      for (const tar of ["rootfs.tar", "aufs-rw.tar"]) {
        await applyLayer((await Deno.open(join(base, tar))).readable, ours);
      }
      const theirs = join(base, "theirs");
      await sh(
        UMOCI_PEER,
        ["unpack", theirs, join(base, "rootfs.tar"), join(base, "aufs-rw.tar")],
        env,
      );
      sameLines(await manifest(ours), await manifest(theirs), "strata applyLayer vs umoci unpack");
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
});
