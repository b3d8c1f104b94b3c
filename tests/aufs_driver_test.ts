import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { Errno, MS, systemLibc } from "../ffi/libc.ts";
import { AufsDriver } from "../lib/aufs/driver.ts";
import { driverNames, openDriver } from "../lib/driver.ts";
import {
  AufsBranchLimitError,
  AufsNestedError,
  AufsNotSupportedError,
  IncompatibleFsError,
  InvalidLayerIdError,
  LayerError,
  LayerNotFoundError,
} from "../lib/errors.ts";
import { FS_MAGIC } from "../lib/fsmagic.ts";
import { isMountpoint, readMountinfo } from "../lib/mounts.ts";
import { LayerStore } from "../lib/store.ts";
import { readTar } from "../lib/archive/tar_reader.ts";
import { openHarness, withAufs } from "./support/aufs_harness.ts";
import type { RecordingLibc } from "./support/recording_libc.ts";
import { HAS_AUFS } from "./support/backends.ts";
import { markRoot } from "./support/root.ts";

const XINO = ",dio,xino=/dev/shm/aufs.xino";

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Every path below `dir`, relative, sorted (lock files left out: they come and go). */
function tree(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const rel = prefix + e.name;
    if (rel === "locks") continue;
    out.push(rel);
    if (e.isDirectory) out.push(...tree(join(dir, e.name), rel + "/"));
  }
  return out.sort();
}

/** The aufs mount(2) calls on `target`, as [flags, data]. */
function aufsMounts(libc: RecordingLibc, target: string): [bigint, string][] {
  return libc.callsOf("mount")
    .filter((c) => c.args[1] === target && c.args[2] === "aufs")
    .map((c) => [c.args[3] as bigint, c.args[4] as string]);
}

const umountsOf = (libc: RecordingLibc, target: string) =>
  libc.callsOf("umount2").filter((c) => c.args[0] === target).length;

const whenTarget = (target: string) => (...args: unknown[]) =>
  args[0] === target || args[1] === target;

async function sha256hex(s: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------- Init

Deno.test({
  name: `init on a kernel without aufs throws AufsNotSupportedError and creates nothing${
    HAS_AUFS ? " [ignored: this kernel has aufs]" : ""
  }`,
  ignore: HAS_AUFS,
}, async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-aufs-" });
  try {
    const root = join(base, "aufs");
    await assert.rejects(AufsDriver.init(root), AufsNotSupportedError);
    assert.equal(exists(root), false);
    await assert.rejects(openDriver("aufs", root), AufsNotSupportedError);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("init refuses a nested user namespace before touching the disk", async () => {
  const h = await openHarness({ proc: { uidMap: "0 100000 65536\n" } });
  try {
    await assert.rejects(h.reopen(), AufsNestedError);
    assert.equal(exists(h.root), false);
    assert.deepEqual(h.libc.mountCalls(), []);
  } finally {
    await h.close();
  }
});

Deno.test("init without aufs in filesystems throws AufsNotSupportedError", async () => {
  const h = await openHarness({ proc: { filesystems: "nodev\toverlay\n" } });
  try {
    await assert.rejects(h.reopen(), AufsNotSupportedError);
    assert.equal(exists(h.root), false);
  } finally {
    await h.close();
  }
});

Deno.test("init tries to load the module before its checks", async () => {
  const h = await openHarness({ proc: { filesystems: "" } });
  try {
    const loaded: string[] = [];
    await assert.rejects(
      h.reopen({
        loadModule: (m) => {
          loaded.push(m);
          return Promise.resolve();
        },
      }),
      AufsNotSupportedError,
    );
    assert.deepEqual(loaded, ["aufs"]);
  } finally {
    await h.close();
  }
});

Deno.test("init refuses aufs, btrfs and ecryptfs as the filesystem of the root's parent", async () => {
  for (const fs of ["aufs", "btrfs", "ecryptfs"]) {
    const h = await openHarness();
    try {
      h.libc.respond(
        "statfs",
        (p) => ({ ...systemLibc().statfs(p as string), type: FS_MAGIC[fs] }),
        {
          when: (p) => p === dirname(h.root),
        },
      );
      await assert.rejects(
        h.reopen(),
        (e) =>
          e instanceof IncompatibleFsError && e.backingFs === fs && e.message.includes(`"${fs}"`),
      );
      assert.equal(h.libc.callsOf("statfs")[0].args[0], dirname(h.root));
      assert.equal(exists(h.root), false);
      assert.deepEqual(h.libc.mountCalls(), []);
    } finally {
      await h.close();
    }
  }
});

Deno.test("init accepts other backing filesystems and reports the name in status", async () => {
  await withAufs(async (driver) => {
    const status = await driver.status();
    assert.equal(status[1][0], "Backing Filesystem");
    assert.equal(status[1][1], driver.backingFs);
    assert.notEqual(driver.backingFs, "");
  }, {
    beforeInit: (h) =>
      void h.libc.respond(
        "statfs",
        (p) => ({ ...systemLibc().statfs(p as string), type: FS_MAGIC.xfs }),
        {
          when: (p) => p === dirname(h.root),
          times: 1,
        },
      ),
  });
});

Deno.test("init lays out the root 0700 as a private bind mount of itself; cleanup undoes it", async () => {
  await withAufs(async (driver, h) => {
    assert.equal(driver.name, "aufs");
    for (const p of ["", "mnt", "diff", "layers"]) {
      const st = Deno.statSync(join(h.root, p));
      assert.ok(st.isDirectory, p);
      assert.equal(st.mode! & 0o777, 0o700, p);
    }
    assert.deepEqual(h.libc.mountCalls(), [
      ["mount", h.root, h.root, "none", MS.BIND, ""],
      ["mount", "", h.root, "", MS.PRIVATE, ""],
    ]);
    const top = readMountinfo().findLast((m) => m.mountPoint === h.root);
    assert.ok(top, "root is a mountpoint");
    assert.deepEqual(top.optional, [], "private: no shared/master tags");

    await driver.cleanup();
    assert.equal(isMountpoint(h.root), false);
  });
});

Deno.test("init twice on one root works; the second only re-applies private propagation", async () => {
  await withAufs(async (first, h) => {
    h.libc.clearCalls();
    const second = await h.reopen();
    assert.deepEqual(h.libc.mountCalls(), [["mount", "", h.root, "", MS.PRIVATE, ""]]);
    await first.create("1", "");
    assert.equal(await second.exists("1"), true);
  });
});

Deno.test("init removes leftover *-removing dirs in mnt and diff, not files of that name", async () => {
  await withAufs((_driver, h) => {
    assert.equal(exists(join(h.root, "diff/123-removing")), false);
    assert.equal(exists(join(h.root, "mnt/123-removing")), false);
    assert.equal(exists(join(h.root, "diff/file-removing")), true);
    assert.equal(exists(join(h.root, "diff/keep")), true);
    return Promise.resolve();
  }, {
    beforeInit: async (h) => {
      await markRoot(h.root, "aufs");
      await Deno.mkdir(join(h.root, "diff/123-removing/sub"), { recursive: true });
      await Deno.writeTextFile(join(h.root, "diff/123-removing/sub/f"), "x");
      await Deno.mkdir(join(h.root, "mnt/123-removing"), { recursive: true });
      await Deno.writeTextFile(join(h.root, "diff/file-removing"), "x");
      await Deno.mkdir(join(h.root, "diff/keep"));
    },
  });
});

Deno.test("init removes layers a create left half-made and keeps other incomplete markers", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("done", "");
    await driver.create("crashed-late", "done");
    const store = new LayerStore(h.root);
    // A create cut short after its chain file was written ...
    await store.markIncomplete("crashed-late", "create");
    // ... one cut short before it ...
    await Deno.mkdir(join(h.root, "diff/crashed-early"));
    await Deno.mkdir(join(h.root, "mnt/crashed-early"));
    await store.markIncomplete("crashed-early", "create");
    // ... and a layer some other operation marked.
    await driver.create("applying", "");
    await store.markIncomplete("applying", "applyDiff");

    const again = await h.reopen();
    for (const id of ["crashed-late", "crashed-early"]) {
      for (const p of ["diff", "mnt", "layers", "incomplete"]) {
        assert.equal(exists(join(h.root, p, id)), false, `${p}/${id}`);
      }
    }
    assert.deepEqual(await store.incomplete(), [{ id: "applying", why: "applyDiff" }]);
    assert.ok(exists(join(h.root, "diff/applying")));
    assert.deepEqual(await again.listLayers(), ["done"]);
    // The interrupted apply's layer is listed with its state.
    assert.equal((await again.layerState("applying"))?.state, "incomplete");
  });
});

