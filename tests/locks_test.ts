import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidLayerIdError } from "../lib/errors.ts";
import { KeyedLock, LayerLocks, Mutex } from "../lib/locks.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Let every queued promise callback run. */
const settle = () => sleep(0);

Deno.test("a held key blocks the next locker until it is released", async () => {
  const l = new KeyedLock();
  const order: string[] = [];
  const unlock = await l.lock("k");
  const second = l.lock("k").then((u) => {
    order.push("second");
    u();
  });
  await settle();
  order.push("first releases");
  unlock();
  await second;
  assert.deepEqual(order, ["first releases", "second"]);
  assert.equal(l.size, 0);
});

Deno.test("different keys do not block each other", async () => {
  const l = new KeyedLock();
  const a = await l.lock("a");
  const b = await Promise.race([l.lock("b"), sleep(50).then(() => undefined)]);
  assert.ok(b, "lock b waited for a");
  assert.equal(l.size, 2);
  b();
  a();
  assert.equal(l.size, 0);
});

Deno.test("waiters are served first come, first served", async () => {
  const l = new KeyedLock();
  const first = await l.lock("k");
  const served: number[] = [];
  const all = [1, 2, 3, 4, 5].map((n) =>
    l.lock("k").then((u) => {
      served.push(n);
      u();
    })
  );
  first();
  await Promise.all(all);
  assert.deepEqual(served, [1, 2, 3, 4, 5]);
});

Deno.test("waiter counting: a blocked locker is counted until it gets the key", async () => {
  const l = new KeyedLock();
  const unlock = await l.lock("k");
  assert.equal(l.waiters("k"), 0);
  const next = l.lock("k");
  assert.equal(l.waiters("k"), 1);
  unlock();
  const unlock2 = await next;
  assert.equal(l.waiters("k"), 0);
  assert.equal(l.size, 1);
  unlock2();
  assert.equal(l.size, 0);
});

Deno.test("10,001 concurrent lock/unlock pairs all finish, exclusively, leaving no entry", async () => {
  const l = new KeyedLock();
  let inside = 0, most = 0, done = 0;
  await Promise.all(
    Array.from({ length: 10_001 }, async (_, i) => {
      const u = await l.lock("test");
      inside++;
      most = Math.max(most, inside);
      if (i % 100 === 0) await settle();
      inside--;
      done++;
      u();
    }),
  );
  assert.equal(done, 10_001);
  assert.equal(most, 1);
  assert.equal(l.size, 0);
});

Deno.test("releasing twice is an error, not a second release", async () => {
  const l = new KeyedLock();
  const u = await l.lock("k");
  const waiting = l.lock("k");
  u();
  const u2 = await waiting;
  assert.throws(() => u(), /no such lock/);
  assert.equal(l.size, 1, "the second holder still holds the key");
  u2();
});

Deno.test("Mutex runs one task at a time and passes results and errors through", async () => {
  const m = new Mutex();
  let inside = 0, most = 0;
  const task = async (n: number) => {
    inside++;
    most = Math.max(most, inside);
    await sleep(2);
    inside--;
    return n * 2;
  };
  assert.deepEqual(await Promise.all([1, 2, 3].map((n) => m.run(() => task(n)))), [2, 4, 6]);
  assert.equal(most, 1);
  await assert.rejects(m.run(() => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(await m.run(() => 7), 7, "a failed task releases the mutex");
});

Deno.test("LayerLocks refuses invalid ids before touching the file system", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const locks = new LayerLocks(join(dir, "locks"));
    await assert.rejects(locks.withLayer("../x", () => Promise.resolve()), InvalidLayerIdError);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Parse the shared log into [tag, event] pairs, dropping the "waiting" notes. */
function events(log: string): [string, string][] {
  return log.trim().split("\n").map((l) => l.split(" ") as [string, string])
    .filter(([, ev]) => ev !== "waiting");
}

/** Hold the lock here while two child processes queue on it, then let them compete. */
async function twoProcesses(mode: "layer" | "global") {
  const dir = await Deno.makeTempDir();
  const lockDir = join(dir, "locks"), log = join(dir, "log");
  const child = new URL("./support/lock_child.ts", import.meta.url).pathname;
  const rounds = 4;
  try {
    const locks = new LayerLocks(lockDir);
    const run = (fn: () => Promise<void>) =>
      mode === "layer" ? locks.withLayer("abc", fn) : locks.withGlobal(fn);
    const procs: Deno.ChildProcess[] = [];
    await run(async () => {
      Deno.writeTextFileSync(log, "parent in\n", { append: true });
      for (const tag of ["A", "B"]) {
        procs.push(
          new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", child, mode, lockDir, "abc", log, tag, String(rounds), "15"],
            stdout: "null",
          }).spawn(),
        );
      }
      // Wait until both children are about to lock, then a little longer so they block on it.
      for (let i = 0; i < 400; i++) {
        const text = await Deno.readTextFile(log).catch(() => "");
        if ((text.match(/waiting/g) ?? []).length === 2) break;
        await sleep(10);
      }
      await sleep(100);
      Deno.writeTextFileSync(log, "parent out\n", { append: true });
    });
    for (const p of procs) assert.equal((await p.status).code, 0);

    const ev = events(await Deno.readTextFile(log));
    assert.equal(ev.length, 2 + 2 * 2 * rounds);
    assert.deepEqual(ev.slice(0, 2), [["parent", "in"], ["parent", "out"]]);
    for (let i = 0; i < ev.length; i += 2) {
      assert.equal(ev[i][1], "in", `event ${i}: ${ev[i]}`);
      assert.deepEqual(ev[i + 1], [ev[i][0], "out"], `interleaved at ${i}: ${ev.join(" | ")}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a layer lock excludes other processes: no interleaving across three holders", () =>
  twoProcesses("layer"));

Deno.test("the global lock excludes other processes too", () => twoProcesses("global"));

Deno.test("two LayerLocks instances exclude each other (flock is per open file)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const a = new LayerLocks(join(dir, "locks")), b = new LayerLocks(join(dir, "locks"));
    const order: string[] = [];
    let bDone: Promise<void> | undefined;
    await a.withLayer("x", async () => {
      bDone = b.withLayer("x", () => Promise.resolve(void order.push("b")));
      await sleep(50);
      order.push("a");
    });
    await bDone;
    assert.deepEqual(order, ["a", "b"]);
    // Another id is independent.
    await a.withLayer("x", () => b.withLayer("y", () => Promise.resolve()));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discarding a lock file while others wait keeps them mutually exclusive", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lockDir = join(dir, "locks");
    const [a, b, c] = [1, 2, 3].map(() => new LayerLocks(lockDir));
    const order: string[] = [];
    let bDone: Promise<void> | undefined, cDone: Promise<void> | undefined;
    await a.withLayer("x", async () => {
      bDone = b.withLayer("x", async () => {
        order.push("b in");
        // c arrives while b holds the lock (on the new file b had to create).
        cDone = c.withLayer("x", () => Promise.resolve(void order.push("c in")));
        await sleep(50);
        order.push("b out");
      });
      await sleep(30); // b is now blocked on the file a is about to discard
      await a.discard("x");
      order.push("a out");
    });
    await bDone;
    await cDone;
    assert.deepEqual(order, ["a out", "b in", "b out", "c in"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
