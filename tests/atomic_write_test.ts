import assert from "node:assert/strict";
import { join } from "node:path";
import { isTempName, tempName, writeFileAtomic } from "../lib/atomic_write.ts";

const enc = new TextEncoder();

Deno.test("writeFileAtomic replaces the file whole and leaves no temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeFileAtomic(dir, "C", enc.encode("old\n"));
    await writeFileAtomic(dir, "C", enc.encode("B\nA\n"));
    assert.equal(await Deno.readTextFile(join(dir, "C")), "B\nA\n");
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["C"]);
    assert.equal((await Deno.stat(join(dir, "C"))).mode! & 0o777, 0o644 & ~Deno.umask());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic creates a missing directory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeFileAtomic(join(dir, "x", "y"), "n", enc.encode("1"), { durable: false });
    assert.equal(await Deno.readTextFile(join(dir, "x", "y", "n")), "1");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a failed rename removes the temp file and names the target", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "busy", "inside"), { recursive: true });
    await assert.rejects(
      writeFileAtomic(dir, "busy", enc.encode("x")),
      (e: Error) => e.message.includes(join(dir, "busy")),
    );
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["busy"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("temp names are short, unique and recognised", () => {
  const a = tempName(), b = tempName();
  assert.notEqual(a, b);
  assert.ok(isTempName(a) && a.length === 21);
  assert.ok(!isTempName("abc"));
});