Deno.test("init undoes its bind mount when a later step fails", async () => {
  const h = await openHarness();
  try {
    h.libc.fail("mkdirat", Errno.EACCES, { when: (_fd, p) => p === join(h.root, "layers") });
    await assert.rejects(h.reopen(), (e) => (e as Error).message.includes(join(h.root, "layers")));
    assert.equal(isMountpoint(h.root), false);
  } finally {
    await h.close();
  }
});

Deno.test("the driver is registered as aufs", async () => {
  assert.ok(driverNames().includes("aufs"));
  const h = await openHarness();
  try {
    const d = await openDriver("aufs", h.root, h.options);
    assert.ok(d instanceof AufsDriver);
    await d.cleanup();
  } finally {
    await h.close();
  }
});

// ---------------------------------------------------------------- create / remove / exists

Deno.test("create makes mnt/<id>, diff/<id> (0755) and a layers file holding the whole chain", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    await driver.createReadWrite("3", "2");
    for (const p of ["mnt/1", "diff/1"]) {
      const st = Deno.statSync(join(h.root, p));
      assert.ok(st.isDirectory);
      assert.equal(st.mode! & 0o777, 0o755 & ~Deno.umask());
    }
    assert.equal(Deno.readTextFileSync(join(h.root, "layers/1")), "");
    assert.equal(Deno.readTextFileSync(join(h.root, "layers/2")), "1\n");
    assert.equal(Deno.readTextFileSync(join(h.root, "layers/3")), "2\n1\n");
    assert.deepEqual(await driver.parentChain("3"), ["2", "1"]);
    assert.equal(exists(join(h.root, "incomplete/3")), false);
  });
});

Deno.test("a layer is marked incomplete while create puts its files in place", async () => {
  await withAufs(async (driver, h) => {
    let seen: [boolean, boolean] | undefined;
    h.libc.respond("mkdirat", (fd, p, mode) => {
      seen = [exists(join(h.root, "incomplete/1")), exists(join(h.root, "layers/1"))];
      systemLibc().mkdirat(fd as number, p as string, mode as number);
    }, { when: (_fd, p) => p === join(h.root, "diff/1") });
    await driver.create("1", "");
    assert.deepEqual(seen, [true, false]);
    assert.equal(exists(join(h.root, "incomplete/1")), false);
    assert.equal(await driver.exists("1"), true);
  });
});

