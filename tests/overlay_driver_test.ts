import assert from "node:assert/strict";
import { join } from "node:path";
import { AT, type DirEntry, DT, Errno, ErrnoError, S, systemLibc } from "../ffi/libc.ts";
import "../lib/aufs/driver.ts";
import { driverNames, openDriver } from "../lib/driver.ts";
import { IncompatibleFsError, LayerError, NotSupportedError } from "../lib/errors.ts";
import { isMountpoint, type MountInfo, readMountinfo } from "../lib/mounts.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { OverlayNotSupportedError } from "../lib/overlay/probe.ts";
import { makeFakeProc } from "./support/fake_proc.ts";
import { mountsBelow, unmountAllBelow, withOverlay } from "./support/overlay_harness.ts";
import { RecordingLibc } from "./support/recording_libc.ts";

const libc = systemLibc();
const noModule = () => Promise.resolve();

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** The top mount at `path`, if any. */
function mountAt(path: string): MountInfo | undefined {
  return readMountinfo().findLast((m) => m.mountPoint === path);
}

/** `key=value` options of an overlay mount's superblock, in order. */
function superOptions(m: MountInfo): Map<string, string> {
  return new Map(
    m.superOptions.split(",").map((o) => {
      const eq = o.indexOf("=");
      return eq < 0 ? [o, ""] : [o.slice(0, eq), o.slice(eq + 1)];
    }),
  );
}

/** Type, rdev and the opaque xattr of an on-disk entry. */
function onDisk(path: string): { type: number; rdev: string; opaque: string | null } {
  const st = libc.fstatat(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW);
  const x = (st.mode & S.IFMT) === S.IFDIR ? libc.lgetxattr(path, "trusted.overlay.opaque") : null;
  return {
    type: st.mode & S.IFMT,
    rdev: `${st.rdevMajor}:${st.rdevMinor}`,
    opaque: x === null ? null : new TextDecoder().decode(x),
  };
}

const listing = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

// ---------------------------------------------------------------- Init

Deno.test("init lays out layers, diff, mnt, work and l (0700) as a private mount; status says overlay facts", async () => {
  await withOverlay(async (driver, h) => {
    assert.equal(driver.name, "overlay");
    assert.equal(driver.whiteoutFormat, "overlay");
    for (const p of ["", "layers", "diff", "mnt", "work", "l"]) {
      const st = Deno.statSync(join(h.root, p));
      assert.ok(st.isDirectory, p);
      assert.equal(st.mode! & 0o777, 0o700, p);
    }
    assert.deepEqual(mountAt(h.root)?.optional, [], "the root is a private mountpoint");
    assert.deepEqual(
      listing(h.root).filter((n) => n.startsWith(".")),
      [],
      "probe leftovers in the root",
    );
    await driver.create("1", "");
    const status = new Map(await driver.status());
    assert.equal(status.get("Root Dir"), h.root);
    assert.equal(status.get("Backing Filesystem"), driver.backingFs);
    assert.equal(status.get("Dirs"), "1");
    assert.equal(status.get("Supports d_type"), "true");
    assert.equal(status.get("Max Lower Layers"), "500");
    assert.equal(status.get("Mount Options"), "index=off,redirect_dir=nofollow,metacopy=off");
  });
});

Deno.test("the driver is registered as overlay, and auto picks it on a kernel without aufs", async () => {
  assert.ok(driverNames().includes("overlay"));
  const fs = Deno.readTextFileSync("/proc/filesystems");
  await withOverlay(async (_driver, h) => {
    const named = await openDriver("overlay", h.root, h.options);
    assert.ok(named instanceof OverlayDriver);
    const auto = await openDriver("auto", h.root, h.options);
    assert.equal(auto.name, fs.includes("aufs") ? "aufs" : "overlay");
  });
});

