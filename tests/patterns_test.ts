import assert from "node:assert/strict";
import { PatternMatcher, PatternSyntaxError } from "../lib/archive/patterns.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";

const enc = new TextEncoder();

Deno.test("aufs Diff patterns: top-level .wh..wh.* and their subtrees are excluded", () => {
  const pm = new PatternMatcher(AUFS_DIFF_EXCLUDES);
  for (const p of [".wh..wh.aufs", ".wh..wh.plnk", ".wh..wh.plnk/123.456", ".wh..wh.orph/x/y"]) {
    assert.equal(pm.matches(p), true, p);
    assert.equal(pm.matches(enc.encode(p)), true, `${p} as bytes`);
  }
});

Deno.test("aufs Diff patterns: top-level opaque marker re-included, nested whiteouts never match", () => {
  const pm = new PatternMatcher(AUFS_DIFF_EXCLUDES);
  for (
    const p of [".wh..wh..opq", "dir/.wh..wh..opq", "dir/.wh.x", ".wh.x", "a/.wh..wh.plnk/x", "x"]
  ) {
    assert.equal(pm.matches(p), false, p);
  }
});

Deno.test("mustEnter: only directories that a ! pattern names something inside", () => {
  const pm = new PatternMatcher(["docs", "!docs/keep.md", "build"]);
  assert.equal(pm.mustEnter("docs"), true);
  assert.equal(pm.mustEnter("build"), false);
  assert.equal(new PatternMatcher(AUFS_DIFF_EXCLUDES).mustEnter(".wh..wh.plnk"), false);
  assert.equal(new PatternMatcher(["a"]).mustEnter("a"), false);
});

Deno.test("glob syntax: *, ?, **, escapes, classes", () => {
  const pm = (p: string) => new PatternMatcher([p]);
  assert.equal(pm("*.go").matches("a.go"), true);
  assert.equal(pm("*.go").matches("dir/a.go"), false, "* does not cross /");
  assert.equal(pm("dir/*.go").matches("dir/a.go"), true);
  assert.equal(pm("x?y").matches("xzy"), true);
  assert.equal(pm("x?y").matches("x/y"), false, "? does not match /");
  assert.equal(pm("**/foo").matches("a/b/foo"), true);
  assert.equal(pm("**/foo").matches("foo"), true);
  assert.equal(pm("docs/**/*.md").matches("docs/a/b/c.md"), true);
  assert.equal(pm("a/**").matches("a/b/c"), true);
  assert.equal(pm("a\\*b").matches("a*b"), true);
  assert.equal(pm("a\\*b").matches("axb"), false);
  assert.equal(pm("[ab]c").matches("bc"), true);
  assert.equal(pm("[ab]c").matches("cc"), false);
  assert.equal(pm("c.d").matches("cxd"), false, ". is literal");
  assert.equal(pm("é?").matches("éx"), true, "? is one character, not one byte");
});

Deno.test("a pattern also matches everything below what it names", () => {
  const pm = new PatternMatcher(["a/b"]);
  assert.equal(pm.matches("a/b"), true);
  assert.equal(pm.matches("a/b/c/d"), true);
  assert.equal(pm.matches("a/bc"), false);
  assert.equal(pm.matches("a"), false);
});

Deno.test("the last matching pattern wins", () => {
  const pm = new PatternMatcher(["*.txt", "!keep.txt", "keep.txt/never"]);
  assert.equal(pm.matches("a.txt"), true);
  assert.equal(pm.matches("keep.txt"), false);
  assert.equal(new PatternMatcher(["!a", "a"]).matches("a"), true);
});

Deno.test("patterns are trimmed and cleaned; a plain leading / never matches a relative path", () => {
  const pm = new PatternMatcher(["  ./a//b/  ", "", "/abs", "!/x/../y"]);
  assert.deepEqual(pm.patterns.map((p) => p.text), ["a/b", "/abs", "y"]);
  assert.equal(pm.matches("a/b"), true);
  assert.equal(pm.matches("abs"), false);
  assert.equal(pm.patterns[2].exclusion, true);
});

Deno.test("malformed patterns are rejected at construction", () => {
  for (const bad of ["!", "[", "a[", "\\", "[]", "[a-]"]) {
    assert.throws(() => new PatternMatcher([bad]), PatternSyntaxError, bad);
  }
});

Deno.test("invalid UTF-8 bytes count as one character each", () => {
  const pm = new PatternMatcher(["a?b"]);
  assert.equal(pm.matches(new Uint8Array([0x61, 0xff, 0x62])), true);
  assert.equal(pm.matches(new Uint8Array([0x61, 0xff, 0xfe, 0x62])), false);
});