Deno.test("create with a missing parent throws LayerNotFoundError and leaves nothing behind", async () => {
  await withAufs(async (driver, h) => {
    const before = tree(h.root);
    await assert.rejects(
      driver.create("1", "storage"),
      (e) => e instanceof LayerNotFoundError && e.id === "storage",
    );
    assert.deepEqual(tree(h.root), before);
    assert.equal(await driver.exists("1"), false);
  });
});

Deno.test("a create that fails midway removes what it made", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    const before = tree(h.root);
    h.libc.fail("mkdirat", Errno.EACCES, { when: (_fd, p) => p === join(h.root, "diff/2") });
    await assert.rejects(
      driver.create("2", "1"),
      (e) =>
        e instanceof LayerError && e.id === "2" && e.message.includes(join(h.root, "diff/2")) &&
        e.message.includes("mkdirat"),
    );
    assert.deepEqual(tree(h.root), before);
    assert.equal(await driver.exists("2"), false);
  });
});

Deno.test("create refuses an existing id and storage options", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    await assert.rejects(
      driver.create("2", ""),
      (e) => e instanceof LayerError && /already exists/.test(e.message),
    );
    assert.equal(Deno.readTextFileSync(join(h.root, "layers/2")), "1\n");
    await assert.rejects(
      driver.create("3", "", { storageOpt: { size: "10G" } }),
      /--storage-opt is not supported for aufs/,
    );
    assert.equal(exists(join(h.root, "diff/3")), false);
  });
});

Deno.test("invalid ids are refused before anything touches the disk", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("ok", "");
    const before = tree(h.root);
    h.libc.clearCalls();
    const bad = ["", ".", "..", "../x", "a/b", "x-removing", "a\0b"];
    for (const id of bad) {
      await assert.rejects(driver.create(id, ""), InvalidLayerIdError, JSON.stringify(id));
      await assert.rejects(driver.get(id), InvalidLayerIdError);
      await assert.rejects(driver.put(id), InvalidLayerIdError);
      await assert.rejects(driver.remove(id), InvalidLayerIdError);
      assert.equal(await driver.exists(id), false);
    }
    await assert.rejects(driver.create("new", "../ok"), InvalidLayerIdError);
    assert.deepEqual(tree(h.root), before);
    assert.deepEqual(h.libc.calls.filter((c) => c.name !== "statfs"), []);
    assert.equal(exists(join(h.base, "x")), false);
  });
});

Deno.test("remove deletes the layer's dirs, its -removing twins and its layers file", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await Deno.writeTextFile(join(h.root, "diff/1/file"), "data");
    await driver.remove("1");
    for (const p of ["mnt", "diff", "layers"]) {
      assert.equal(exists(join(h.root, p, "1")), false, p);
      assert.equal(exists(join(h.root, p, "1-removing")), false, p);
    }
    assert.equal(await driver.exists("1"), false);
    const renames = h.libc.callsOf("rename").map((c) => c.args);
    assert.deepEqual(renames, [
      [join(h.root, "diff/1"), join(h.root, "diff/1-removing")],
      [join(h.root, "mnt/1"), join(h.root, "mnt/1-removing")],
    ]);
  });
});

Deno.test("remove deletes the layers file before renaming the dirs away", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    let layersFileAtRename: boolean | undefined;
    h.libc.respond("rename", (a, b) => {
      layersFileAtRename ??= exists(join(h.root, "layers/1"));
      systemLibc().rename(a as string, b as string);
    });
    await driver.remove("1");
    assert.equal(layersFileAtRename, false);
  });
});

Deno.test("remove of an unknown id succeeds", async () => {
  await withAufs(async (driver) => {
    await driver.remove("never-made");
    await driver.remove("never-made");
  });
});

Deno.test("a remove blocked by a stale -removing dir names that path", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await Deno.mkdir(join(h.root, "diff/1-removing"));
    await Deno.writeTextFile(join(h.root, "diff/1-removing/x"), "x");
    await assert.rejects(driver.remove("1"), (e) => {
      const m = (e as Error).message;
      return e instanceof LayerError && m.includes(join(h.root, "diff/1-removing")) &&
        !m.includes("MISSING");
    });
  });
});

Deno.test("exists is true for created layers only", async () => {
  await withAufs(async (driver) => {
    await driver.create("1", "");
    assert.equal(await driver.exists("none"), false);
    assert.equal(await driver.exists("1"), true);
    assert.equal(await driver.exists(""), false);
  });
});

// ---------------------------------------------------------------- get / put

Deno.test("a layer without parents is never mounted: get returns diff/<id>", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    h.libc.clearCalls();
    assert.equal(await driver.get("1"), join(h.root, "diff/1"));
    assert.equal(await driver.get("1"), join(h.root, "diff/1"));
    assert.equal(await driver.mountCount("1"), 2);
    assert.equal(driver.heldPath("1"), join(h.root, "diff/1"));
    await driver.put("1");
    await driver.put("1");
    assert.equal(await driver.mountCount("1"), 0);
    assert.equal(driver.heldPath("1"), undefined);
    assert.deepEqual(h.libc.mountCalls(), []);
  });
});

Deno.test("isMounted is false for a plain dir and for a missing path", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    assert.equal(driver.isMounted(join(h.root, "diff/1")), false);
    assert.equal(driver.isMounted(join(h.root, "diff/nope")), false);
  });
});

