/**
 * Pulls from a misbehaving registry (a Deno.serve fake on 127.0.0.1): a
 * connection cut mid-blob resumes with a Range request; wrong bytes, a
 * missing blob and persistent 500s fail naming the blob and leave no layer,
 * no blob and no partial file; passing 500s are retried (bounded); Bearer
 * token auth; and a `kill -9` mid-pull leaves a root `strata check` finds
 * clean, and the next pull resumes the download.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { pullImage } from "../lib/image/pull.ts";
import { layerIdOf } from "../lib/image/store.ts";
import { buildImage, type BuiltImage } from "./support/oci_build.ts";
import { withImageStore } from "./support/oci_build.ts";
import { withFakeRegistry } from "./support/fake_registry.ts";
import { mulberry32 } from "./support/rng.ts";
import { ok, withCliRoot } from "./support/image_cli.ts";

function noise(n: number, seed: number): string {
  const r = mulberry32(seed);
  let s = "";
  while (s.length < n) s += Math.floor(r() * 2 ** 32).toString(36);
  return s.slice(0, n);
}

async function image(): Promise<BuiltImage> {
  return await buildImage([
    { files: { "etc/os": "fault\n" } },
    { files: { "big": noise(200_000, 7) }, compression: "none" },
  ]);
}

const FAST = { attempts: 4, backoffMs: 5 };

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("fault: a connection cut mid-blob is resumed with a Range request", async () => {
  const img = await image();
  const big = img.layers[1].digest;
  await withFakeRegistry(img, "f/app", "1", { cutAfter: { [big]: 50_000 } }, async (reg) => {
    await withImageStore(async (store) => {
      const r = await pullImage(store, `${reg.host}/f/app:1`, FAST);
      assert.equal(r.image.digest, img.manifest.digest);
      const gets = reg.seen.filter((s) => s.path.endsWith(big));
      assert.equal(gets.length, 2);
      assert.equal(gets[0].range, null);
      const from = Number(/^bytes=(\d+)-$/.exec(gets[1].range ?? "")?.[1]);
      assert.ok(from > 0 && from <= 50_000, `resumed from ${gets[1].range}`);
      assert.equal(gets[1].status, 206);
      assert.ok(await store.driver.exists(layerIdOf(r.image.layers[1])));
    });
  });
});

Deno.test("fault: wrong bytes, a blob the registry lacks, persistent 500s: the error names the blob, nothing is left", async () => {
  const img = await image();
  const big = img.layers[1].digest;
  const cases: [string, Parameters<typeof withFakeRegistry>[3], RegExp][] = [
    ["corrupt", { corrupt: new Set([big]) }, /digest mismatch/],
    ["missing", { missing: new Set([big]) }, /HTTP 404/],
    ["500", { fail500: { [big]: Infinity } }, /HTTP 500/],
  ];
  for (const [name, faults, why] of cases) {
    await withFakeRegistry(img, "f/app", "1", faults, async (reg) => {
      await withImageStore(async (store, driver) => {
        await assert.rejects(
          () => pullImage(store, `${reg.host}/f/app:1`, FAST),
          (e: Error) => e.message.includes(big) && why.test(e.message),
          name,
        );
        const chain1 = img.layers[0].diffId;
        assert.ok(!(await driver.listLayers()).some((l) => l !== layerIdOf(chain1)), name);
        assert.deepEqual(await driver.store.incomplete(), [], name);
        assert.ok(!(await store.hasBlob(big)), name);
        // The failed blob leaves no partial (others cut short by the failure may, to resume).
        assert.ok(!(await files(store.tmpDir)).includes(`${big.slice(7)}.partial`), name);
        assert.deepEqual(await store.images(), [], name);
        if (name === "500") {
          // Bounded: the attempts and no more.
          assert.equal(reg.seen.filter((s) => s.path.endsWith(big)).length, FAST.attempts);
        }
      });
    });
  }
});

Deno.test("fault: passing 500s are retried with backoff; Bearer token auth from WWW-Authenticate", async () => {
  const img = await image();
  const big = img.layers[1].digest;
  const bearer = { username: "u", password: "p" };
  await withFakeRegistry(img, "f/app", "1", { fail500: { [big]: 2 }, bearer }, async (reg) => {
    await withImageStore(async (store) => {
      await assert.rejects(
        () => pullImage(store, `${reg.host}/f/app:1`, { ...FAST, authFile: "/nonexistent" }),
        /HTTP 401/,
      );
      const r = await pullImage(store, `${reg.host}/f/app:1`, { ...FAST, credentials: bearer });
      assert.equal(r.image.digest, img.manifest.digest);
      const statuses = reg.seen.filter((s) => s.path.endsWith(big)).map((s) => s.status);
      assert.deepEqual(statuses.filter((s) => s !== 401), [500, 500, 200]);
      assert.ok(reg.seen.some((s) => s.path === "/token" && s.status === 200));
    });
  });
});

Deno.test("pull of an index picks this host's platform; another platform is asked for by option", async () => {
  const img = await image();
  await withFakeRegistry(img, "f/app", "1", { index: true }, async (reg) => {
    await withImageStore(async (store) => {
      const r = await pullImage(store, `${reg.host}/f/app:1`, FAST);
      assert.equal(r.image.digest, img.manifest.digest);
      await assert.rejects(
        () =>
          pullImage(store, `${reg.host}/f/app:1`, {
            ...FAST,
            platform: { os: "linux", architecture: "riscv64" },
          }),
        /no image for linux\/riscv64 \(has: linux\/s390x, linux\/(amd64|arm64)\)/,
      );
      await assert.rejects(
        () =>
          pullImage(store, `${reg.host}/f/app:1`, {
            ...FAST,
            platform: { os: "linux", architecture: "s390x" },
          }),
        /sha256:5{64}.*HTTP 404/,
      );
    });
  });
});

Deno.test("pull downloads layers in parallel, no more than --jobs at once", async () => {
  const img = await buildImage(
    [1, 2, 3, 4, 5].map((i) => ({ files: { [`f${i}`]: noise(24_000, i) }, compression: "none" })),
  );
  const trickleMs = Object.fromEntries(img.layers.map((l) => [l.digest, 3]));
  await withFakeRegistry(img, "f/app", "1", { trickleMs }, async (reg) => {
    await withImageStore(async (store) => {
      const r = await pullImage(store, `${reg.host}/f/app:1`, { ...FAST, jobs: 2 });
      assert.equal(r.image.layers.length, 5);
      assert.equal(reg.maxInFlight(), 2);
    });
  });
});

Deno.test("an AbortSignal stops a pull: nothing half-made is left but the resumable download", async () => {
  const img = await image();
  const big = img.layers[1].digest;
  await withFakeRegistry(img, "f/app", "1", { trickleMs: { [big]: 20 } }, async (reg) => {
    await withImageStore(async (store, driver) => {
      const ac = new AbortController();
      // Abort once part of the big blob has arrived.
      const onProgress = (p: { index: number; done: number }) => {
        if (p.index === 1 && p.done > 8000) ac.abort(new Error("stop"));
      };
      await assert.rejects(
        () => pullImage(store, `${reg.host}/f/app:1`, { signal: ac.signal, onProgress }),
        /stop/,
      );
      assert.ok(!(await driver.listLayers()).includes(layerIdOf(img.layers[1].diffId)));
      assert.deepEqual(await driver.store.incomplete(), []);
      assert.deepEqual(await store.images(), []);
      assert.deepEqual(await files(store.tmpDir), [`${big.slice(7)}.partial`]);
    });
  });
});

Deno.test("fault: kill -9 during a pull leaves only what check reports; the next pull resumes the download", async () => {
  const img = await image();
  const big = img.layers[1].digest;
  await withFakeRegistry(img, "f/app", "1", { trickleMs: { [big]: 20 } }, async (reg) => {
    await withCliRoot(async (strata, _dir, root) => {
      const cli = new URL("../cli.ts", import.meta.url).pathname;
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", cli, "--root", root, "-q", "image", "pull", `${reg.host}/f/app:1`],
        stdout: "null",
        stderr: "null",
      }).spawn();
      const partial = join(root, "images", "tmp", `${big.slice(7)}.partial`);
      let size = 0;
      for (let i = 0; i < 300 && size < 20_000; i++) {
        await new Promise((r) => setTimeout(r, 50));
        size = await Deno.stat(partial).then((s) => s.size, () => 0);
      }
      child.kill("SIGKILL");
      await child.status;
      assert.ok(size >= 20_000, `the download did not start (partial: ${size} bytes)`);
      // What the kill left: the partial download (check reports it; a pull resumes it) and at
      // most the first layer cut mid-apply (reported as incomplete).
      const check = JSON.parse((await strata("--json", "check")).out);
      const first = layerIdOf(img.layers[0].diffId);
      assert.ok(
        check.findings.some((f: { kind: string; path: string }) =>
          f.kind === "image-leftover" && f.path === partial
        ),
        JSON.stringify(check.findings),
      );
      for (const f of check.findings) {
        const expected = f.kind === "incomplete" ? f.id === first : f.path === partial;
        assert.ok(expected, JSON.stringify(f));
      }
      const before = reg.seen.length;
      ok(await strata("image", "pull", `${reg.host}/f/app:1`));
      const resumed = reg.seen.slice(before).find((s) => s.path.endsWith(big));
      assert.ok(
        resumed?.range && Number(/\d+/.exec(resumed.range)![0]) >= 20_000,
        resumed?.range ?? "",
      );
      const ls = JSON.parse(ok(await strata("--json", "image", "ls")));
      assert.equal(ls.images[0].digest, img.manifest.digest);
      assert.equal(JSON.parse(ok(await strata("--json", "check"))).clean, true);
    });
  });
});
