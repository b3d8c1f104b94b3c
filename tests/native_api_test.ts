/**
 * The idiomatic library surface: AbortSignal on the long operations,
 * `await using` for drivers and mounted layers, `create(id, { parent })`,
 * `statusInfo()`, and `onWarning` instead of console output.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { isMountpoint } from "../lib/mounts.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { encodeHeader, END_OF_ARCHIVE } from "../lib/archive/tar_writer.ts";
import { makeHeader, TarType } from "../lib/archive/tar_header.ts";
import { unmountAllBelow, withOverlay } from "./support/overlay_harness.ts";
import { readAll, streamOf } from "./support/tar_entries.ts";

const text = new TextEncoder();

/** A tar whose first file's body is cut short: the stream then waits forever. */
function stalledTar(): {
  stream: ReadableStream<Uint8Array>;
  stalled: Promise<void>;
  cancelled: Promise<unknown>;
} {
  let onCancel: (reason: unknown) => void = () => {};
  const cancelled = new Promise<unknown>((r) => onCancel = r);
  let onStall: () => void = () => {};
  const stalled = new Promise<void>((r) => onStall = r);
  const chunks = [
    encodeHeader(makeHeader({ name: "dir/", type: TarType.DIR, mode: 0o755 })),
    encodeHeader(makeHeader({ name: "dir/big", mode: 0o644, size: 1 << 20 })),
    new Uint8Array(4096),
  ];
  const stream = new ReadableStream<Uint8Array>({
    pull(c): Promise<void> | void {
      const next = chunks.shift();
      if (!next) {
        onStall();
        return new Promise(() => {}); // stalls: never more data, never an end
      }
      c.enqueue(next);
    },
    cancel(reason) {
      onCancel(reason);
    },
  }, { highWaterMark: 0 });
  return { stream, stalled, cancelled };
}

function smallTar(): ReadableStream<Uint8Array> {
  const body = text.encode("hello\n");
  return streamOf(
    encodeHeader(makeHeader({ name: "hello", mode: 0o644, size: body.length })),
    body,
    new Uint8Array(512 - body.length),
    END_OF_ARCHIVE,
  );
}

Deno.test("applyDiff aborted mid-stream rejects with AbortError, cancels the input, keeps the incomplete mark", async () => {
  await withOverlay(async (driver) => {
    await driver.create("base");
    const { stream, stalled, cancelled } = stalledTar();
    const ac = new AbortController();
    const applying = driver.applyDiff("base", "", stream, { signal: ac.signal });
    await stalled; // the extraction took every chunk there is and waits for more
    ac.abort();
    await assert.rejects(applying, (e: unknown) => {
      assert.ok(e instanceof DOMException, `not a DOMException: ${e}`);
      assert.equal(e.name, "AbortError");
      return true;
    });
    assert.equal((await cancelled as DOMException).name, "AbortError");
    const marks = await driver.store.incomplete();
    assert.deepEqual(marks.map((m) => m.id), ["base"]);
    assert.match(marks[0].why, /^apply/);
    assert.equal(await driver.exists("base"), false);
    assert.ok(Deno.statSync(join(driver.diffDir("base"), "dir")).isDirectory);
  });
});

Deno.test("applyDiff rejects with the signal's own reason; an already aborted signal touches nothing", async () => {
  await withOverlay(async (driver) => {
    await driver.create("a");
    const { stream, stalled } = stalledTar();
    const ac = new AbortController();
    const reason = new Error("user gave up");
    const applying = driver.applyDiff("a", "", stream, { signal: ac.signal });
    await stalled;
    ac.abort(reason);
    await assert.rejects(applying, (e) => e === reason);

    await driver.create("b");
    await assert.rejects(
      driver.applyDiff("b", "", smallTar(), { signal: AbortSignal.abort() }),
      { name: "AbortError" },
    );
    assert.equal(await driver.exists("b"), true, "b was never marked: nothing started");
    assert.deepEqual([...Deno.readDirSync(driver.diffDir("b"))], []);
  });
});

Deno.test("diff and changes take a signal: the diff stream errors with AbortError on abort", async () => {
  await withOverlay(async (driver) => {
    await driver.create("base");
    await driver.applyDiff("base", "", smallTar());
    const ac = new AbortController();
    const stream = await driver.diff("base", "", { signal: ac.signal });
    const reader = stream.getReader();
    ac.abort();
    await assert.rejects(reader.read(), { name: "AbortError" });
    await assert.rejects(driver.diff("base", "", { signal: AbortSignal.abort() }), {
      name: "AbortError",
    });
    await assert.rejects(driver.changes("base", "", { signal: AbortSignal.abort() }), {
      name: "AbortError",
    });
    // Not aborted: the same calls work.
    const live = new AbortController().signal;
    assert.ok((await readAll(await driver.diff("base", "", { signal: live }))).length > 1024);
    assert.deepEqual(await driver.changes("base", "", { signal: live }), [
      { path: "/hello", kind: "add" },
    ]);
  });
});