Deno.test("auto fails with NotSupportedError naming aufs and overlay when the kernel has neither", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-overlay-" });
  try {
    const proc = await makeFakeProc({
      dir: join(base, "proc"),
      filesystems: "nodev\ttmpfs\n\text4\n",
    });
    const err = await openDriver(
      "auto",
      join(base, "root"),
      {
        procRoot: proc,
        loadModule: noModule,
      } as Parameters<typeof openDriver>[2],
    ).then(() => undefined, (e) => e);
    assert.ok(err instanceof NotSupportedError, String(err));
    assert.match(err.message, /aufs: .*aufs/);
    assert.match(err.message, /overlay: .*overlay was not found/);
    assert.equal(exists(join(base, "root")), false);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("init tries modprobe overlay first, then refuses a kernel whose filesystems lack overlay", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-overlay-" });
  try {
    const proc = await makeFakeProc({
      dir: join(base, "proc"),
      filesystems: "nodev\toverlayfoo\n",
    });
    const loaded: string[] = [];
    await assert.rejects(
      OverlayDriver.init(join(base, "root"), {
        procRoot: proc,
        loadModule: (m) => {
          loaded.push(m);
          return Promise.resolve();
        },
      }),
      (e) => e instanceof OverlayNotSupportedError && e instanceof NotSupportedError,
    );
    assert.deepEqual(loaded, ["overlay"]);
    assert.equal(exists(join(base, "root")), false);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("init refuses a user namespace other than the initial one", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-overlay-" });
  try {
    const proc = await makeFakeProc({
      dir: join(base, "proc"),
      filesystems: "nodev\toverlay\n",
      uidMap: "0 100000 65536\n",
    });
    await assert.rejects(
      OverlayDriver.init(join(base, "root"), { procRoot: proc, loadModule: noModule }),
      (e) => e instanceof OverlayNotSupportedError && /user namespace/.test(e.message),
    );
    assert.equal(exists(join(base, "root")), false);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("init refuses a root inside an overlay mount (overlay cannot be its own upper)", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-overlay-" });
  const merged = join(base, "merged");
  try {
    for (const d of ["lower", "upper", "work", "merged"]) Deno.mkdirSync(join(base, d));
    libc.mount(
      "overlay",
      merged,
      "overlay",
      0n,
      `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work`,
    );
    try {
      const root = join(merged, "store", "overlay");
      Deno.mkdirSync(join(merged, "store"));
      await assert.rejects(
        OverlayDriver.init(root, { loadModule: noModule }),
        (e) =>
          e instanceof IncompatibleFsError && e.backingFs === "overlayfs" &&
          e.message.includes('overlay is not supported over "overlayfs"'),
      );
      assert.equal(exists(root), false);
      assert.deepEqual(mountsBelow(base), [merged]);
    } finally {
      libc.umount2(merged, 0);
    }
  } finally {
    unmountAllBelow(base);
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("init refuses a filesystem without d_type, undoes its bind mount and removes the root it made", async () => {
  // No filesystem on this host lacks d_type (tmpfs, ext4 and xfs with ftype=1
  // all fill it in); the double reports DT_UNKNOWN for every entry instead.
  const base = await Deno.makeTempDir({ prefix: "strata-overlay-" });
  try {
    const root = join(base, "overlay");
    const double = new RecordingLibc({ fakeFs: {} });
    double.respond("readdir", (fd) => {
      return libc.readdir(fd as number).map((e: DirEntry) => ({ ...e, type: DT.UNKNOWN }));
    });
    await assert.rejects(
      OverlayDriver.init(root, { libc: double, loadModule: noModule, onWarning: () => {} }),
      (e) => e instanceof IncompatibleFsError && /does not report d_type/.test(String(e.cause)),
    );
    assert.equal(exists(root), false);
    assert.deepEqual(mountsBelow(base), []);
    assert.equal(double.callsOf("mount").filter((c) => c.args[2] === "overlay").length, 0);
  } finally {
    unmountAllBelow(base);
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("init removes -removing leftovers, dangling short links and probe dirs of killed Inits", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("kept", "");
    const [keptLink] = listing(join(h.root, "l"));
    for (const d of ["work", "diff", "mnt"]) Deno.mkdirSync(join(h.root, d, "123-removing"));
    Deno.symlinkSync("../diff/gone", join(h.root, "l", "zz"));
    Deno.symlinkSync("elsewhere", join(h.root, "l", "zy"));
    // A crashed Init's probe, its union still mounted, and one that may be running now.
    const stale = join(h.root, ".overlay-probe-crashed");
    for (const d of ["", "lower", "upper", "work", "merged"]) Deno.mkdirSync(join(stale, d));
    libc.mount(
      "overlay",
      join(stale, "merged"),
      "overlay",
      0n,
      `lowerdir=${stale}/lower,upperdir=${stale}/upper,workdir=${stale}/work`,
    );
    const fresh = join(h.root, ".dtype-probe-running");
    Deno.mkdirSync(fresh);
    // A running Init holds its probe dir's flock: that, not its age, keeps it.
    const running = Deno.openSync(fresh, { read: true });
    running.lockSync(true);

    try {
      await OverlayDriver.init(h.root, h.options);
    } finally {
      running.close();
    }
    for (const d of ["work", "diff", "mnt"]) {
      assert.equal(exists(join(h.root, d, "123-removing")), false, d);
    }
    assert.deepEqual(listing(join(h.root, "l")), [keptLink, "zy"].sort());
    assert.equal(Deno.readLinkSync(join(h.root, "l", keptLink)), "../diff/kept");
    assert.equal(exists(stale), false);
    assert.equal(readMountinfo().some((m) => m.mountPoint.startsWith(stale)), false);
    assert.equal(exists(fresh), true);
  });
});

// ---------------------------------------------------------------- create / remove

Deno.test("create makes mnt, diff and work dirs and a short link; remove deletes them all", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    for (const d of ["mnt", "diff", "work"]) {
      assert.ok(Deno.statSync(join(h.root, d, "b")).isDirectory, d);
    }
    assert.equal(Deno.readTextFileSync(join(h.root, "layers", "b")), "a\n");
    const links = listing(join(h.root, "l"));
    assert.deepEqual(links, ["0", "1"], "shortest names first");
    assert.deepEqual(links.map((n) => Deno.readLinkSync(join(h.root, "l", n))), [
      "../diff/a",
      "../diff/b",
    ]);

    await driver.remove("b");
    for (const d of ["mnt", "diff", "work", "layers"]) {
      assert.equal(exists(join(h.root, d, "b")), false, d);
      assert.equal(exists(join(h.root, d, "b-removing")), false, d);
    }
    assert.deepEqual(listing(join(h.root, "l")), ["0"]);
    await driver.create("c", "a");
    assert.equal(Deno.readLinkSync(join(h.root, "l", "1")), "../diff/c", "a freed name is reused");
    await driver.remove("nope");
  });
});

Deno.test("remove unmounts a mounted layer first, then deletes its dirs, work dir and link", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    const path = await driver.get("b");
    Deno.writeTextFileSync(join(path, "f"), "x");
    assert.equal(mountAt(path)?.fsType, "overlay");
    await driver.remove("b");
    assert.equal(isMountpoint(path), false);
    assert.equal(exists(join(h.root, "work", "b")), false);
    assert.equal(exists(join(h.root, "diff", "b")), false);
    assert.deepEqual(
      listing(join(h.root, "l")).map((n) => Deno.readLinkSync(join(h.root, "l", n))),
      [
        "../diff/a",
      ],
    );
    assert.equal(await driver.mountCount("a"), 0);
  });
});

// ---------------------------------------------------------------- get / put

Deno.test("a base layer is never mounted: get returns diff/<id>", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("1", "");
    const path = await driver.get("1");
    assert.equal(path, join(h.root, "diff", "1"));
    assert.equal(driver.isMounted(path), false);
    assert.equal(mountsBelow(join(h.root, "mnt")).length, 0);
    await driver.put("1");
  });
});