Deno.test("get of a child mounts its union at mnt/<id> with the packed branch list", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    h.libc.clearCalls();
    const path = await driver.get("2");
    assert.equal(path, join(h.root, "mnt/2"));
    assert.equal(driver.heldPath("2"), path);
    assert.equal(driver.isMounted(driver.heldPath("2")!), true);
    const calls = h.libc.mountCalls();
    // The first mount probes the branch maximum (a one-branch mount; `add:127:` is refused
    // with ENOSPC: 127), then dirperm1 (the double accepts it), then mounts the union.
    assert.equal(calls.length, 6);
    assert.match(String(calls[0][5]), /^br:.*storage-aufs-base.*=rw,xino=\/dev\/shm\/aufs\.xino$/);
    assert.match(String(calls[1][5]), /^add:127:.*storage-aufs-extra.*=ro$/);
    assert.equal(calls[2][0], "umount2");
    assert.match(
      String(calls[3][5]),
      /^br:.*storage-aufs-base.*,dirperm1,xino=\/dev\/shm\/aufs\.xino$/,
    );
    assert.equal(calls[4][0], "umount2");
    assert.deepEqual(calls[5], [
      "mount",
      "none",
      path,
      "aufs",
      0n,
      `br:${h.root}/diff/2=rw:${h.root}/diff/1=ro+wh${XINO},dirperm1`,
    ]);
    assert.deepEqual(h.libc.fakeMount(path)?.branches, [
      join(h.root, "diff/2"),
      join(h.root, "diff/1"),
    ]);
  });
});

Deno.test("the mount label is passed as context on the mount", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    await driver.get("2", { mountLabel: "system_u:object_r:container_file_t:s0:c1,c2" });
    const [[, data]] = aufsMounts(h.libc, join(h.root, "mnt/2"));
    assert.ok(
      data.endsWith(',dirperm1,context="system_u:object_r:container_file_t:s0:c1,c2"'),
      data,
    );
  }, { libc: { selinux: true } });
});

Deno.test("remove unmounts a mounted layer, then deletes it", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const path = await driver.get("2");
    assert.equal(driver.isMounted(path), true);
    await driver.remove("2");
    assert.equal(driver.isMounted(path), false);
    assert.equal(umountsOf(h.libc, path), 1);
    assert.equal(exists(path), false);
    assert.equal(driver.heldPath("2"), undefined);
  });
});

Deno.test("get returns the same path each time, mounts once; the last put unmounts; counts stay >= 0", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const target = join(h.root, "mnt/2");
    assert.equal(await driver.get("2"), target);
    assert.equal(await driver.get("2"), target);
    assert.equal(aufsMounts(h.libc, target).length, 1);
    assert.equal(await driver.mountCount("2"), 2);
    await driver.put("2");
    assert.equal(driver.isMounted(target), true);
    assert.equal(umountsOf(h.libc, target), 0);
    await driver.put("2");
    assert.equal(driver.isMounted(target), false);
    assert.equal(umountsOf(h.libc, target), 1);
    await driver.put("2");
    assert.equal(await driver.mountCount("2"), 0);
    assert.equal(umountsOf(h.libc, target), 1);
    // A put too many did not make the next get think the union is still mounted.
    await driver.get("2");
    assert.equal(driver.isMounted(target), true);
  });
});

Deno.test("a failed mount does not leave the count raised, and says which layer and path", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const target = join(h.root, "mnt/2");
    await driver.status(); // probe dirperm1 first, so the scripted failure hits the union
    h.libc.fail("mount", Errno.EINVAL, { when: whenTarget(target), times: 1 });
    await assert.rejects(driver.get("2"), (e) => {
      const m = (e as Error).message;
      return e instanceof LayerError && e.id === "2" && m.includes(target) && m.includes("mount");
    });
    assert.equal(await driver.mountCount("2"), 0);
    assert.equal(driver.heldPath("2"), undefined);
    assert.equal(await driver.get("2"), target);
    assert.equal(driver.isMounted(target), true);
    assert.equal(aufsMounts(h.libc, target).length, 2);
  });
});

Deno.test("a missing ancestor makes get fail with LayerNotFoundError naming it", async () => {
  await withAufs(async (driver) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    await driver.create("3", "2");
    await driver.remove("2");
    await assert.rejects(driver.get("3"), (e) => e instanceof LayerNotFoundError && e.id === "2");
    assert.equal(await driver.mountCount("3"), 0);
  });
});

Deno.test("get and put of an unknown layer throw LayerNotFoundError", async () => {
  await withAufs(async (driver) => {
    await assert.rejects(driver.get("nope"), LayerNotFoundError);
    await assert.rejects(driver.put("nope"), LayerNotFoundError);
  });
});

Deno.test("a put before any get leaves a base layer's path alone", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.put("1");
    assert.equal(await driver.mountCount("1"), 0);
    assert.equal(await driver.get("1"), join(h.root, "diff/1"));
    await driver.remove("1");
    assert.equal(exists(join(h.root, "mnt/1")), false);
    assert.equal(exists(join(h.root, "diff/1")), false);
  });
});

Deno.test("remove resets the mount count and held path of a re-created id", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    await driver.get("2");
    await driver.get("2");
    await driver.remove("2");
    assert.equal(driver.heldPath("2"), undefined);
    await driver.create("2", "1");
    assert.equal(await driver.mountCount("2"), 0);
    await driver.get("2");
    assert.equal(aufsMounts(h.libc, join(h.root, "mnt/2")).length, 2);
    assert.equal(await driver.mountCount("2"), 1);
  });
});

