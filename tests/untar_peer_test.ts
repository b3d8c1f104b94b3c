/**
 * Differential tests against the Go peer (containers/storage 1.43's
 * archive code, /tmp/peers/bin/storagepeer) and GNU tar, on a small
 * mktree.sh tree: the same tar extracted by both sides must give the same
 * `mktree.sh manifest` (names, types, modes, owners, sizes, ns mtimes,
 * rdev, hard-link groups, xattrs, contents).
 */

import { runCommand } from "./support/run.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { applyLayer } from "../lib/archive/apply_layer.ts";
import { untar } from "../lib/archive/untar.ts";
import { exists, MKTREE, PEER, RESOLVERS } from "./support/extract_fixtures.ts";

const available = exists(PEER) && exists(MKTREE) && exists("/usr/bin/tar");
if (!available) {
  console.log(`untar_peer_test: ${PEER} or ${MKTREE} missing: differential tests ignored`);
}

async function sh(cmd: string, args: string[], opts: { stdin?: string; cwd?: string } = {}) {
  const r = await runCommand(cmd, args, {
    cwd: opts.cwd,
    stdin: opts.stdin ? { file: opts.stdin } : undefined,
  });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.err}`);
  return r.out;
}

async function toFile(path: string, cmd: string, args: string[]): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).spawn();
  await child.stdout.pipeTo(f.writable);
  assert.ok((await child.status).success, `${cmd} ${args.join(" ")}`);
}

const manifest = (dir: string) => sh(MKTREE, ["manifest", dir]);

/** Manifest lines, without the root directory's own line (untar never sets its metadata). */
const withoutRoot = (m: string) => m.split("\n").filter((l) => !l.startsWith(". d ")).join("\n");

const readTar = async (path: string) => (await Deno.open(path)).readable;

let fixture: Promise<string> | undefined;

/** The trees and tars, made once: `<base>/trees/{rootfs,aufs-rw}` and the tars. */
function trees(): Promise<string> {
  fixture ??= (async () => {
    const base = await Deno.makeTempDir({ prefix: "strata-peer-" });
    const t = join(base, "trees");
    const flags = ["--files", "300", "--dirs", "40", "--big-count", "1", "--big-mib", "1"];
    await sh(MKTREE, [...flags, "all", t]);
    await toFile(join(base, "rootfs.tar"), PEER, ["tar", join(t, "rootfs")]);
    await toFile(join(base, "aufs-rw.tar"), PEER, ["tar", join(t, "aufs-rw")]);
    await sh("tar", [
      "--format=pax",
      "--xattrs",
      "--xattrs-include=*",
      "-cf",
      join(base, "rootfs-gnu.tar"),
      "-C",
      join(t, "rootfs"),
      ".",
    ]);
    await sh("tar", [
      "--xattrs",
      "--xattrs-include=*",
      "--sort=name",
      "-cf",
      join(base, "aufs-rw-gnu.tar"),
      "-C",
      join(t, "aufs-rw"),
      ".",
    ]);
    return base;
  })();
  return fixture;
}

Deno.test({
  name: "differential: untar of the peer's rootfs tar matches storagepeer untar",
  ignore: !available,
  async fn() {
    const base = await trees();
    const theirs = join(base, "untar-peer");
    await sh(PEER, ["untar", theirs], { stdin: join(base, "rootfs.tar") });
    const want = withoutRoot(await manifest(theirs));
    assert.ok(want.split("\n").length > 400);
    for (const r of RESOLVERS) {
      const ours = join(base, `untar-${r.name}`);
      await untar(await readTar(join(base, "rootfs.tar")), ours, r);
      assert.equal(withoutRoot(await manifest(ours)), want, r.name);
    }
  },
});

Deno.test({
  name: "differential: applyLayer of the aufs-rw tar matches storagepeer applylayer",
  ignore: !available,
  async fn() {
    const base = await trees();
    const rootfs = join(base, "trees", "rootfs");
    for (const tar of ["aufs-rw.tar", "aufs-rw-gnu.tar"]) {
      const theirs = join(base, `apply-peer-${tar}`);
      await sh("cp", ["-a", rootfs, theirs]);
      const peerSize = Number(
        (await sh(PEER, ["applylayer", theirs], { stdin: join(base, tar) })).trim(),
      );
      let want = await manifest(theirs);
      if (tar === "aufs-rw-gnu.tar") {
        // Go leaves an empty .wh..wh.plnk behind (it makes the parent of the
        // pseudo-link entries it skips); we do not.
        assert.match(want, /^\.wh\.\.wh\.plnk d /m);
        want = want.split("\n").filter((l) => !l.startsWith(".wh..wh.plnk d ")).join("\n");
      }
      for (const r of RESOLVERS) {
        const ours = join(base, `apply-${r.name}-${tar}`);
        await sh("cp", ["-a", rootfs, ours]);
        const size = await applyLayer(await readTar(join(base, tar)), ours, r);
        assert.equal(size, peerSize, `${tar} ${r.name}: size`);
        assert.equal(await manifest(ours), want, `${tar} ${r.name}`);
      }
    }
  },
});

Deno.test({
  name: "differential: GNU tar --format=pax --xattrs of rootfs untars to what GNU tar extracts",
  ignore: !available,
  async fn() {
    const base = await trees();
    const gnu = join(base, "gnu-x");
    await Deno.mkdir(gnu);
    await sh("tar", ["--xattrs", "--xattrs-include=*", "-xf", join(base, "rootfs-gnu.tar")], {
      cwd: gnu,
    });
    const want = withoutRoot(await manifest(gnu));
    for (const r of RESOLVERS) {
      const ours = join(base, `gnu-${r.name}`);
      await untar(await readTar(join(base, "rootfs-gnu.tar")), ours, r);
      assert.equal(withoutRoot(await manifest(ours)), want, r.name);
    }
  },
});

Deno.test({
  name: "differential: clean up the peer fixtures",
  ignore: !available,
  async fn() {
    if (fixture) await Deno.remove(await fixture, { recursive: true });
  },
});