Deno.test("get mounts overlay at mnt/<id>: lowerdir nearest first, upperdir diff/<id>, workdir work/<id>", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    await driver.create("c", "b");
    Deno.writeTextFileSync(join(h.root, "diff", "a", "from-a"), "a");
    Deno.writeTextFileSync(join(h.root, "diff", "b", "from-b"), "b");
    const path = await driver.get("c");
    try {
      assert.equal(path, join(h.root, "mnt", "c"));
      const m = mountAt(path);
      assert.ok(m, "mounted");
      assert.equal(m.fsType, "overlay");
      assert.equal(m.source, "overlay");
      const o = superOptions(m);
      assert.equal(o.get("lowerdir"), `${h.root}/diff/b:${h.root}/diff/a`);
      assert.equal(o.get("upperdir"), `${h.root}/diff/c`);
      assert.equal(o.get("workdir"), `${h.root}/work/c`);
      assert.equal(o.get("redirect_dir"), "nofollow");
      assert.ok(!o.has("index") || o.get("index") === "off");
      assert.ok(!o.has("metacopy") || o.get("metacopy") === "off");
      assert.deepEqual(listing(path), ["from-a", "from-b"]);
      Deno.writeTextFileSync(join(path, "from-c"), "c");
      assert.equal(Deno.readTextFileSync(join(h.root, "diff", "c", "from-c")), "c");
    } finally {
      await driver.put("c");
    }
    assert.equal(isMountpoint(path), false);
  });
});

