import assert from "node:assert/strict";
import { join } from "node:path";
import { AT, S, systemLibc } from "../ffi/libc.ts";
import { LayerError } from "../lib/errors.ts";
import { readMountinfo } from "../lib/mounts.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { OverlayDepthError } from "../lib/overlay/lowers.ts";
import { withOverlay } from "./support/overlay_harness.ts";
import { RecordingLibc } from "./support/recording_libc.ts";

// The chains here are built on a tmpfs mounted on the test's temp dir: layer
// creation fsyncs its metadata, which a tmpfs makes free.

const hex = (i: number) => i.toString(16).padStart(64, "0");

async function sha256hex(s: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomId(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

function superOptionOf(path: string, key: string): string | undefined {
  const m = readMountinfo().findLast((x) => x.mountPoint === path);
  return m?.superOptions.split(",").find((o) => o.startsWith(key + "="))?.slice(key.length + 1);
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Run `fn` on the mounted root of `id`, then put it. */
async function withLayer<T>(
  driver: OverlayDriver,
  id: string,
  fn: (root: string) => T,
): Promise<T> {
  const root = await driver.get(id);
  try {
    return fn(root);
  } finally {
    await driver.put(id);
  }
}

Deno.test("a 500-layer chain mounts via short links: a base file reads, a whiteout made halfway hides", async () => {
  const libc = new RecordingLibc({ fakeFs: {} });
  await withOverlay(async (driver, h) => {
    const ids = Array.from({ length: 502 }, (_, i) => hex(i));
    await driver.create(ids[0], "");
    Deno.writeTextFileSync(join(h.root, "diff", ids[0], "base-file"), "from the base\n");
    Deno.writeTextFileSync(join(h.root, "diff", ids[0], "gone-file"), "deleted at 250\n");
    for (let i = 1; i < 500; i++) {
      await driver.create(ids[i], ids[i - 1]);
      if (i === 250) {
        await withLayer(driver, ids[i], (root) => Deno.removeSync(join(root, "gone-file")));
      }
    }
    const wh = libc.fstatat(
      AT.FDCWD,
      join(h.root, "diff", ids[250], "gone-file"),
      AT.SYMLINK_NOFOLLOW,
    );
    assert.equal(wh.mode & S.IFMT, S.IFCHR, "the kernel made a character device");
    assert.equal(`${wh.rdevMajor}:${wh.rdevMinor}`, "0:0");

    const top = ids[499];
    const cwd = Deno.cwd();
    await withLayer(driver, top, (root) => {
      assert.equal(Deno.readTextFileSync(join(root, "base-file")), "from the base\n");
      assert.equal(exists(join(root, "gone-file")), false);
      const lowerdir = superOptionOf(root, "lowerdir")!;
      assert.equal(lowerdir.split(":").length, 499);
      assert.match(
        lowerdir,
        /^l\/[0-9a-zA-Z]{1,2}(:l\/[0-9a-zA-Z]{1,2})*$/,
        "short relative names",
      );
      assert.equal(superOptionOf(root, "upperdir"), `diff/${top}`);
    });
    assert.equal(Deno.cwd(), cwd, "the working directory is restored after the mount");
    assert.notEqual(cwd, h.root);

    // 500 lower layers: overlay's limit, still mounted.
    await driver.create(ids[500], ids[499]);
    await withLayer(driver, ids[500], (root) => {
      assert.equal(Deno.readTextFileSync(join(root, "base-file")), "from the base\n");
    });
    // 501 lower layers: refused before any mount(2).
    await driver.create(ids[501], ids[500]);
    const target = join(h.root, "mnt", ids[501]);
    libc.clearCalls();
    const err = await driver.get(ids[501]).then(() => undefined, (e) => e);
    assert.ok(err instanceof LayerError, String(err));
    assert.ok(err.cause instanceof OverlayDepthError, String(err.cause));
    assert.match(err.message, /at most 500 lower layers; this union needs 501/);
    assert.deepEqual(libc.callsOf("mount").filter((c) => c.args[1] === target), []);
    assert.equal(await driver.mountCount(ids[501]), 0);

    const status = new Map(await driver.status());
    assert.equal(status.get("Max Lower Layers"), "500");
    assert.equal(status.get("Dirs"), "502");
  }, { tmpfs: true, driver: { libc } });
});

/** graphtest's DeepLayerRead: n layers over a base, each written through its own mount. */
async function deepLayerRead(n: number): Promise<void> {
  await withOverlay(async (driver) => {
    const base = randomId();
    await driver.create(base, "");
    await withLayer(driver, base, (root) => {
      Deno.writeTextFileSync(join(root, "testfile.txt"), "test content", { mode: 0o755 });
    });
    const ids = [base];
    for (let i = 1; i <= n; i++) {
      const id = randomId(), parent = ids[i - 1];
      await driver.create(id, parent);
      await withLayer(driver, id, (root) => {
        Deno.writeTextFileSync(join(root, "top-id"), id, { mode: 0o755 });
        const dir = join(root, `layer-${i}`);
        Deno.mkdirSync(dir, { mode: 0o755 });
        Deno.writeTextFileSync(join(dir, "layer-id"), id, { mode: 0o755 });
        Deno.writeTextFileSync(join(dir, "parent-id"), parent, { mode: 0o755 });
      });
      ids.push(id);
    }
    const top = ids[n];
    await withLayer(driver, top, (root) => {
      let expected = Deno.readTextFileSync(join(root, "top-id"));
      assert.equal(expected, top);
      for (let i = n; i > 0; i--) {
        const dir = join(root, `layer-${i}`);
        assert.equal(Deno.readTextFileSync(join(dir, "layer-id")), expected, `layer-${i}`);
        expected = Deno.readTextFileSync(join(dir, "parent-id"));
        assert.equal(expected, ids[i - 1]);
      }
      assert.equal(Deno.readTextFileSync(join(root, "testfile.txt")), "test content");
    });
  }, { tmpfs: true });
}

Deno.test("DeepLayerRead(128): every layer's files read back through the top", async () => {
  await deepLayerRead(128);
});

Deno.test("DeepLayerRead(500): the top of a 501-layer chain stacks 500 lowers", async () => {
  await deepLayerRead(500);
});

Deno.test("126 chained sha256-named layers, every 10th deleting its parent's file: 114 entries", async () => {
  await withOverlay(async (driver, h) => {
    let parent = "";
    let top = "";
    let mounted = 0;
    for (let i = 1; i <= 126; i++) {
      const id = await sha256hex(String(i));
      await driver.createReadWrite(id, parent);
      const root = await driver.get(id); // left mounted, as the seed's test does
      mounted++;
      Deno.writeTextFileSync(join(root, id), "");
      if (i % 10 === 0) Deno.removeSync(join(root, parent));
      parent = top = id;
    }
    const root = await driver.get(top);
    assert.equal([...Deno.readDirSync(root)].length, 126 - 12);
    const unions = readMountinfo().filter((m) =>
      m.fsType === "overlay" && m.mountPoint.startsWith(join(h.root, "mnt") + "/")
    );
    assert.equal(unions.length, mounted - 1, "every layer but the base is its own union");
    const libc = systemLibc();
    const wh = libc.fstatat(
      AT.FDCWD,
      join(driver.diffDir(await sha256hex("10")), await sha256hex("9")),
      AT.SYMLINK_NOFOLLOW,
    );
    assert.equal(wh.mode & S.IFMT, S.IFCHR);
  }, { tmpfs: true });
});

Deno.test("a deep chain whose short links were lost (a crash) still mounts: the links are made again", async () => {
  await withOverlay(async (driver, h) => {
    const ids = Array.from({ length: 60 }, (_, i) => hex(i));
    for (let i = 0; i < ids.length; i++) await driver.create(ids[i], i === 0 ? "" : ids[i - 1]);
    Deno.writeTextFileSync(join(h.root, "diff", ids[0], "deep"), "base\n");
    Deno.removeSync(join(h.root, "l"), { recursive: true });
    // A stale link that now points at the wrong layer must not be trusted either.
    Deno.mkdirSync(join(h.root, "l"));
    Deno.symlinkSync(`../diff/${ids[59]}`, join(h.root, "l", "0"));
    const fresh = await OverlayDriver.init(h.root, h.options);
    await withLayer(fresh, ids[59], (root) => {
      assert.equal(Deno.readTextFileSync(join(root, "deep")), "base\n");
      const lowerdir = superOptionOf(root, "lowerdir")!.split(":");
      assert.equal(lowerdir.length, 59);
      const targets = lowerdir.map((l) => Deno.readLinkSync(join(h.root, l)));
      assert.deepEqual(targets, ids.slice(0, 59).reverse().map((id) => `../diff/${id}`));
    });
  }, { tmpfs: true });
});
