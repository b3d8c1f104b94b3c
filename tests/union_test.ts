import assert from "node:assert/strict";
import { join } from "node:path";
import { MNT, systemLibc } from "../ffi/libc.ts";
import {
  IncompatibleFsError,
  LayerError,
  LayerInUseError,
  NotSupportedError,
} from "../lib/errors.ts";
import { isMountpoint } from "../lib/mounts.ts";
import { layerArchive } from "../lib/layer_archive.ts";
import {
  type LayerArchive,
  setDefaultLayerArchive,
  type UnionBackend,
  UnionDriver,
  type UnionMount,
  UNWIRED_ARCHIVE,
} from "../lib/union.ts";
import { markRoot } from "./support/root.ts";

/** A backend that mounts nothing: it remembers targets, and can be slowed down or made to fail. */
class FakeBackend implements UnionBackend {
  readonly name = "fake";
  readonly whiteoutFormat = "overlay" as const;
  readonly layerDirs = ["work"];
  refusedBackingFs: string[] = [];
  readonly mounted = new Set<string>();
  readonly requests: UnionMount[] = [];
  readonly events: string[] = [];
  active = 0;
  maxActive = 0;
  delayMs = 0;
  failMount?: Error;
  support?: Error;

  checkSupport(): Promise<void> {
    return this.support ? Promise.reject(this.support) : Promise.resolve();
  }
  isMounted(path: string): boolean {
    return this.mounted.has(path);
  }
  async mount(req: UnionMount): Promise<void> {
    await this.#busy(() => {
      if (this.failMount) return Promise.reject(this.failMount);
      this.requests.push(req);
      this.mounted.add(req.target);
      this.events.push(`mount ${req.id}`);
      return Promise.resolve();
    });
  }
  async unmount(target: string): Promise<void> {
    await this.#busy(() => {
      this.mounted.delete(target);
      this.events.push(`unmount ${target}`);
      return Promise.resolve();
    });
  }
  status(): Promise<[string, string][]> {
    return Promise.resolve([["Fake Pairs", "1"]]);
  }
  async #busy(fn: () => Promise<void>): Promise<void> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      await fn();
    } finally {
      this.active--;
    }
  }
}

interface Ctx {
  root: string;
  backend: FakeBackend;
  open(opts?: { archive?: LayerArchive }): Promise<UnionDriver>;
}

async function withUnion(
  fn: (driver: UnionDriver, ctx: Ctx) => Promise<void>,
  before?: (ctx: Ctx) => Promise<void>,
) {
  const base = await Deno.makeTempDir({ prefix: "strata-union-" });
  const root = join(base, "root");
  const backend = new FakeBackend();
  const opened: UnionDriver[] = [];
  const ctx: Ctx = {
    root,
    backend,
    open: async (opts = {}) => {
      const d = new UnionDriver(root, backend, { unmountRetryDelayMs: 1, ...opts });
      await d.prepare();
      opened.push(d);
      return d;
    },
  };
  try {
    await before?.(ctx);
    await fn(await ctx.open(), ctx);
  } finally {
    for (const d of opened) await d.cleanup().catch(() => {});
    for (let i = 0; i < 8 && isMountpoint(root); i++) systemLibc().umount2(root, MNT.DETACH);
    await Deno.remove(base, { recursive: true });
  }
}

const exists = (p: string) => {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
};

