import { mulberry32 } from "./support/rng.ts";
import assert from "node:assert/strict";
import {
  aufsBranchCapacity,
  formatMountLabel,
  goQuote,
  packAufsBranches,
  utf8Length,
} from "../lib/aufs/branches.ts";

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s).length;
const TRAILER = ",dio,xino=/dev/shm/aufs.xino";

Deno.test("a short chain fits in one mount call, nearest parent first", () => {
  const { data, appends } = packAufsBranches("/r/diff/c", ["/r/diff/b", "/r/diff/a"], {
    pageSize: 4096,
    dirperm1: false,
  });
  assert.deepEqual(data, "br:/r/diff/c=rw:/r/diff/b=ro+wh:/r/diff/a=ro+wh" + TRAILER);
  assert.deepEqual(appends, []);
});

Deno.test("a base layer's data holds only the rw branch", () => {
  assert.deepEqual(
    packAufsBranches("/r/diff/a", [], { pageSize: 4096, dirperm1: false }).data,
    "br:/r/diff/a=rw" + TRAILER,
  );
});

Deno.test("dirperm1 and the label follow the fixed options, label quoted on every call", () => {
  const ro = Array.from({ length: 60 }, (_, i) => `/r/diff/${String(i).padStart(64, "0")}`);
  const label = "system_u:object_r:container_file_t:s0:c1,c2";
  const { data, appends } = packAufsBranches("/r/diff/top", ro, {
    pageSize: 4096,
    dirperm1: true,
    mountLabel: label,
  });
  assert(data.endsWith(`${TRAILER},dirperm1,context="${label}"`), data.slice(-120));
  assert(appends.length > 0);
  for (const a of appends) {
    assert(a.startsWith("append:"), a.slice(0, 40));
    assert(a.endsWith(`=ro+wh,context="${label}"`), a.slice(-80));
  }
});

Deno.test("capacity is page size minus label length minus 54, minus 9 more with dirperm1", () => {
  assert.deepEqual(aufsBranchCapacity({ pageSize: 4096, dirperm1: false }), 4042);
  assert.deepEqual(aufsBranchCapacity({ pageSize: 4096, dirperm1: true }), 4033);
  assert.deepEqual(
    aufsBranchCapacity({ pageSize: 65536, dirperm1: true, mountLabel: "abc" }),
    65470,
  );
  // A label's escapes count: they are bytes of the mount data too.
  assert.deepEqual(
    aufsBranchCapacity({ pageSize: 4096, dirperm1: false, mountLabel: 'a"b' }),
    4038,
  );
});

Deno.test("a branch that fits exactly is kept; one byte more moves it to a remount", () => {
  const page = 4096;
  const cap = aufsBranchCapacity({ pageSize: page, dirperm1: false });
  const rw = "/r/diff/top";
  const head = bytes(`br:${rw}=rw`);
  // One ro branch whose ":<path>=ro+wh" brings the list to exactly `cap` bytes.
  const exact = "/" + "x".repeat(cap - head - bytes(":/=ro+wh"));
  const fits = packAufsBranches(rw, [exact], { pageSize: page, dirperm1: false });
  assert.deepEqual(fits.appends, []);
  assert.deepEqual(bytes(fits.data), cap + TRAILER.length);

  const over = exact + "y";
  const moved = packAufsBranches(rw, [over], { pageSize: page, dirperm1: false });
  assert.deepEqual(moved.data, `br:${rw}=rw${TRAILER}`);
  assert.deepEqual(moved.appends, [`append:${over}=ro+wh`]);
});

Deno.test("remounts pack several append: options, comma-separated, each within the capacity", () => {
  const ro = Array.from({ length: 200 }, (_, i) => `/root/diff/${String(i).padStart(64, "a")}`);
  const { data, appends } = packAufsBranches("/root/diff/top", ro, {
    pageSize: 4096,
    dirperm1: false,
  });
  const inData = data.split(":").length - 2; // br:rw plus one ":" per ro branch
  const appended = appends.flatMap((a) => a.split(","));
  assert.deepEqual(inData + appended.length, 200);
  assert.deepEqual(appended, ro.slice(inData).map((p) => `append:${p}=ro+wh`));
  for (const a of appends) {
    assert(bytes(a) <= aufsBranchCapacity({ pageSize: 4096, dirperm1: false }));
  }
  assert(appends.length < 200 - inData, "more than one branch per remount");
});

Deno.test("a label too long for the page is an error, not a crash", () => {
  assert.throws(
    () =>
      packAufsBranches("/r/diff/a", [], {
        pageSize: 4096,
        dirperm1: false,
        mountLabel: "l".repeat(4100),
      }),
    RangeError,
  );
  assert.throws(
    () =>
      packAufsBranches("/r/diff/a", [], {
        pageSize: 4096,
        dirperm1: false,
        mountLabel: "l".repeat(4030),
      }),
    /does not fit/,
  );
});

Deno.test("a single branch longer than a remount can carry is an error", () => {
  const huge = "/" + "z".repeat(5000);
  assert.throws(
    () => packAufsBranches("/r/diff/a", [huge], { pageSize: 4096, dirperm1: false }),
    /longer than/,
  );
});

Deno.test("lengths are counted in UTF-8 bytes", () => {
  assert.deepEqual(utf8Length("abc"), 3);
  assert.deepEqual(utf8Length("é"), 2);
  assert.deepEqual(utf8Length("日本"), 6);
  assert.deepEqual(utf8Length("\u{1F600}"), 4);
  assert.deepEqual(utf8Length("\ud800x"), 4); // lone surrogate is written as U+FFFD
  for (const s of ["/r/diff/é", "x日y", "\u{1F600}\u{1F601}", "plain"]) {
    assert.deepEqual(utf8Length(s), bytes(s));
  }
});

