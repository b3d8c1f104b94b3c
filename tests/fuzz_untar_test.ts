import assert from "node:assert/strict";
import { generateCase, runFuzz } from "./support/fuzz_tar.ts";
import { hostGuard } from "./support/host_guard.ts";

// Hostile names aim at host paths (/etc, /): run the cases where an escape
// cannot reach the host (a private overlay of /).
const test = hostGuard(import.meta.url);

test("fuzz: 600 adversarial tars keep every promise (seed 20261128)", async () => {
  const stats = await runFuzz(20261128, 0, 600);
  assert.equal(stats.cases, 600);
  // Both outcomes happen: the generator is neither all-garbage nor all-benign.
  assert.ok(stats.ok > 50, JSON.stringify(stats));
  assert.ok(Object.values(stats.errors).reduce((a, b) => a + b, 0) > 50, JSON.stringify(stats));
  assert.ok(stats.errors.InvalidArchiveError > 0, JSON.stringify(stats));
  assert.ok(stats.errors.TarFormatError > 0, JSON.stringify(stats));
});

test("fuzz: the generator is reproducible from its seed", () => {
  const a = generateCase(7, 42, "/sandbox"), b = generateCase(7, 42, "/sandbox");
  assert.deepEqual(a, b);
  assert.notDeepEqual(generateCase(7, 43, "/sandbox").bytes, a.bytes);
});