Deno.test("counts persist: a get in one driver and a put in another balance", async () => {
  await withAufs(async (a, h) => {
    await a.create("1", "");
    await a.create("2", "1");
    const target = await a.get("2");
    const b = await h.reopen();
    assert.equal(await b.mountCount("2"), 1);
    assert.equal(await b.get("2"), target); // already mounted: no second mount
    assert.equal(aufsMounts(h.libc, target).length, 1);
    await a.put("2");
    assert.equal(b.isMounted(target), true);
    await b.put("2");
    assert.equal(b.isMounted(target), false);
    assert.equal(await a.mountCount("2"), 0);
  });
});

Deno.test("an union unmounted behind the driver's back is mounted again by the next get", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const target = await driver.get("2");
    h.libc.umount2(target, 0); // someone else unmounts it
    assert.equal(await driver.mountCount("2"), 0);
    assert.equal(await driver.get("2"), target);
    assert.equal(driver.isMounted(target), true);
    assert.equal(aufsMounts(h.libc, target).length, 2);
  });
});

Deno.test("concurrent gets of one layer from two drivers mount it once", async () => {
  await withAufs(async (a, h) => {
    await a.create("1", "");
    await a.create("2", "1");
    const b = await h.reopen();
    const paths = await Promise.all([a.get("2"), b.get("2"), a.get("2"), b.get("2")]);
    assert.equal(new Set(paths).size, 1);
    assert.equal(aufsMounts(h.libc, paths[0]).length, 1);
    assert.equal(await a.mountCount("2"), 4);
  });
});

// ---------------------------------------------------------------- unmount retries

Deno.test("remove retries an EBUSY unmount 5 times, 6 attempts in all", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const target = await driver.get("2");
    h.libc.fail("umount2", Errno.EBUSY, { when: whenTarget(target), times: 5 });
    await driver.remove("2");
    assert.equal(umountsOf(h.libc, target), 6);
    assert.equal(await driver.exists("2"), false);
  });
});

Deno.test("remove gives up after 5 EBUSY retries and keeps the layer", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const target = await driver.get("2");
    h.libc.fail("umount2", Errno.EBUSY, { when: whenTarget(target) });
    await assert.rejects(driver.remove("2"), (e) => {
      const m = (e as Error).message;
      return e instanceof LayerError && m.includes("after 5 retries") && m.includes(target) &&
        m.includes("EBUSY");
    });
    assert.equal(umountsOf(h.libc, target), 6);
    assert.equal(await driver.exists("2"), true);
    h.libc.clearRules();
  });
});

Deno.test("remove does not retry an unmount error other than EBUSY", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const target = await driver.get("2");
    h.libc.fail("umount2", Errno.EPERM, { when: whenTarget(target), times: 1 });
    await assert.rejects(driver.remove("2"), /EPERM/);
    assert.equal(umountsOf(h.libc, target), 1);
  });
});

Deno.test("the last put retries an EBUSY unmount too", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const target = await driver.get("2");
    h.libc.fail("umount2", Errno.EBUSY, { when: whenTarget(target), times: 2 });
    await driver.put("2");
    assert.equal(umountsOf(h.libc, target), 3);
    assert.equal(driver.isMounted(target), false);
  });
});

// ---------------------------------------------------------------- remounts and auplink

async function chain(driver: AufsDriver, ids: string[]): Promise<void> {
  let parent = "";
  for (const id of ids) {
    await driver.create(id, parent);
    parent = id;
  }
}

Deno.test("a failed remount unmounts the half-made union plainly, without auplink", async () => {
  const h = await openHarness();
  const log = join(h.base, "auplink.log");
  const auplink = join(h.base, "auplink");
  await Deno.writeTextFile(auplink, `#!/bin/sh\necho "$@" >> ${log}\n`, { mode: 0o755 });
  try {
    const driver = await h.reopen({ auplink });
    try {
      const ids = Array.from({ length: 60 }, (_, i) => String(i).padStart(64, "0"));
      await chain(driver, ids);
      const top = ids[59];
      const target = join(h.root, "mnt", top);
      await driver.status(); // dirperm1 probe (its unmount runs auplink once)
      const before = exists(log) ? Deno.readTextFileSync(log) : "";
      h.libc.fail("mount", Errno.EIO, {
        when: (_s, t, _f, flags) => t === target && ((flags as bigint) & MS.REMOUNT) !== 0n,
        times: 1,
      });
      await assert.rejects(driver.get(top), /remount 1 of/);
      assert.equal(driver.isMounted(target), false);
      assert.equal(umountsOf(h.libc, target), 1);
      assert.equal(exists(log) ? Deno.readTextFileSync(log) : "", before);

      // A normal last put flushes with auplink first.
      await driver.get(top);
      await driver.put(top);
      assert.ok(Deno.readTextFileSync(log).endsWith(`${target} flush\n`));
    } finally {
      h.libc.clearRules();
      await driver.cleanup();
    }
  } finally {
    await h.close();
  }
});

// ---------------------------------------------------------------- cleanup

Deno.test("cleanup with no layers, and with a base layer, succeeds", async () => {
  await withAufs(async (driver) => {
    await driver.cleanup();
  });
  await withAufs(async (driver) => {
    await driver.create("1", "");
    await driver.cleanup();
  });
});

Deno.test("cleanup unmounts every union under mnt, then the root's bind mount", async () => {
  await withAufs(async (driver, h) => {
    await chain(driver, ["a", "b", "c", "d"]);
    const targets = ["b", "c", "d"].map((id) => join(h.root, "mnt", id));
    for (const id of ["b", "c", "d"]) await driver.get(id);
    await driver.get("c");
    h.libc.clearCalls();
    await driver.cleanup();
    const umounts = h.libc.callsOf("umount2").map((c) => c.args[0] as string);
    assert.deepEqual(umounts.slice(0, 3).sort(), targets);
    assert.deepEqual(umounts.slice(3), [h.root]);
    for (const t of targets) assert.equal(driver.isMounted(t), false);
    assert.equal(isMountpoint(h.root), false);
    assert.equal(h.libc.callsOf("mount").length, 0);
    assert.equal(await driver.mountCount("c"), 0);
  });
});

