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
import { withOverlay } from "./support/overlay_harness.ts";
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
