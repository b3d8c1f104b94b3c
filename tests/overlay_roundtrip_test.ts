import assert from "node:assert/strict";
import { join } from "node:path";
import { AT, S, systemLibc } from "../ffi/libc.ts";
import { tarDirectory } from "../lib/archive/tar_dir.ts";
import { nameText, type TarHeader, TarType } from "../lib/archive/tar_header.ts";
import { readTar } from "../lib/archive/tar_reader.ts";
import { untar } from "../lib/archive/untar.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";
import { layerArchive } from "../lib/layer_archive.ts";
import type { OverlayDriver } from "../lib/overlay/driver.ts";
import { withOverlay } from "./support/overlay_harness.ts";

const libc = systemLibc();
const enc = new TextEncoder();

/** One entry of a tree, as far as a layer tar can carry it. */
interface Entry {
  type: string;
  mode: string;
  owner: string;
  size?: number;
  sha256?: string;
  /** Seconds: the tar writer truncates mtimes to whole seconds. */
  mtime?: number;
  link?: string;
  rdev?: string;
  xattrs: string[];
  opaque: boolean;
  /** First path (in walk order) of the inode, for non-directories with more than one link. */
  hardlinkOf?: string;
}

const TYPES: Record<number, string> = {
  [S.IFREG]: "file",
  [S.IFDIR]: "dir",
  [S.IFLNK]: "symlink",
  [S.IFCHR]: "char",
  [S.IFBLK]: "block",
  [S.IFIFO]: "fifo",
};

async function sha256(path: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", Deno.readFileSync(path));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Every entry below `dir` (the dir itself left out, as in a layer tar), by
 * relative path. Whiteouts (char 0/0) are compared by type only: the tar
 * carries a `.wh.` name, no times or mode of the device the kernel makes.
 */
async function snapshot(dir: string): Promise<Record<string, Entry>> {
  const out: Record<string, Entry> = {};
  const inodes = new Map<number, string>();
  const walk = async (rel: string) => {
    const names = [...Deno.readDirSync(join(dir, rel))].map((e) => e.name).sort();
    for (const name of names) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const path = join(dir, r);
      const st = libc.fstatat(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW);
      const ft = st.mode & S.IFMT;
      const whiteout = ft === S.IFCHR && st.rdevMajor === 0 && st.rdevMinor === 0;
      const xattrs = ft === S.IFLNK ? [] : libc.llistxattr(path)
        .filter((x) => x.startsWith("user."))
        .sort()
        .map((x) => `${x}=${new TextDecoder().decode(libc.lgetxattr(path, x)!)}`);
      const e: Entry = {
        type: whiteout ? "whiteout" : TYPES[ft] ?? `type ${ft.toString(8)}`,
        mode: whiteout ? "-" : (st.mode & 0o7777).toString(8),
        owner: `${st.uid}:${st.gid}`,
        xattrs,
        opaque: ft === S.IFDIR && libc.lgetxattr(path, "trusted.overlay.opaque") !== null,
      };
      if (!whiteout) e.mtime = st.mtimeSec;
      if (ft === S.IFREG) {
        e.size = st.size;
        e.sha256 = await sha256(path);
      }
      if (ft === S.IFLNK) e.link = Deno.readLinkSync(path);
      if ((ft === S.IFCHR || ft === S.IFBLK) && !whiteout) {
        e.rdev = `${st.rdevMajor}:${st.rdevMinor}`;
      }
      if (ft !== S.IFDIR && !whiteout && st.nlink > 1) {
        const first = inodes.get(st.ino);
        if (first === undefined) inodes.set(st.ino, r);
        else e.hardlinkOf = first;
      }
      out[r] = e;
      if (ft === S.IFDIR) await walk(r);
    }
  };
  await walk("");
  return out;
}