Deno.test("get returns one path and mounts once; the last put unmounts; counts never go negative", async () => {
  await withOverlay(async (driver) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    const p1 = await driver.get("b");
    const p2 = await driver.get("b");
    assert.equal(p1, p2);
    assert.equal(readMountinfo().filter((m) => m.mountPoint === p1).length, 1);
    assert.equal(await driver.mountCount("b"), 2);
    await driver.put("b");
    assert.ok(driver.isMounted(p1));
    await driver.put("b");
    assert.equal(driver.isMounted(p1), false);
    await driver.put("b");
    assert.equal(await driver.mountCount("b"), 0);
  });
});

Deno.test("a mount the kernel refuses leaves the count unchanged and names the layer and path", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    // This kernel has no SELinux: overlay refuses the context= option with EINVAL.
    const err = await driver.get("b", { mountLabel: "system_u:object_r:container_file_t:s0:c1,c2" })
      .then(() => undefined, (e) => e);
    if (err === undefined) {
      await driver.put("b"); // a kernel with SELinux took it
      return;
    }
    assert.ok(err instanceof LayerError, String(err));
    assert.equal(err.id, "b");
    assert.ok(err.message.includes(join(h.root, "mnt", "b")), err.message);
    assert.match(err.message, /overlay mount of 1 lower layer\(s\) \(absolute paths/);
    assert.equal(await driver.mountCount("b"), 0);
    assert.equal(isMountpoint(join(h.root, "mnt", "b")), false);
  });
});

Deno.test('the mount label is added as context="<label>" after the options', async () => {
  const double = new RecordingLibc({ fakeFs: {} });
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    const target = join(h.root, "mnt", "b");
    let seen: unknown[] = [];
    double.respond("mount", (...args) => {
      seen = args;
      throw new ErrnoError(Errno.EPERM, "mount", target);
    }, { when: (_s, t) => t === target, times: 1 });
    const label = "system_u:object_r:container_file_t:s0:c1,c2";
    await assert.rejects(driver.get("b", { mountLabel: label }), LayerError);
    assert.deepEqual(seen.slice(0, 4), ["overlay", target, "overlay", 0n]);
    assert.equal(
      seen[4],
      `lowerdir=${h.root}/diff/a,upperdir=${h.root}/diff/b,workdir=${h.root}/work/b,` +
        `index=off,redirect_dir=nofollow,metacopy=off,context="${label}"`,
    );
    assert.equal(await driver.mountCount("b"), 0);
  }, { driver: { libc: double } });
});

Deno.test("ids with ':', ',' and '\\' are escaped in the mount data and mount", async () => {
  await withOverlay(async (driver, h) => {
    const ids = ["a:b", "c,d", "e\\f"];
    await driver.create(ids[0], "");
    await driver.create(ids[1], ids[0]);
    await driver.create(ids[2], ids[1]);
    Deno.writeTextFileSync(join(h.root, "diff", ids[0], "deep"), "0");
    Deno.writeTextFileSync(join(h.root, "diff", ids[1], "mid"), "1");
    const path = await driver.get(ids[2]);
    try {
      assert.deepEqual(listing(path), ["deep", "mid"]);
      Deno.writeTextFileSync(join(path, "top"), "2");
      assert.equal(Deno.readTextFileSync(join(h.root, "diff", ids[2], "top")), "2");
    } finally {
      await driver.put(ids[2]);
    }
  });
});

Deno.test("counts across processes: a get in one deno process and a put in another balance", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    const driverUrl = new URL("../lib/overlay/driver.ts", import.meta.url).href;
    const run = async (op: "get" | "put") => {
      const code = `
        import { OverlayDriver } from ${JSON.stringify(driverUrl)};
        const d = await OverlayDriver.init(${
        JSON.stringify(h.root)
      }, { loadModule: async () => {} });
        if (${JSON.stringify(op)} === "get") console.log(await d.get("b"));
        else { await d.put("b"); console.log("put"); }
      `;
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--quiet", code],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `child ${op} failed: ${stderr}`);
      return new TextDecoder().decode(out.stdout).trim();
    };
    const target = join(h.root, "mnt", "b");
    assert.equal(await run("get"), target);
    assert.equal(driver.isMounted(target), true, "the child's mount outlives the child");
    assert.equal(await driver.mountCount("b"), 1);
    assert.equal(await run("put"), "put");
    assert.equal(driver.isMounted(target), false);
    assert.equal(await driver.mountCount("b"), 0);
  });
});

