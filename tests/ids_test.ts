import assert from "node:assert/strict";
import { InvalidLayerIdError } from "../lib/errors.ts";
import { compareBytewise, layerIdProblem, MAX_ID_BYTES, validateLayerId } from "../lib/ids.ts";

Deno.test("ordinary ids are accepted, including dots, dashes and 255-byte names", () => {
  const ok = [
    "4f3c2a9d".repeat(8),
    "a",
    ".hidden",
    "a.b",
    "...",
    "x-removingx",
    "layer.tmpx",
    "with space",
    "a".repeat(MAX_ID_BYTES),
    "é".repeat(127) + "a", // 255 bytes
  ];
  for (const id of ok) assert.doesNotThrow(() => validateLayerId(id), id);
});

Deno.test("each rule rejects its ids with InvalidLayerIdError naming the id", () => {
  const bad: [string, RegExp][] = [
    ["", /is empty/],
    [".", /relative directory/],
    ["..", /relative directory/],
    ["a/b", /contains '\/'/],
    ["/", /contains '\/'/],
    ["../../etc", /contains '\/'/],
    ["a\0b", /NUL/],
    ["a".repeat(MAX_ID_BYTES + 1), /256 bytes/],
    ["abc-removing", /-removing/],
    ["-removing", /-removing/],
    ["abc.tmp", /\.tmp/],
    ["\ud800x", /Unicode/],
  ];
  for (const [id, why] of bad) {
    assert.throws(() => validateLayerId(id), (e: unknown) => {
      assert.ok(e instanceof InvalidLayerIdError, `${JSON.stringify(id)} threw ${e}`);
      assert.equal(e.id, id);
      assert.match(e.message, why);
      assert.ok(e.message.includes(JSON.stringify(id)));
      return true;
    });
  }
});

Deno.test("the length limit counts UTF-8 bytes, not characters", () => {
  const id = "a".repeat(254) + "é"; // 255 characters, 256 bytes
  assert.equal(id.length, 255);
  assert.match(layerIdProblem(id) ?? "", /256 bytes/);
});

Deno.test("compareBytewise orders like a comparison of the UTF-8 bytes", () => {
  const enc = new TextEncoder();
  const byBytes = (a: string, b: string) => {
    const x = enc.encode(a), y = enc.encode(b);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  };
  const pool = [
    "a",
    "B",
    "é",
    "\uffff",
    "\u{1F600}",
    "\u{10000}",
    "\ue000",
    "",
    "ab",
    "a\u{1F600}",
  ];
  for (const a of pool) {
    for (const b of pool) {
      assert.equal(Math.sign(compareBytewise(a, b)), Math.sign(byBytes(a, b)), `${a} vs ${b}`);
    }
  }
  // The UTF-16 order gets this pair wrong; the byte order must not.
  assert.ok(compareBytewise("\uffff", "\u{1F600}") < 0);
});

Deno.test("control characters and invalid UTF-8 are refused, naming the character and its byte", () => {
  const bad: [string, RegExp][] = [
    ["a\nb", /control character 0x0a at byte 1/],
    ["a\rb", /control character 0x0d at byte 1/],
    ["\tx", /control character 0x09 at byte 0/],
    ["x\x1b[31m", /control character 0x1b at byte 1/],
    ["é\x7f", /control character 0x7f at byte 2/],
    ["a\u0085", /control character U\+0085 at byte 1/],
    ["a\u009b", /control character U\+009b at byte 1/],
    ["a\0", /NUL byte \(0x00 at byte 1\)/],
    // What Deno.args and readDir make of invalid UTF-8 bytes.
    ["a\ufffdb", /U\+FFFD at byte 1 .*invalid UTF-8/],
  ];
  for (const [id, why] of bad) {
    assert.throws(() => validateLayerId(id), (e: unknown) => {
      assert.ok(e instanceof InvalidLayerIdError, `${JSON.stringify(id)} threw ${e}`);
      assert.match(e.message, why);
      return true;
    });
  }
  // Printable characters beyond ASCII stay valid.
  for (const id of ["a\u00a0b", "ü", "\u{1F600}", "a b"]) validateLayerId(id);
});