async function bytesOf(stream: ReadableStream<Uint8Array>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const streamOf = (bytes: Uint8Array<ArrayBuffer>) => new Blob([bytes]).stream();

/**
 * A tar's entries as sorted lines: name, type, permission bits, owner ids and
 * names, size, mtime, link target (links only), device numbers (devices
 * only), xattrs and a digest of the body. The mode's file-type bits and the
 * link field of non-links are left out: containers/storage writes converted
 * whiteouts without type bits and keeps a stale link name on a whiteout that
 * shares the kernel's whiteout inode, details a reader ignores.
 */
async function tarEntries(tar: Uint8Array<ArrayBuffer>): Promise<string[]> {
  const out: string[] = [];
  let cur: TarHeader | undefined;
  const body: Uint8Array<ArrayBuffer>[] = [];
  const dec = new TextDecoder();
  const lines: Promise<string>[] = [];
  await readTar(streamOf(tar), {
    entry(h) {
      cur = h;
      body.length = 0;
    },
    data(chunk) {
      body.push(new Uint8Array(chunk));
    },
    end() {
      const h = cur!;
      const isLink = h.type === TarType.LINK || h.type === TarType.SYMLINK;
      const isDev = h.type === TarType.CHR || h.type === TarType.BLK;
      const xattrs = [...(h.xattrs ?? new Map())].map(([k, v]) => `${k}=${dec.decode(v)}`).sort();
      const fields = [
        nameText(h.name),
        String.fromCharCode(h.type),
        (h.mode & 0o7777).toString(8),
        `${h.uid}:${h.gid}`,
        `${h.uname}:${h.gname}`,
        h.size,
        `${h.mtimeSec}.${h.mtimeNsec}`,
        isLink ? nameText(h.linkname) : "",
        isDev ? `${h.devmajor}:${h.devminor}` : "",
        xattrs.join(";"),
      ].join("|");
      const data = new Blob(body);
      lines.push(
        data.arrayBuffer().then((b) => crypto.subtle.digest("SHA-256", b)).then((d) =>
          fields + "|" +
          Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("")
        ),
      );
    },
  });
  out.push(...await Promise.all(lines));
  return out.sort();
}

function write(path: string, content: string | Uint8Array, mode = 0o644): void {
  Deno.writeFileSync(path, typeof content === "string" ? enc.encode(content) : content, { mode });
  Deno.chmodSync(path, mode);
}

function random(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** The lower layer's files, written straight into its diff dir (a base layer is not mounted). */
function fillBase(dir: string): void {
  Deno.mkdirSync(join(dir, "etc"), { mode: 0o755 });
  write(join(dir, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
  write(join(dir, "etc/shadow"), "root:*:19000::::::\n", 0o600);
  Deno.chownSync(join(dir, "etc/shadow"), 0, 42);
  Deno.mkdirSync(join(dir, "bin"), { mode: 0o755 });
  write(join(dir, "bin/sh"), random(10000, 1), 0o755);
  Deno.linkSync(join(dir, "bin/sh"), join(dir, "bin/link-to-sh"));
  Deno.symlinkSync("bin", join(dir, "sbin"));
  write(join(dir, "old-file"), "old");
  for (const d of ["old-dir", "old-dir/sub", "gone-dir", "was-dir"]) Deno.mkdirSync(join(dir, d));
  write(join(dir, "old-dir/a"), "a");
  write(join(dir, "old-dir/sub/b"), "b");
  write(join(dir, "gone-dir/x"), "x");
  write(join(dir, "was-dir/y"), "y");
  write(join(dir, "was-file"), "was a file");
  write(join(dir, "modify-me"), "v1");
  write(join(dir, "chmod-me"), "mode and owner change");
  write(join(dir, "xattr-me"), "xattrs");
  libc.lsetxattr(join(dir, "xattr-me"), "user.a", enc.encode("1"));
}

/** The upper layer's changes, made through its overlay mount. */
function changeThroughMount(root: string): void {
  Deno.removeSync(join(root, "old-file"));
  Deno.removeSync(join(root, "old-dir"), { recursive: true });
  Deno.mkdirSync(join(root, "old-dir"));
  write(join(root, "old-dir/new"), "new");
  Deno.removeSync(join(root, "gone-dir"), { recursive: true });
  Deno.removeSync(join(root, "was-dir"), { recursive: true });
  write(join(root, "was-dir"), "now a file");
  Deno.removeSync(join(root, "was-file"));
  Deno.mkdirSync(join(root, "was-file"));
  write(join(root, "was-file/inside"), "now a dir");
  write(join(root, "modify-me"), "v2, longer");
  Deno.chmodSync(join(root, "chmod-me"), 0o600);
  Deno.chownSync(join(root, "chmod-me"), 1000, 1000);
  libc.lsetxattr(join(root, "xattr-me"), "user.b", enc.encode("2"));
  Deno.linkSync(join(root, "bin/sh"), join(root, "bin/sh-link"));

  const n = join(root, "new");
  Deno.mkdirSync(n);
  Deno.chmodSync(n, 0o2755);
  libc.lsetxattr(n, "user.dir", enc.encode("yes"));
  write(join(n, "file"), "hello\n", 0o640);
  Deno.chownSync(join(n, "file"), 1000, 2000);
  Deno.linkSync(join(n, "file"), join(n, "file-link"));
  write(join(n, "exec"), "#!/bin/sh\n", 0o4755);
  write(join(n, "big"), random(200_000, 7));
  Deno.symlinkSync("file", join(n, "rel"));
  Deno.symlinkSync("/etc/passwd", join(n, "abs"));
  Deno.symlinkSync("nowhere", join(n, "dangling"));
  libc.mknodat(AT.FDCWD, join(n, "fifo"), S.IFIFO | 0o644, 0, 0);
  libc.mknodat(AT.FDCWD, join(n, "null"), S.IFCHR | 0o666, 1, 3);
  Deno.mkdirSync(join(n, "tmp"));
  Deno.chmodSync(join(n, "tmp"), 0o1777);
  Deno.mkdirSync(join(n, "empty"));
  Deno.utimeSync(join(n, "file"), new Date(1_600_000_000_123), new Date(1_500_000_000_987));
}

async function mounted<T>(driver: OverlayDriver, id: string, fn: (root: string) => T | Promise<T>) {
  const root = await driver.get(id);
  try {
    return await fn(root);
  } finally {
    await driver.put(id);
  }
}

Deno.test("a layer made through an overlay mount survives diff → applyDiff, and a trip through an aufs-format dir", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("base", "");
    fillBase(driver.diffDir("base"));
    await driver.create("top", "base");
    await mounted(driver, "top", changeThroughMount);

    const original = await snapshot(driver.diffDir("top"));
    // The on-disk overlay format the kernel wrote.
    assert.equal(original["old-file"].type, "whiteout");
    assert.equal(original["gone-dir"].type, "whiteout");
    assert.equal(original["old-dir"].opaque, true);
    assert.equal(original["was-file"].opaque, true);
    assert.equal(original["new/file-link"].hardlinkOf, "new/file");
    assert.equal(original["bin/sh-link"].hardlinkOf, "bin/sh");

    // The kernel's whiteouts read as deletions.
    const changes = (await driver.changes("top", "base")).map((c) => `${c.kind} ${c.path}`);
    for (
      const c of ["delete /old-file", "delete /gone-dir", "modify /modify-me", "add /new/file"]
    ) {
      assert.ok(changes.includes(c), `${c} in ${changes.join(", ")}`);
    }

    // overlay diff dir → tar → a fresh layer on the same parent.
    const tar = await bytesOf(await driver.diff("top", "base"));
    await driver.create("copy", "base");
    await driver.applyDiff("copy", "base", streamOf(tar));
    assert.deepEqual(await snapshot(driver.diffDir("copy")), original);
    const view = await mounted(driver, "top", snapshot);
    assert.deepEqual(await mounted(driver, "copy", snapshot), view);
    assert.equal(view["old-file"], undefined);
    assert.deepEqual(Object.keys(view).filter((p) => p.startsWith("old-dir")), [
      "old-dir",
      "old-dir/new",
    ]);

    // The same tar into an aufs-format dir (whiteouts stay .wh. files), back out, into overlay again.
    const aufsDir = join(h.base, "aufs-diff");
    await untar(streamOf(tar), aufsDir);
    assert.ok(Deno.lstatSync(join(aufsDir, ".wh.old-file")).isFile);
    assert.ok(Deno.lstatSync(join(aufsDir, "old-dir", ".wh..wh..opq")).isFile);
    const back = await bytesOf(tarDirectory(aufsDir, { excludePatterns: [...AUFS_DIFF_EXCLUDES] }));
    // The same entries; only their order differs (.wh.<name> sorts apart from <name>).
    const entries = await tarEntries(tar);
    assert.equal(
      entries.length,
      Object.keys(original).length + 2,
      "one entry per path, plus two opaque markers",
    );
    assert.deepEqual(await tarEntries(back), entries);
    await driver.create("copy2", "base");
    await driver.applyDiff("copy2", "base", streamOf(back));
    assert.deepEqual(await snapshot(driver.diffDir("copy2")), original);
  }, { driver: { archive: layerArchive } });
});
