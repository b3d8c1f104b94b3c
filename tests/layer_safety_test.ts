/**
 * Layer-level safety (issue 9 items 3–8, 11; issue 13's incomplete layers):
 * every test runs a real overlay driver on a tmpfs through the harness, which
 * unmounts everything it made even when the test fails.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { removingName } from "../lib/ids.ts";
import { sweepRemoving } from "../lib/remove.ts";
import { systemLibc } from "../ffi/libc.ts";
import { mountsBelow, withOverlay } from "./support/overlay_harness.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { LayerInUseError, LayerNotFoundError } from "../lib/errors.ts";

const libc = systemLibc();
const listing = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

// ------------------------------------------------------------ item 11: 255-byte ids

Deno.test("a 255-byte id is created, mounted and removed, leaving nothing behind", async () => {
  await withOverlay(async (driver, h) => {
    const long = "b".repeat(255);
    const child = "c".repeat(254) + "d"; // 255 bytes too
    await driver.create(long, "");
    await driver.create(child, long);
    const path = await driver.get(child);
    await Deno.writeTextFile(join(path, "f"), "x");
    await driver.put(child);
    await driver.remove(child);
    await driver.remove(long);
    for (const dir of ["diff", "mnt", "work", "layers"]) {
      assert.deepEqual(listing(join(h.root, dir)), [], dir);
    }
    assert.equal(await driver.exists(long), false);
  }, { tmpfs: true });
});

Deno.test("removingName keeps the seed's name where it fits and a short -removing name otherwise", async () => {
  assert.equal(removingName("abc"), "abc-removing");
  const fits = "a".repeat(255 - 9);
  assert.equal(removingName(fits), fits + "-removing");
  const a = removingName("a".repeat(247)), b = removingName("b".repeat(255));
  assert.ok(a.endsWith("-removing-removing") && b.endsWith("-removing-removing"));
  assert.ok(a.length <= 255 && b.length <= 255);
  assert.notEqual(a, b);
  // Init's sweep finds both kinds of leftover.
  const dir = await Deno.makeTempDir();
  try {
    for (const name of [removingName("x"), b]) {
      await Deno.mkdir(join(dir, name, "sub"), { recursive: true });
    }
    const removed = await sweepRemoving(libc, dir);
    assert.equal(removed.length, 2);
    assert.deepEqual(listing(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ------------------------------------------------------------ item 4: create vs rm of the parent

Deno.test("creating a child and removing its parent exclude each other (two drivers, 40 tries)", async () => {
  await withOverlay(async (d1, h) => {
    const d2 = await OverlayDriver.init(h.root, h.options);
    let created = 0, removed = 0;
    for (let i = 0; i < 40; i++) {
      const p = `p${i}`, k = `k${i}`;
      await d1.create(p, "");
      // Alternate which one starts first, so both orders are tried.
      const [c, r] = i % 2 === 0
        ? await Promise.allSettled([d2.create(k, p), d1.remove(p, { ifUnused: true })])
        : (await Promise.allSettled([d1.remove(p, { ifUnused: true }), d2.create(k, p)]))
          .reverse();
      assert.ok(
        !(c.status === "fulfilled" && r.status === "fulfilled"),
        `try ${i}: both the child's create and the parent's remove succeeded`,
      );
      if (c.status === "fulfilled") {
        created++;
        assert.ok(r.status === "rejected" && r.reason instanceof LayerInUseError, String(r));
        assert.equal(await d1.exists(p), true);
        await d1.remove(k);
        await d1.remove(p);
      } else {
        removed++;
        assert.ok(c.reason instanceof LayerNotFoundError, String(c.reason));
        assert.equal(await d1.exists(k), false);
      }
    }
    assert.equal(created + removed, 40);
    assert.deepEqual(listing(join(h.root, "layers")), []);
  }, { tmpfs: true });
});

// ------------------------------------------------------------ item 8: nothing under the root is followed

Deno.test("a dangling symlink at locks/<id> is a clear error, quickly, and its target is not created", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("base", "");
    await driver.create("top", "base");
    const outside = join(h.base, "outside-lock");
    await Deno.remove(join(h.root, "locks", "top")).catch(() => {});
    await Deno.symlink(outside, join(h.root, "locks", "top"));
    for (const op of [() => driver.get("top"), () => driver.remove("top")]) {
      await assert.rejects(op(), /locks\/top is a symbolic link, not a regular file/);
    }
    assert.throws(() => Deno.lstatSync(outside), Deno.errors.NotFound);
    await Deno.remove(join(h.root, "locks", "top"));
    await driver.remove("top");
  }, { tmpfs: true });
});

Deno.test("a symlink at mnt/<id> or diff/<id> is refused; nothing is mounted or written through it", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("base", "");
    await driver.create("top", "base");
    const elsewhere = join(h.base, "elsewhere");
    await Deno.mkdir(elsewhere);
    await Deno.remove(join(h.root, "mnt", "top"));
    await Deno.symlink(elsewhere, join(h.root, "mnt", "top"));
    await assert.rejects(driver.get("top"), /mnt\/top is a symbolic link, not a directory/);
    assert.deepEqual(mountsBelow(elsewhere), []);
    assert.equal(await driver.mountCount("top"), 0, "the failed get took no reference");

    await Deno.remove(join(h.root, "diff", "base"), { recursive: true });
    await Deno.symlink(elsewhere, join(h.root, "diff", "base"));
    await assert.rejects(driver.get("base"), /diff\/base is a symbolic link/);
    await assert.rejects(driver.diff("base", ""), /diff\/base is a symbolic link/);
    await assert.rejects(driver.changes("top", "base"), /diff\/base is a symbolic link/);
    assert.deepEqual(listing(elsewhere), []);
    // Removal deletes the links themselves, never what they point to.
    await driver.remove("top");
    await driver.remove("base");
    assert.ok(Deno.statSync(elsewhere).isDirectory);
    assert.deepEqual(listing(join(h.root, "mnt")), []);
  }, { tmpfs: true });
});

Deno.test("a symlink at layers/<id> is refused, never read as a chain", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("a", "");
    const decoy = join(h.base, "decoy");
    await Deno.writeTextFile(decoy, "secret-first-line\n");
    await Deno.remove(join(h.root, "layers", "a"));
    await Deno.symlink(decoy, join(h.root, "layers", "a"));
    for (const op of [() => driver.parentChain("a"), () => driver.exists("a")]) {
      await assert.rejects(op(), (e: Error) => {
        assert.match(e.message, /layers\/a is a symbolic link, not a regular file/);
        assert.doesNotMatch(e.message, /secret/);
        return true;
      });
    }
    await Deno.remove(join(h.root, "layers", "a"));
    await driver.remove("a");
  }, { tmpfs: true });
});

// ------------------------------------------------------------ item 7: damaged layers

Deno.test("diff, changes and diffSize of a layer whose diff/<id> is missing fail naming the directory", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("base", "");
    await driver.create("top", "base");
    await Deno.remove(join(h.root, "diff", "top"), { recursive: true });
    const missing = new RegExp(`${join(h.root, "diff", "top")}: the layer's directory is missing`);
    await assert.rejects(driver.diff("top", "base"), missing);
    await assert.rejects(driver.changes("top", "base"), missing);
    await assert.rejects(driver.diffSize("top", "base"), missing);
    await assert.rejects(driver.get("top"), missing);
    // An ancestor's missing dir is named too.
    await Deno.remove(join(h.root, "diff", "base"), { recursive: true });
    await assert.rejects(driver.diff("base", ""), /diff\/base: the layer's directory is missing/);
  }, { tmpfs: true });
});