Deno.test("cleanup reports a failed unmount of the root's bind mount", async () => {
  await withAufs(async (driver, h) => {
    h.libc.fail("umount2", Errno.EINVAL, { when: whenTarget(h.root) });
    await assert.rejects(driver.cleanup(), (e) => (e as Error).message.includes(h.root));
    assert.equal(isMountpoint(h.root), true);
  });
});

Deno.test("cleanup goes on after a union fails to unmount and reports it", async () => {
  await withAufs(async (driver, h) => {
    await chain(driver, ["a", "b", "c"]);
    await driver.get("b");
    await driver.get("c");
    const bad = join(h.root, "mnt/b");
    h.libc.fail("umount2", Errno.EPERM, { when: whenTarget(bad) });
    await assert.rejects(driver.cleanup(), (e) => (e as Error).message.includes(bad));
    assert.equal(driver.isMounted(join(h.root, "mnt/c")), false);
    assert.equal(isMountpoint(h.root), false);
  });
});

Deno.test("cleanup leaves a root that was a mountpoint of its own before init", async () => {
  const h = await openHarness();
  const libc = systemLibc();
  await Deno.mkdir(h.root);
  libc.mount("tmpfs", h.root, "tmpfs", 0n, "size=1m");
  try {
    const driver = await h.reopen();
    await driver.cleanup();
    assert.equal(isMountpoint(h.root), true);
  } finally {
    libc.umount2(h.root, 0);
    await h.close();
  }
});

// ---------------------------------------------------------------- status and the rest

Deno.test("status has five pairs: root, backing fs, number of layers, dirperm1, max branches", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("1", "");
    const status = await driver.status();
    assert.equal(status.length, 5);
    assert.deepEqual(status[0], ["Root Dir", h.root]);
    assert.deepEqual(status[1], ["Backing Filesystem", driver.backingFs]);
    assert.deepEqual(status[2], ["Dirs", "1"]);
    assert.deepEqual(status[3], ["Dirperm1 Supported", "true"]);
    assert.deepEqual(status[4], ["Max Branches", "127"]);
  });
});

Deno.test("a chain longer than the branch maximum is refused before any mount, with a typed error", async () => {
  await withAufs(async (driver, h) => {
    for (let i = 1; i <= 128; i++) await driver.create(String(i), i === 1 ? "" : String(i - 1));
    assert.deepEqual(new Map(await driver.status()).get("Max Branches"), "127"); // probed
    h.libc.clearCalls();
    await assert.rejects(driver.get("128"), (e) => {
      const cause = (e as Error).cause;
      return cause instanceof AufsBranchLimitError && cause.branches === 128 && cause.max === 127 &&
        /layer "128".*128 branches.*at most 127/.test((e as Error).message);
    });
    assert.deepEqual(h.libc.mountCalls(), [], "nothing mounted, nothing to undo");
    assert.equal(await driver.mountCount("128"), 0);
    assert.equal(await driver.get("127"), join(h.root, "mnt/127")); // 127 branches fit
    assert.equal(h.libc.fakeMount(join(h.root, "mnt/127"))?.branches.length, 127);
    await driver.put("127");
  }, { libc: { pageSize: 4096 } });
});

Deno.test("metadata is null, no extra image stores, layers listed sorted", async () => {
  await withAufs(async (driver) => {
    await driver.create("b", "");
    await driver.create("a", "b");
    assert.equal(await driver.metadata("a"), null);
    assert.equal(await driver.metadata("nope"), null);
    assert.deepEqual(driver.additionalImageStores(), []);
    assert.deepEqual(await driver.listLayers(), ["a", "b"]);
    assert.equal(driver.whiteoutFormat, "aufs");
  });
});

async function tarNames(stream: ReadableStream<Uint8Array>): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await readTar(stream, {
    entry(h) {
      out.set(new TextDecoder().decode(h.name), h.size);
    },
    data() {},
    end() {},
  });
  return out;
}

Deno.test("seed 16/18/19: diff of a base layer carries its file; diffSize is its size, a child's is 0", async () => {
  await withAufs(async (driver) => {
    await driver.createReadWrite("1", "");
    const dir = await driver.get("1");
    assert.equal(dir, driver.diffDir("1"));
    await Deno.writeFile(join(dir, "test_file"), new Uint8Array(1024));
    const names = await tarNames(await driver.diff("1", ""));
    assert.deepEqual([...names], [["test_file", 1024]]);
    assert.equal(await driver.diffSize("1", ""), 1024);
    await driver.create("2", "1");
    assert.equal(await driver.diffSize("2", "1"), 0);
    await driver.put("1");
  });
});

Deno.test("native diff drops top-level aufs metadata but keeps whiteouts and the opaque marker", async () => {
  await withAufs(async (driver) => {
    await driver.create("1", "");
    await driver.create("2", "1");
    const d = driver.diffDir("2");
    for (const f of [".wh..wh.aufs", ".wh.gone", ".wh..wh..opq", "x"]) {
      await Deno.writeTextFile(join(d, f), "");
    }
    await Deno.mkdir(join(d, ".wh..wh.plnk"));
    await Deno.writeTextFile(join(d, ".wh..wh.plnk", "1.2"), "p");
    await Deno.mkdir(join(d, "sub"));
    await Deno.writeTextFile(join(d, "sub", ".wh..wh..opq"), "");
    const names = [...(await tarNames(await driver.diff("2", "1"))).keys()];
    assert.deepEqual(names, [".wh..wh..opq", ".wh.gone", "sub/", "sub/.wh..wh..opq", "x"]);
  });
});