Deno.test("union: a backend's refusal stops init before the disk is touched", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-union-" });
  try {
    const backend = new FakeBackend();
    backend.support = new NotSupportedError("fake kernel");
    const d = new UnionDriver(join(base, "root"), backend);
    await assert.rejects(d.prepare(), NotSupportedError);
    assert.equal(exists(join(base, "root")), false);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("union: the backend's refused backing filesystems are refused", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-union-" });
  try {
    const backend = new FakeBackend();
    const probe = new UnionDriver(join(base, "x"), backend);
    backend.refusedBackingFs = [await probeFs(probe)];
    const d = new UnionDriver(join(base, "root"), backend);
    await assert.rejects(
      d.prepare(),
      (e) => e instanceof IncompatibleFsError && e.message.startsWith("fake"),
    );
    assert.equal(exists(join(base, "root")), false);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

/** The backing fs name init finds for `d` (init it once on a throwaway root). */
async function probeFs(d: UnionDriver): Promise<string> {
  await d.prepare();
  const fs = d.backingFs;
  await d.cleanup();
  return fs;
}

Deno.test("union: the backend's per-layer dirs are made, passed to mount, removed and swept", async () => {
  await withUnion(async (driver, { root, backend }) => {
    assert.equal(exists(join(root, "work/old-removing")), false);

    await driver.create("a", "");
    await driver.create("b", "a");
    await driver.create("c", "b");
    assert.ok(Deno.statSync(join(root, "work/c")).isDirectory);
    const path = await driver.get("c", { mountLabel: "lbl" });
    assert.equal(path, join(root, "mnt/c"));
    assert.deepEqual(backend.requests, [{
      id: "c",
      target: join(root, "mnt/c"),
      upper: join(root, "diff/c"),
      lowers: [join(root, "diff/b"), join(root, "diff/a")],
      layerDirs: { work: join(root, "work/c") },
      mountLabel: "lbl",
    }]);
    await driver.remove("c");
    assert.equal(exists(join(root, "work/c")), false);
    assert.equal(exists(join(root, "work/c-removing")), false);
    assert.deepEqual(backend.events, ["mount c", `unmount ${join(root, "mnt/c")}`]);
  }, async ({ root, backend }) => {
    await markRoot(root, backend.name);
    await Deno.mkdir(join(root, "work/old-removing"), { recursive: true });
  });
});

Deno.test("union: mounts and unmounts never overlap, across layers and drivers on one root", async () => {
  await withUnion(async (a, ctx) => {
    const b = await ctx.open();
    ctx.backend.delayMs = 3;
    await a.create("base", "");
    for (let i = 0; i < 6; i++) await a.create(`l${i}`, "base");
    await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).get(`l${i}`)));
    await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? b : a).put(`l${i}`)));
    assert.equal(ctx.backend.maxActive, 1);
    assert.equal(ctx.backend.events.length, 12);
    assert.equal(ctx.backend.mounted.size, 0);
  });
});

Deno.test("union: a layer's lock holds off get of that layer only", async () => {
  await withUnion(async (driver) => {
    await driver.create("a", "");
    await driver.create("b", "");
    const order: string[] = [];
    let release!: () => void;
    const held = driver.withLayerLock("a", async () => {
      order.push("locked");
      await new Promise<void>((r) => (release = r));
      order.push("unlocking");
    });
    await new Promise((r) => setTimeout(r, 5));
    const getA = driver.get("a").then(() => order.push("get a"));
    await driver.get("b");
    order.push("get b");
    release();
    await Promise.all([held, getA]);
    assert.deepEqual(order, ["locked", "get b", "unlocking", "get a"]);
  });
});

Deno.test("union: a failed backend mount is a LayerError naming the backend, layer and path", async () => {
  await withUnion(async (driver, { root, backend }) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    backend.failMount = new Error("kernel said no");
    await assert.rejects(driver.get("b"), (e) => {
      const m = (e as Error).message;
      return e instanceof LayerError && m.includes("mount fake union") &&
        m.includes(join(root, "mnt/b")) &&
        m.includes("kernel said no");
    });
    assert.equal(await driver.mountCount("b"), 0);
  });
});

Deno.test("union: status is the generic three pairs then the backend's", async () => {
  await withUnion(async (driver, { root }) => {
    assert.equal(Deno.statSync(join(root, "work")).mode! & 0o777, 0o700);
    await driver.create("a", "");
    assert.deepEqual(await driver.status(), [
      ["Root Dir", root],
      ["Backing Filesystem", driver.backingFs],
      ["Dirs", "1"],
      ["Fake Pairs", "1"],
    ]);
    assert.equal(driver.name, "fake");
    assert.equal(driver.whiteoutFormat, "overlay");
  });
});

Deno.test("union: cleanup unmounts through the backend what it says is mounted", async () => {
  await withUnion(async (driver, { root, backend }) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    await driver.create("c", "a");
    await driver.get("b");
    await driver.get("c");
    await driver.cleanup();
    assert.equal(backend.mounted.size, 0);
    assert.deepEqual(backend.events.filter((e) => e.startsWith("unmount")).sort(), [
      `unmount ${join(root, "mnt/b")}`,
      `unmount ${join(root, "mnt/c")}`,
    ]);
    assert.equal(isMountpoint(root), false);
  });
});