Deno.test("cleanup unmounts every union under mnt, then the root's bind mount", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    await driver.create("c", "a");
    await driver.get("b");
    await driver.get("c");
    assert.equal(mountsBelow(join(h.root, "mnt")).length, 2);
    await driver.cleanup();
    assert.deepEqual(mountsBelow(h.root), []);
  });
});

// ---------------------------------------------------------------- whiteouts on disk

Deno.test("a deletion through the mount is a char 0/0 whiteout; a dir made over a deleted one is opaque", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    const lower = join(h.root, "diff", "a");
    Deno.writeTextFileSync(join(lower, "file"), "x");
    Deno.mkdirSync(join(lower, "dir"));
    Deno.writeTextFileSync(join(lower, "dir", "inner"), "y");
    const path = await driver.get("b");
    try {
      Deno.removeSync(join(path, "file"));
      Deno.removeSync(join(path, "dir"), { recursive: true });
      Deno.mkdirSync(join(path, "dir"));
      assert.deepEqual(listing(join(path, "dir")), []);
    } finally {
      await driver.put("b");
    }
    const upper = join(h.root, "diff", "b");
    assert.deepEqual(onDisk(join(upper, "file")), { type: S.IFCHR, rdev: "0:0", opaque: null });
    assert.deepEqual(onDisk(join(upper, "dir")), { type: S.IFDIR, rdev: "0:0", opaque: "y" });
    assert.deepEqual(listing(upper), ["dir", "file"]);
  });
});

Deno.test("delete then recreate a file and a dir within one layer", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    await driver.create("c", "b");
    const lower = join(h.root, "diff", "a");
    Deno.writeTextFileSync(join(lower, "f"), "old");
    Deno.mkdirSync(join(lower, "d"));
    Deno.writeTextFileSync(join(lower, "d", "old"), "old");
    const b = await driver.get("b");
    try {
      Deno.removeSync(join(b, "f"));
      Deno.writeTextFileSync(join(b, "f"), "new");
      Deno.removeSync(join(b, "d"), { recursive: true });
      Deno.mkdirSync(join(b, "d"));
      Deno.writeTextFileSync(join(b, "d", "new"), "new");
    } finally {
      await driver.put("b");
    }
    const upper = join(h.root, "diff", "b");
    assert.equal(onDisk(join(upper, "f")).type, S.IFREG);
    assert.deepEqual(onDisk(join(upper, "d")), { type: S.IFDIR, rdev: "0:0", opaque: "y" });
    const c = await driver.get("c");
    try {
      assert.equal(Deno.readTextFileSync(join(c, "f")), "new");
      assert.deepEqual(listing(join(c, "d")), ["new"]);
    } finally {
      await driver.put("c");
    }
  });
});

Deno.test("delete in one layer, recreate in the next: the newest file and dir win", async () => {
  await withOverlay(async (driver, h) => {
    for (const [id, parent] of [["a", ""], ["b", "a"], ["c", "b"], ["d", "c"]]) {
      await driver.create(id, parent);
    }
    const lower = join(h.root, "diff", "a");
    Deno.writeTextFileSync(join(lower, "f"), "old");
    Deno.mkdirSync(join(lower, "d"));
    Deno.writeTextFileSync(join(lower, "d", "old"), "old");
    const b = await driver.get("b");
    try {
      Deno.removeSync(join(b, "f"));
      Deno.removeSync(join(b, "d"), { recursive: true });
    } finally {
      await driver.put("b");
    }
    assert.equal(onDisk(join(h.root, "diff", "b", "f")).type, S.IFCHR);
    assert.equal(onDisk(join(h.root, "diff", "b", "d")).type, S.IFCHR);
    const c = await driver.get("c");
    try {
      assert.deepEqual(listing(c), []);
      Deno.writeTextFileSync(join(c, "f"), "new");
      Deno.mkdirSync(join(c, "d"));
      Deno.writeTextFileSync(join(c, "d", "new"), "new");
    } finally {
      await driver.put("c");
    }
    assert.equal(onDisk(join(h.root, "diff", "c", "f")).type, S.IFREG);
    assert.equal(onDisk(join(h.root, "diff", "c", "d")).type, S.IFDIR);
    const d = await driver.get("d");
    try {
      assert.equal(Deno.readTextFileSync(join(d, "f")), "new");
      assert.deepEqual(listing(join(d, "d")), ["new"]);
    } finally {
      await driver.put("d");
    }
  });
});