Deno.test("seed 22: native applyDiff writes the tar literally into the layer's diff dir and returns its size", async () => {
  await withAufs(async (driver) => {
    await driver.createReadWrite("1", "");
    await Deno.writeFile(join(driver.diffDir("1"), "test_file"), new Uint8Array(1024));
    await Deno.writeTextFile(join(driver.diffDir("1"), ".wh.deleted"), "");
    const tar = await driver.diff("1", "");
    await driver.create("2", "");
    await driver.create("3", "2");
    const size = await driver.applyDiff("3", "2", tar);
    assert.equal(size, 1024);
    assert.equal((await Deno.stat(join(driver.diffDir("3"), "test_file"))).size, 1024);
    // aufs keeps whiteouts on disk as the tar has them
    assert.ok((await Deno.lstat(join(driver.diffDir("3"), ".wh.deleted"))).isFile);
    assert.deepEqual(await driver.store.incomplete(), []);
  });
});

Deno.test("native changes of an aufs branch read .wh. names as deletes", async () => {
  await withAufs(async (driver) => {
    await driver.create("1", "");
    await Deno.writeTextFile(join(driver.diffDir("1"), "old"), "o");
    await Deno.writeTextFile(join(driver.diffDir("1"), "keep"), "k");
    await driver.create("2", "1");
    await Deno.writeTextFile(join(driver.diffDir("2"), ".wh.old"), "");
    await Deno.writeTextFile(join(driver.diffDir("2"), "new"), "n");
    await Deno.writeTextFile(join(driver.diffDir("2"), ".wh..wh.aufs"), "");
    const changes = await driver.changes("2", "1");
    assert.deepEqual(changes, [{ path: "/new", kind: "add" }, { path: "/old", kind: "delete" }]);
  });
});

Deno.test("diffGetter reads a layer's own files and stays inside the layer", async () => {
  await withAufs(async (driver) => {
    await driver.create("1", "");
    await Deno.writeTextFile(join(driver.diffDir("1"), "f"), "content");
    await Deno.symlink("/etc/passwd", join(driver.diffDir("1"), "escape"));
    const getter = await driver.diffGetter("1");
    try {
      assert.equal(await new Response(await getter.get("f")).text(), "content");
      assert.equal(await new Response(await getter.get("../../f")).text(), "content");
      await assert.rejects(getter.get("escape"));
      await assert.rejects(getter.get("missing"));
    } finally {
      await getter.close();
    }
  });
});

Deno.test("archive methods of an unknown layer fail with LayerNotFoundError", async () => {
  await withAufs(async (driver) => {
    for (
      const call of [
        () => driver.diff("nope", ""),
        () => driver.diffSize("nope", ""),
        () => driver.changes("nope", ""),
        () => driver.diffGetter("nope"),
      ]
    ) {
      await assert.rejects(call(), LayerNotFoundError);
    }
  });
});

// ---------------------------------------------------------------- many layers (seed tests 23, 24)

/**
 * The mount calls the seed's packing rule gives for a chain of 64-hex ids
 * under `root`, from the per-branch costs alone (seed §4.2): the first call
 * carries `br:<rw>=rw` and as many `:<ro>=ro+wh` (77 + len(root) bytes each)
 * as fit the capacity; each remount as many `append:<ro>=ro+wh`
 * (83 + len(root) bytes, plus a comma between them) as fit.
 */
function expectedMounts(
  root: string,
  id: string,
  parents: string[],
  capacity: number,
): [bigint, string][] {
  const r = root.length;
  const head = 76 + r;
  const per = 77 + r;
  const k = Math.min(parents.length, Math.floor((capacity - head) / per));
  const dir = (p: string) => `${root}/diff/${p}`;
  const out: [bigint, string][] = [[
    0n,
    `br:${dir(id)}=rw` + parents.slice(0, k).map((p) => `:${dir(p)}=ro+wh`).join("") + XINO +
    ",dirperm1",
  ]];
  const perAppend = Math.floor((capacity + 1) / (83 + r + 1));
  for (let i = k; i < parents.length; i += perAppend) {
    out.push([
      MS.REMOUNT,
      parents.slice(i, i + perAppend).map((p) => `append:${dir(p)}=ro+wh`).join(","),
    ]);
  }
  return out;
}

async function manyLayers(rootBelowBase: string, layers: number): Promise<void> {
  await withAufs(async (driver, h) => {
    const ids: string[] = [];
    for (let i = 1; i <= layers; i++) ids.push(await sha256hex(String(i)));
    for (let i = 0; i < ids.length; i++) {
      await driver.createReadWrite(ids[i], i === 0 ? "" : ids[i - 1]);
      await driver.get(ids[i]);
    }
    const top = ids[ids.length - 1];
    assert.equal(await driver.get(top), join(h.root, "mnt", top));
    const capacity = 4096 - 54 - 9;
    let remounted = 0;
    for (let i = 1; i < ids.length; i++) {
      const target = join(h.root, "mnt", ids[i]);
      const parents = ids.slice(0, i).reverse();
      const calls = aufsMounts(h.libc, target);
      assert.deepEqual(calls, expectedMounts(h.root, ids[i], parents, capacity), `layer ${i + 1}`);
      for (const [, data] of calls) assert.ok(new TextEncoder().encode(data).length < 4096);
      // Whatever the packing, the union stacks the layer over its whole chain, in order.
      assert.deepEqual(
        h.libc.fakeMount(target)?.branches,
        [ids[i], ...parents].map((p) => join(h.root, "diff", p)),
      );
      if (calls.length > 1) remounted++;
    }
    assert.ok(remounted > 0, "some layers needed remounts");
    assert.equal(aufsMounts(h.libc, join(h.root, "mnt", ids[0])).length, 0);
  }, { libc: { pageSize: 4096 }, rootBelowBase });
}

