import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidLayerIdError, LayerError } from "../lib/errors.ts";
import { isMountpoint } from "../lib/mounts.ts";
import { MountCounts } from "../lib/refcount.ts";
import { bind, unmountAll } from "./support/libc_spy.ts";

async function inTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a base layer's count is plain bookkeeping and never goes negative", () =>
  inTemp(async (dir) => {
    const c = new MountCounts(join(dir, "counts"), () => {
      throw new Error("a null path must not be checked");
    });
    assert.equal(await c.decrement("base", null), 0, "put before get stays at 0");
    assert.equal(await c.increment("base", null), 1);
    assert.equal(await c.increment("base", null), 2);
    assert.equal(await c.get("base"), 2);
    assert.equal(await c.decrement("base", null), 1);
    assert.equal(await c.decrement("base", null), 0);
    assert.equal(await c.decrement("base", null), 0);
    assert.deepEqual([...Deno.readDirSync(join(dir, "counts"))], [], "a zero count leaves no file");
  }));

Deno.test("counts persist across instances and reset forgets them", () =>
  inTemp(async (dir) => {
    const path = join(dir, "counts");
    await new MountCounts(path, () => false).increment("a", null);
    await new MountCounts(path, () => false).increment("a", null);
    assert.equal(await Deno.readTextFile(join(path, "a")), "2\n");
    const c = new MountCounts(path, () => false);
    assert.equal(await c.get("a"), 2);
    await c.reset("a");
    assert.equal(await c.get("a"), 0);
    await c.reset("a"); // nothing to forget: fine
  }));

Deno.test("reconciliation with a real mount: adopt a foreign mount, drop counts of a vanished one", () =>
  inTemp(async (dir) => {
    const src = join(dir, "src"), mnt = join(dir, "mnt");
    await Deno.mkdir(src);
    await Deno.mkdir(mnt);
    const c = new MountCounts(join(dir, "counts"), (p) => isMountpoint(p));
    try {
      bind(src, mnt); // mounted by "someone else": stored count is 0
      assert.equal(await c.get("L", mnt), 1, "get reconciles without writing");
      assert.equal(await c.get("L"), 0);
      assert.equal(await c.increment("L", mnt), 2, "0 while mounted counts as 1");
      assert.equal(await c.decrement("L", mnt), 1);

      unmountAll(mnt); // external umount (or a reboot)
      assert.equal(await c.get("L"), 1);
      assert.equal(await c.increment("L", mnt), 1, "stored 1 while not mounted counts as 0");
      assert.equal(await c.decrement("L", mnt), 0);
      assert.equal(await c.increment("L", mnt), 1);
      assert.equal(await c.increment("L", mnt), 1, "still not mounted: the caller never mounted");
      assert.equal(await c.decrement("L", mnt), 0, "never negative");
    } finally {
      unmountAll(mnt);
    }
  }));

Deno.test("a get in one process and a put in another balance", () =>
  inTemp(async (root) => {
    const child = new URL("./support/count_child.ts", import.meta.url).pathname;
    const run = async (op: string) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", child, op, root, "shared"],
        stderr: "inherit",
      }).output();
      assert.equal(out.code, 0);
      return Number(new TextDecoder().decode(out.stdout).trim());
    };
    const [x, y] = await Promise.all([run("increment"), run("increment")]);
    assert.deepEqual([x, y].sort(), [1, 2], "the two increments were serialised");
    assert.equal(await run("decrement"), 1);
    assert.equal(await new MountCounts(join(root, "counts"), () => false).get("shared"), 1);
    assert.equal(await run("decrement"), 0);
    assert.equal(await new MountCounts(join(root, "counts"), () => false).get("shared"), 0);
  }));

Deno.test("a garbage count (abc, -1, a directory) is taken from the mount table, reported, rebuilt", () =>
  inTemp(async (dir) => {
    const counts = join(dir, "counts");
    await Deno.mkdir(counts);
    let mounted = false;
    const c = new MountCounts(counts, () => mounted);
    for (const bad of ["abc\n", "-1\n", "99999999999999999999\n"]) {
      await Deno.writeTextFile(join(counts, "L"), bad);
      assert.equal(await c.get("L", null), 0, bad);
      assert.equal(await c.get("L", "/mnt/L"), 0, bad);
      mounted = true;
      assert.equal(await c.get("L", "/mnt/L"), 1, `${bad}: mounted counts as 1`);
      mounted = false;
      assert.match((await c.problem("L")) ?? "", /counts\/L holds .*not a count/);
      assert.equal(await c.increment("L", "/mnt/L"), 1, "a change overwrites the garbage");
      assert.equal(await c.problem("L"), undefined);
    }
    await Deno.remove(join(counts, "L"));
    await Deno.mkdir(join(counts, "L"));
    assert.equal(await c.get("L", null), 0);
    assert.match((await c.problem("L")) ?? "", /counts\/L is not a regular file/);
    await assert.rejects(c.increment("L", null), (e: unknown) => {
      assert.ok(e instanceof LayerError);
      assert.match(e.message, /"L".*counts\/L.*check --repair/);
      return true;
    });
    mounted = true;
    await c.rebuild("L", "/mnt/L");
    assert.equal(await c.problem("L"), undefined);
    assert.equal(await c.get("L", null), 1, "rebuilt from the mount table");
    await Deno.writeTextFile(join(counts, "L"), ""); // torn by a crash: counts as 0
    assert.equal(await c.get("L", null), 0);
  }));

Deno.test("invalid ids are refused", () =>
  inTemp(async (dir) => {
    const c = new MountCounts(dir, () => false);
    await assert.rejects(c.increment("../x", null), InvalidLayerIdError);
    await assert.rejects(c.get(""), InvalidLayerIdError);
  }));