Deno.test("labels are quoted like Go's %q", () => {
  assert.deepEqual(goQuote("system_u:object_r:x:s0:c1,c2"), '"system_u:object_r:x:s0:c1,c2"');
  assert.deepEqual(goQuote('a"b\\c'), '"a\\"b\\\\c"');
  assert.deepEqual(goQuote("\n\t\x07\x00\x7f"), '"\\n\\t\\a\\x00\\x7f"');
  assert.deepEqual(goQuote("é日\u{1F600}"), '"é日\u{1F600}"');
  assert.deepEqual(goQuote("\u00a0\ue000\u{10ffff}"), '"\\u00a0\\ue000\\U0010ffff"');
  assert.deepEqual(formatMountLabel("", "l"), 'context="l"');
  assert.deepEqual(formatMountLabel("x", ""), "x");
  assert.deepEqual(formatMountLabel("x", undefined), "x");
});

// ---- property test ----

const rng = mulberry32;

const PATH_CHARS = "abcdef0123456789_-.é日";
const LABEL_CHARS = 'abcxyz_:,.0123 "\\';

function pick(r: () => number, chars: string, n: number): string {
  const cs = [...chars];
  let s = "";
  for (let i = 0; i < n; i++) s += cs[Math.floor(r() * cs.length)];
  return s;
}

/** The label as the test expects it in the data: quotes, with `"` and `\` escaped. */
const quoted = (label: string) => `"${label.replace(/[\\"]/g, "\\$&")}"`;

Deno.test("property: every branch once, in order, each call under a page, greedy to the capacity", () => {
  const seed = 20240601;
  const r = rng(seed);
  let withAppends = 0, withBigPage = 0, withEscapes = 0;
  for (let run = 0; run < 320; run++) {
    const pageSize = r() < 0.7 ? 4096 : 65536;
    const dirperm1 = r() < 0.5;
    const root = "/" + pick(r, PATH_CHARS, 1 + Math.floor(r() * 300));
    const labelKind = r();
    const label = labelKind < 0.3
      ? undefined
      : labelKind < 0.8
      ? "system_u:object_r:container_file_t:s0:c" + Math.floor(r() * 1000) + ",c" +
        Math.floor(r() * 1000)
      : pick(r, LABEL_CHARS, Math.floor(r() * 600));
    const n = Math.floor(r() * (pageSize === 4096 ? 150 : 900));
    const ro = Array.from(
      { length: n },
      () => `${root}/diff/${pick(r, PATH_CHARS, 1 + Math.floor(r() * 64))}`,
    );
    const rw = `${root}/diff/${pick(r, PATH_CHARS, 64)}`;
    const ctx =
      `run ${run} (seed ${seed}): page ${pageSize}, dirperm1 ${dirperm1}, root ${root.length}, label ${label?.length}, ${n} layers`;

    const { data, appends } = packAufsBranches(rw, ro, { pageSize, dirperm1, mountLabel: label });
    const labelPart = label ? `,context=${quoted(label)}` : "";
    const capacity = pageSize - (label ? bytes(quoted(label)) - 2 : 0) - 54 - (dirperm1 ? 9 : 0);

    const suffix = TRAILER + (dirperm1 ? ",dirperm1" : "") + labelPart;
    assert(data.endsWith(suffix), ctx);
    const list = data.slice(0, data.length - suffix.length);
    const head = `br:${rw}=rw`;
    assert(list.startsWith(head), ctx);
    const inData = list === head ? [] : list.slice(head.length + 1).split(":").map((b) => {
      assert(b.endsWith("=ro+wh"), ctx);
      return b.slice(0, -"=ro+wh".length);
    });
    assert(bytes(list) <= capacity, ctx);
    assert(bytes(data) < pageSize, ctx);

    const chunks = appends.map((a) => {
      assert(a.endsWith(labelPart), ctx);
      const body = a.slice(0, a.length - labelPart.length);
      assert(bytes(body) <= capacity, ctx);
      assert(bytes(a) < pageSize, ctx);
      return body.split(",").map((e) => {
        assert(e.startsWith("append:") && e.endsWith("=ro+wh"), ctx);
        return e.slice("append:".length, -"=ro+wh".length);
      });
    });
    assert.deepEqual([...inData, ...chunks.flat()], ro, ctx);

    // Greedy: the next branch did not fit where the previous call stopped.
    if (chunks.length > 0) {
      assert(bytes(list) + bytes(`:${chunks[0][0]}=ro+wh`) > capacity, ctx);
    }
    for (let i = 0; i + 1 < chunks.length; i++) {
      const body = chunks[i].map((p) => `append:${p}=ro+wh`).join(",");
      assert(bytes(body) + bytes(`,append:${chunks[i + 1][0]}=ro+wh`) > capacity, ctx);
    }
    if (chunks.length > 1) withAppends++;
    if (pageSize === 65536 && chunks.length > 0) withBigPage++;
    if (label && /["\\]/.test(label)) withEscapes++;
  }
  // The generator must reach the interesting cases, or the checks above prove little.
  assert(
    withAppends > 50 && withBigPage > 10 && withEscapes > 10,
    `${withAppends} ${withBigPage} ${withEscapes}`,
  );
});