Deno.test("126 chained layers mount with the exact data and appends sequence", async () => {
  await manyLayers("aufs", 126);
});

Deno.test("126 chained layers with the page boundary inside a path or between entries", async () => {
  // The seed's choice of root: with L = 77 + len(root), 4095 % L == 0 or 4095 % L > L - 2.
  const base = await Deno.makeTempDir({ prefix: "strata-aufs-" });
  await Deno.remove(base);
  let zeros = 1;
  for (;; zeros++) {
    const l = 77 + join(base, "0".repeat(zeros), "aufs").length;
    if (4095 % l === 0 || 4095 % l > l - 2) break;
  }
  await manyLayers(join("0".repeat(zeros), "aufs"), 126);
});

Deno.test("a branch list that fills the capacity exactly is kept in the first call", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-aufs-" });
  await Deno.remove(base);
  // head (76 + r) plus one branch (77 + r) is exactly the capacity 4033 when r = 1940:
  // a root of that length, in components a file name can hold.
  const r = 1940;
  const parts: string[] = [];
  let len = base.length + "/aufs".length;
  while (len < r) {
    const n = Math.min(200, r - len - 1);
    parts.push("x".repeat(n));
    len += n + 1;
  }
  const below = join(...parts, "aufs");
  assert.equal(join(base, below).length, r);
  await manyLayers(below, 5);
});

// ---------------------------------------------------------------- concurrency (seed 25, shortened)

Deno.test("concurrent creates, get/put pairs and removes on one parent", async () => {
  await withAufs(async (driver, h) => {
    const ids: string[] = [];
    for (let i = 0; i < 26; i++) ids.push(await sha256hex(`c${i}`));
    await driver.create(ids[0], "");
    await driver.create(ids[1], ids[0]);
    await Promise.all(
      ids.slice(2).map(async (id) => {
        await driver.create(id, ids[1]);
        await Promise.all(Array.from({ length: 3 }, async () => {
          const path = await driver.get(id);
          assert.equal(path, join(h.root, "mnt", id));
          await driver.put(id);
        }));
        await driver.remove(id);
      }),
    );
    assert.deepEqual(await driver.listLayers(), [ids[0], ids[1]].sort());
    assert.deepEqual(h.libc.fakeTargets(), []);
    assert.deepEqual([...Deno.readDirSync(join(h.root, "counts"))], []);
    for (const id of ids.slice(2)) {
      assert.equal(aufsMounts(h.libc, join(h.root, "mnt", id)).length >= 1, true);
    }
  });
});

// ---------------------------------------------------------------- across processes

/** Run `body` in another Deno process with a driver `d` on the harness's root (no cleanup there). */
async function inOtherProcess(
  h: { root: string; proc: string; base: string },
  body: string,
): Promise<void> {
  const code = `
    import { AufsDriver } from ${JSON.stringify(import.meta.resolve("../lib/aufs/driver.ts"))};
    import { RecordingLibc } from ${
    JSON.stringify(import.meta.resolve("./support/recording_libc.ts"))
  };
    const d = await AufsDriver.init(${JSON.stringify(h.root)}, {
      libc: new RecordingLibc(), procRoot: ${JSON.stringify(h.proc)}, loadModule: async () => {},
      auplink: null, tmpDir: ${JSON.stringify(h.base)},
    });
    ${body}
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

Deno.test("counts persist across processes: gets in one process, puts in another", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("base", "");
    await inOtherProcess(h, `await d.get("base"); await d.get("base");`);
    assert.equal(await driver.mountCount("base"), 2);
    await driver.put("base");
    await driver.put("base");
    assert.equal(await driver.mountCount("base"), 0);
  });
});

Deno.test("a layer locked by another process holds off get until it is released", async () => {
  await withAufs(async (driver, h) => {
    await driver.create("a", "");
    const locked = join(h.base, "locked"), released = join(h.base, "released");
    const other = inOtherProcess(
      h,
      `await d.withLayerLock("a", async () => {
        Deno.writeTextFileSync(${JSON.stringify(locked)}, "");
        await new Promise((r) => setTimeout(r, 300));
        Deno.writeTextFileSync(${JSON.stringify(released)}, "");
      });`,
    );
    let done = false;
    other.finally(() => done = true).catch(() => {});
    while (!exists(locked) && !done) await new Promise((r) => setTimeout(r, 10));
    assert.ok(exists(locked), "the other process took the lock");
    await driver.get("a");
    assert.ok(exists(released), "get waited for the other process's lock");
    await other;
  });
});

Deno.test("init undoes its bind mount when making it private fails", async () => {
  const h = await openHarness();
  try {
    h.libc.fail("mount", Errno.EINVAL, { when: (_s, _t, _f, flags) => flags === MS.PRIVATE });
    await assert.rejects(h.reopen(), /EINVAL/);
    assert.equal(isMountpoint(h.root), false);
    assert.deepEqual(h.libc.callsOf("umount2").map((c) => c.args), [[h.root, 0]]);
  } finally {
    await h.close();
  }
});