Deno.test("union: the archive methods delegate to the archive with the driver first", async () => {
  const seen: unknown[][] = [];
  const archive: LayerArchive = {
    diff: (d, ...rest) => (seen.push(["diff", d, ...rest]), Promise.resolve(new ReadableStream())),
    applyDiff: (d, ...rest) => (seen.push(["applyDiff", d, ...rest]), Promise.resolve(7)),
    diffSize: (d, ...rest) => (seen.push(["diffSize", d, ...rest]), Promise.resolve(3)),
    changes: (d, ...rest) => (seen.push(["changes", d, ...rest]), Promise.resolve([])),
    diffGetter: (d, ...rest) => {
      seen.push(["diffGetter", d, ...rest]);
      return Promise.resolve({
        get: () => Promise.resolve(new ReadableStream()),
        close: () => Promise.resolve(),
      });
    },
  };
  await withUnion(async (_d, ctx) => {
    const driver = await ctx.open({ archive });
    const tar = new ReadableStream<Uint8Array>();
    await driver.diff("a", "p", { mountLabel: "l" });
    assert.equal(await driver.applyDiff("a", "p", tar), 7);
    assert.equal(await driver.diffSize("a", ""), 3);
    assert.deepEqual(await driver.changes("a", "p"), []);
    await driver.diffGetter("a");
    assert.deepEqual(seen, [
      ["diff", driver, "a", "p", { mountLabel: "l" }],
      ["applyDiff", driver, "a", "p", tar, undefined],
      ["diffSize", driver, "a", "", undefined],
      ["changes", driver, "a", "p", undefined],
      ["diffGetter", driver, "a"],
    ]);
  });
});

Deno.test("union: the default archive is layerArchive; setting another affects later drivers only", async () => {
  await withUnion(async (driver, ctx) => {
    await driver.create("a", "");
    await Deno.writeTextFile(join(driver.diffDir("a"), "f"), "12345");
    assert.equal(await driver.diffSize("a", ""), 5);
    setDefaultLayerArchive({ ...UNWIRED_ARCHIVE, diffSize: () => Promise.resolve(42) });
    try {
      const later = await ctx.open();
      assert.equal(await later.diffSize("a", ""), 42);
      assert.equal(await driver.diffSize("a", ""), 5); // drivers made before keep theirs
    } finally {
      setDefaultLayerArchive(layerArchive);
    }
    const unwired = await ctx.open({ archive: UNWIRED_ARCHIVE });
    await assert.rejects(unwired.diffSize("a", ""), /layer tars are not wired in yet/);
  });
});

Deno.test("union: accessors for the archive code", async () => {
  await withUnion(async (driver, { root }) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    assert.equal(driver.diffDir("b"), join(root, "diff/b"));
    assert.equal(driver.mountDir("b"), join(root, "mnt/b"));
    assert.equal(driver.layerDir("work", "b"), join(root, "work/b"));
    assert.deepEqual(await driver.parentChain("b"), ["a"]);
    assert.equal(await driver.layerPath("a"), join(root, "diff/a"));
    assert.equal(await driver.layerPath("b"), join(root, "mnt/b"));
    assert.equal(driver.store.layersDir, join(root, "layers"));
    assert.deepEqual(driver.uidMaps, []);
    assert.throws(() => driver.diffDir("../x"), /invalid layer id/);
  });
});

Deno.test("union: dirs are chowned to the mapped root when ids are mapped", async () => {
  const maps = [{ containerID: 0, hostID: 100000, size: 65536 }];
  const base = await Deno.makeTempDir({ prefix: "strata-union-" });
  const root = join(base, "root");
  const d = new UnionDriver(root, new FakeBackend(), { uidMaps: maps, gidMaps: maps });
  try {
    await d.prepare();
    await d.create("a", "");
    for (const p of ["", "mnt", "diff", "layers", "work", "diff/a", "mnt/a", "work/a"]) {
      const st = Deno.statSync(join(root, p));
      assert.deepEqual([st.uid, st.gid], [100000, 100000], p);
    }
  } finally {
    await d.cleanup().catch(() => {});
    for (let i = 0; i < 8 && isMountpoint(root); i++) systemLibc().umount2(root, MNT.DETACH);
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("union: id maps without container root are refused at init", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-union-" });
  try {
    const maps = [{ containerID: 1, hostID: 100000, size: 10 }];
    const d = new UnionDriver(join(base, "root"), new FakeBackend(), { uidMaps: maps });
    await assert.rejects(d.prepare(), /Container ID 0 cannot be mapped to a host ID/);
    assert.equal(exists(join(base, "root")), false);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("union: remove with ifUnused refuses a parent or a mounted layer, under the layer's lock", async () => {
  await withUnion(async (driver) => {
    await driver.create("a", "");
    await driver.create("b", "a");
    await assert.rejects(driver.remove("a", { ifUnused: true }), (e: unknown) => {
      assert.ok(e instanceof LayerInUseError);
      assert.deepEqual(e.children, ["b"]);
      return true;
    });
    await driver.get("b");
    await assert.rejects(driver.remove("b", { ifUnused: true }), (e: unknown) => {
      assert.ok(e instanceof LayerInUseError);
      assert.equal(e.mounts, 1);
      assert.match(e.message, /mounted \(1 reference/);
      return true;
    });
    assert.equal(await driver.exists("b"), true);
    await driver.put("b");
    await driver.remove("b", { ifUnused: true });
    await driver.remove("a", { ifUnused: true });
    assert.deepEqual(await driver.listLayers(), []);
  });
});