Deno.test("await using a mounted layer puts it when the block ends, also by a throw", async () => {
  await withOverlay(async (driver) => {
    await driver.create("base");
    await driver.create("app", { parent: "base" });
    let seen = "";
    await assert.rejects(
      (async () => {
        await using m = await driver.mount("app");
        seen = m.path;
        assert.ok(driver.isMounted(m.path));
        throw new Error("body failed");
      })(),
      /body failed/,
    );
    assert.equal(seen, driver.mountDir("app"));
    assert.equal(driver.isMounted(seen), false, "the union stays mounted after the throw");
    assert.equal(await driver.mountCount("app"), 0);
    {
      await using m = await driver.mount("app");
      await Deno.writeTextFile(`${m.path}/hello`, "hi\n");
      await m.release(); // explicit release, then dispose: one put only
    }
    assert.equal(await driver.mountCount("app"), 0);
    assert.deepEqual(await driver.changes("app", "base"), [{ path: "/hello", kind: "add" }]);
  });
});

Deno.test("create(id) makes a base layer, create(id, { parent }) a child; seed form still works", async () => {
  await withOverlay(async (driver) => {
    await driver.create("base");
    await driver.create("mid", { parent: "base" });
    await driver.create("top", "mid");
    await driver.createReadWrite("rw", { parent: "top" });
    assert.deepEqual(await driver.parentChain("base"), []);
    assert.deepEqual(await driver.parentChain("mid"), ["base"]);
    assert.deepEqual(await driver.parentChain("rw"), ["top", "mid", "base"]);
    await assert.rejects(driver.create("x", { parent: "missing" }), /missing/);
  });
});

Deno.test("statusInfo gives status() as a typed object", async () => {
  await withOverlay(async (driver) => {
    await driver.create("base");
    const info = await driver.statusInfo();
    const pairs = await driver.status();
    assert.equal(info.backend, "overlay");
    assert.equal(info.root, driver.root);
    assert.equal(info.layers, 1);
    assert.equal(info.backingFilesystem, driver.backingFs);
    assert.deepEqual(pairs.slice(0, 3), [
      ["Root Dir", info.root],
      ["Backing Filesystem", info.backingFilesystem],
      ["Dirs", "1"],
    ]);
    assert.deepEqual(Object.entries(info.backendFacts), pairs.slice(3));
    assert.equal(info.backendFacts["Supports d_type"], "true");
    assert.equal(await driver.metadata("base"), null);
  });
});

Deno.test("await using a driver undoes the root's bind mount it made, not one it found", async () => {
  const base = await Deno.makeTempDir({ prefix: "strata-native-" });
  const root = join(base, "root");
  const opts = { loadModule: () => Promise.resolve(), unmountRetryDelayMs: 1 };
  try {
    {
      await using driver = await OverlayDriver.init(root, opts);
      assert.ok(isMountpoint(root), "init bind-mounts the root onto itself");
      await driver.create("base");
      await driver.create("app", { parent: "base" });
      {
        await using _m = await driver.mount("app");
      }
    }
    assert.equal(isMountpoint(root), false, "dispose left the bind mount");

    // A layer still mounted with get keeps the bind mount (and stays mounted).
    {
      await using driver = await OverlayDriver.init(root, opts);
      await driver.get("app");
    }
    assert.ok(isMountpoint(root));
    assert.ok(isMountpoint(join(root, "mnt", "app")));
    const again = await OverlayDriver.init(root, opts);
    await again.put("app");
    await again[Symbol.asyncDispose](); // it did not make the bind mount: leaves it
    assert.ok(isMountpoint(root));
    await again.cleanup();
    assert.equal(isMountpoint(root), false);
  } finally {
    unmountAllBelow(base);
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("warnings go to onWarning; without it the library writes nothing to the console", async () => {
  await withOverlay(async (driver, h) => {
    await driver.create("half");
    const ac = new AbortController();
    const { stream, stalled } = stalledTar();
    const applying = driver.applyDiff("half", "", stream, { signal: ac.signal });
    await stalled;
    ac.abort();
    await assert.rejects(applying, { name: "AbortError" });

    const written: unknown[] = [];
    const saved = {
      warn: console.warn,
      log: console.log,
      error: console.error,
      info: console.info,
    };
    console.warn =
      console.log =
      console.error =
      console.info =
        (...a: unknown[]) => {
          written.push(a);
        };
    try {
      const quiet = await OverlayDriver.init(h.root, { ...h.options, onWarning: undefined });
      await quiet[Symbol.asyncDispose]();
    } finally {
      Object.assign(console, saved);
    }
    assert.deepEqual(written, []);

    const told: string[] = [];
    await OverlayDriver.init(h.root, { ...h.options, onWarning: (m) => told.push(m) });
    assert.ok(told.some((m) => m.includes("half") && m.includes("incomplete")), told.join("\n"));
  });
});
