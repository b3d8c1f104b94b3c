import assert from "node:assert/strict";
import { pathFromBytes, pathToBytes } from "../lib/archive/path_bytes.ts";

const enc = new TextEncoder();

Deno.test("valid UTF-8 names are their ordinary strings", () => {
  for (const s of ["/etc/passwd", "/usr/share/i18n/café", "/emoji-😀🚀", "/日本語", "/\u{1F080}"]) {
    assert.equal(pathFromBytes(enc.encode(s)), s);
    assert.deepEqual(pathToBytes(s), enc.encode(s));
  }
});

Deno.test("invalid bytes survive the round trip exactly", () => {
  const cases = [
    [0x2f, 0x61, 0xff, 0x62],
    [0xc0, 0x80], // overlong NUL
    [0xed, 0xa0, 0x80], // encoded surrogate
    [0xe2, 0x82], // truncated sequence
    [0xf4, 0x90, 0x80, 0x80], // beyond U+10FFFF
    [0xc3, 0xa9, 0xff, 0xc3, 0xa9],
  ];
  for (const c of cases) {
    const b = Uint8Array.from(c);
    const s = pathFromBytes(b);
    assert.deepEqual(pathToBytes(s), b, JSON.stringify(c));
  }
  assert.equal(pathFromBytes(Uint8Array.from([0x61, 0xff])), "a\udcff");
});

Deno.test("random byte strings round-trip", () => {
  for (let k = 0; k < 2000; k++) {
    const b = new Uint8Array(1 + (k % 17));
    crypto.getRandomValues(b);
    assert.deepEqual(pathToBytes(pathFromBytes(b)), b);
  }
});
