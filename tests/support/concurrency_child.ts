/**
 * One worker of the multi-process test (`tests/concurrency_test.ts`):
 * `concurrency_child.ts ROOT WORKER ITERATIONS`. Each iteration opens the
 * driver afresh (so Inits run alongside other processes' operations), then
 * creates its own layer on the shared layer `S`, mounts it and writes
 * through the mount, mounts and releases `S`, unmounts and removes its layer,
 * and creates and removes a child of `P`. Worker 0 also tries to remove `P`
 * once midway (refused while it has children; if it succeeds, creates on `P`
 * must then fail cleanly). Each worker keeps one layer `wN-keep` with a file
 * written through its mount, for the parent to verify.
 *
 * Prints one JSON line: `{ "done": n, "unexpected": [messages] }`.
 *
 * @module
 */

import { join } from "node:path";
import { LayerInUseError, LayerNotFoundError } from "../../lib/errors.ts";
import { OverlayDriver } from "../../lib/overlay/driver.ts";

const [root, workerText, iterationsText] = Deno.args;
const w = Number(workerText);
const iterations = Number(iterationsText);
const unexpected: string[] = [];
let done = 0;

const open = () =>
  OverlayDriver.init(root, { loadModule: () => Promise.resolve(), onWarning: () => {} });

async function step(what: string, fn: () => Promise<void>, expected?: (e: unknown) => boolean) {
  try {
    await fn();
    done++;
  } catch (e) {
    if (expected?.(e)) return;
    unexpected.push(`worker ${w} ${what}: ${(e as Error).message}`);
  }
}

const keep = `w${w}-keep`;
{
  const d = await open();
  await step("create keep", () => d.create(keep, "S"));
  await step("write keep", async () => {
    const mnt = await d.get(keep);
    try {
      await Deno.writeTextFile(join(mnt, "who"), `worker ${w}\n`);
    } finally {
      await d.put(keep);
    }
  });
}

for (let i = 0; i < iterations; i++) {
  const d = await open();
  const id = `w${w}-${i}`;
  await step(`create ${id}`, () => d.create(id, "S"));
  await step(`use ${id}`, async () => {
    const mnt = await d.get(id);
    try {
      await Deno.writeTextFile(join(mnt, "f"), `${id}\n`);
      const shared = await d.get("S");
      try {
        await Deno.readTextFile(join(shared, "s"));
      } finally {
        await d.put("S");
      }
      const seen = await Deno.readTextFile(join(mnt, "s"));
      if (seen !== "shared\n") throw new Error(`S's file reads ${JSON.stringify(seen)} in ${id}`);
    } finally {
      await d.put(id);
    }
  });
  await step(`rm ${id}`, () => d.remove(id, { ifUnused: true }));
  // A child of P, made and removed while worker 0 may be removing P.
  const child = `w${w}-p${i}`;
  let made = false;
  await step(`create ${child} on P`, async () => {
    await d.create(child, "P");
    made = true;
  }, (e) => e instanceof LayerNotFoundError);
  if (made) await step(`rm ${child}`, () => d.remove(child, { ifUnused: true }));
  if (w === 0 && i === Math.floor(iterations / 2)) {
    await step(
      "rm P",
      () => d.remove("P", { ifUnused: true }),
      (e) => e instanceof LayerInUseError,
    );
  }
}

console.log(JSON.stringify({ done, unexpected }));
