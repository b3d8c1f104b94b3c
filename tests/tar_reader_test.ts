import { mulberry32 } from "./support/rng.ts";
import assert from "node:assert/strict";
import { makeHeader, nameText, type TarHeader, TarType } from "../lib/archive/tar_header.ts";
import { readTar, TarFormatError, TarParser, type TarSink } from "../lib/archive/tar_reader.ts";
import { encodeHeader, END_OF_ARCHIVE, padding } from "../lib/archive/tar_writer.ts";
import {
  BAD_NAME,
  BINARY_XATTR,
  CAPABILITY,
  HELLO_MTIME,
  makeTree,
  run,
} from "./fixtures/tar/make_tree.ts";

const enc = new TextEncoder();

/** One parsed entry: header and body. */
interface Entry {
  h: TarHeader;
  body: Uint8Array;
}

/** A sink that records entries and checks the entry/data/end call order. */
function collector(): TarSink & { entries: Entry[] } {
  const entries: Entry[] = [];
  let open: { h: TarHeader; parts: Uint8Array[] } | null = null;
  return {
    entries,
    entry(h) {
      assert.equal(open, null, "entry() before end() of the previous entry");
      open = { h, parts: [] };
    },
    data(chunk) {
      assert.ok(open, "data() outside an entry");
      assert.ok(chunk.length > 0, "empty data chunk");
      open.parts.push(chunk.slice());
    },
    end() {
      assert.ok(open, "end() outside an entry");
      entries.push({ h: open.h, body: concat(open.parts) });
      open = null;
    },
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const rng = mulberry32;

type Chunking = "whole" | "bytes" | "random";

function parse(tar: Uint8Array, chunking: Chunking = "whole", seed = 1): Entry[] {
  const sink = collector();
  const parser = new TarParser(sink);
  if (chunking === "whole") {
    parser.push(tar);
  } else if (chunking === "bytes") {
    for (let i = 0; i < tar.length; i++) parser.push(tar.subarray(i, i + 1));
  } else {
    const next = rng(seed);
    for (let i = 0; i < tar.length;) {
      const n = 1 + Math.floor(next() * (next() < 0.5 ? 40 : 3000));
      // Copies, so nothing can rely on the previous chunk staying intact.
      parser.push(tar.slice(i, i + n));
      i += n;
    }
  }
  parser.finish();
  return sink.entries;
}

function parseError(tar: Uint8Array, chunking: Chunking = "whole"): TarFormatError {
  try {
    parse(tar, chunking);
  } catch (e) {
    assert.ok(e instanceof TarFormatError, `expected TarFormatError, got ${e}`);
    return e;
  }
  assert.fail("parsing succeeded but should have failed");
}

function bodyFor(h: TarHeader, seed: number): Uint8Array {
  const isBodyType = h.type < TarType.LINK || h.type > TarType.FIFO;
  const body = new Uint8Array(isBodyType ? h.size : 0);
  for (let i = 0; i < body.length; i++) body[i] = (i * 31 + seed) & 0xff;
  return body;
}

/** Encode entries as a complete archive with our writer. */
function archive(entries: { h: TarHeader; body?: Uint8Array }[], end = true): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    parts.push(encodeHeader(e.h));
    const body = e.body ?? new Uint8Array(0);
    parts.push(body, new Uint8Array(padding(body.length)));
  }
  if (end) parts.push(END_OF_ARCHIVE);
  return concat(parts);
}

/** What a header looks like after a write/read round trip (Go's rules). */
function expectedAfterRoundTrip(h: TarHeader): TarHeader {
  const out: TarHeader = { ...h, mtimeNsec: 0 };
  out.mtimeSec = h.mtimeSec + (h.mtimeNsec >= 5e8 ? 1 : 0);
  delete out.atimeSec;
  delete out.atimeNsec;
  if (h.type === 0) {
    out.type = h.name[h.name.length - 1] === 0x2f ? TarType.DIR : TarType.REG;
  }
  const kept = [...(h.xattrs ?? [])].filter(([, v]) => v.length > 0);
  if (kept.length > 0) out.xattrs = new Map(kept);
  else delete out.xattrs;
  return out;
}

function sortedXattrs(h: TarHeader): TarHeader {
  if (!h.xattrs) return h;
  return { ...h, xattrs: new Map([...h.xattrs].sort(([a], [b]) => (a < b ? -1 : 1))) };
}

const r = (s: string, n: number) => s.repeat(n);

/** Header shapes for the round trip, covering USTAR, PAX and GNU paths. */
function shapes(): TarHeader[] {
  const next = rng(7);
  const list: TarHeader[] = [
    makeHeader({ name: "a.txt", size: 5, mtimeSec: 1700000000, uname: "root", gname: "root" }),
    makeHeader({ name: "etc/", type: TarType.DIR, mode: 0o40755 }),
    makeHeader({ name: r("n", 100), size: 511 }),
    makeHeader({ name: "dir/" + r("x", 97), size: 512 }),
    makeHeader({ name: r("y", 101), size: 513 }),
    makeHeader({ name: r("p", 155) + "/" + r("q", 100), size: 1 }),
    makeHeader({ name: r("p", 156) + "/" + r("q", 100) }),
    makeHeader({ name: r("d/", 200), type: TarType.DIR, mode: 0o41777 }),
    makeHeader({ name: "héllo/wörld", size: 3 }),
    makeHeader({ name: new Uint8Array([0x62, 0xff, 0xfe, 0x2f, 0x80]), size: 2 }),
    makeHeader({ name: r("漢", 80), size: 9 }),
    makeHeader({ name: "ln", type: TarType.SYMLINK, mode: 0o120777, linkname: r("t", 100) }),
    makeHeader({ name: "ln2", type: TarType.SYMLINK, linkname: r("../", 100) + "x" }),
    makeHeader({ name: "ln3", type: TarType.SYMLINK, linkname: "cible-é" }),
    makeHeader({ name: "hl", type: TarType.LINK, linkname: r("H", 300) }),
    makeHeader({ name: "dev/null", type: TarType.CHR, mode: 0o20666, devmajor: 1, devminor: 3 }),
    makeHeader({ name: "dev/nvme", type: TarType.BLK, devmajor: 259, devminor: 2 ** 20 }),
    makeHeader({ name: "dev/gnu", type: TarType.CHR, devmajor: 2 ** 21, devminor: 7 }),
    makeHeader({ name: r("g", 140), type: TarType.BLK, devmajor: -1, linkname: r("k", 120) }),
    makeHeader({ name: "negmode", mode: -2, size: 4 }),
    makeHeader({ name: "fifo", type: TarType.FIFO, mode: 0o10600 }),
    makeHeader({ name: "uid", uid: 2100000, gid: 2 ** 40, size: 1 }),
    makeHeader({ name: "uidgnu", uid: 2100000, type: TarType.CHR, devmajor: 2 ** 22 }),
    makeHeader({ name: "neg-time", mtimeSec: -86401, mtimeNsec: 600_000_000 }),
    makeHeader({ name: "big-time", mtimeSec: 2 ** 33 + 5 }),
    makeHeader({ name: "gnu-neg-time", mtimeSec: -5, type: TarType.CHR, devminor: -3 }),
    makeHeader({ name: "ns-down", mtimeSec: 10, mtimeNsec: 499_999_999 }),
    makeHeader({ name: "ns-up", mtimeSec: 10, mtimeNsec: 500_000_000, atimeSec: 4 }),
    makeHeader({ name: "owners", uname: r("u", 40), gname: "grüppe" }),
    makeHeader({
      name: "xattrs",
      size: 20,
      xattrs: new Map([
        ["security.capability", new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0])],
        ["user.bin", new Uint8Array([0, 0xff, 0x0a, 0x3d, 0])],
        ["user.empty", new Uint8Array(0)],
        ["user.ünï", enc.encode("v")],
        ["trusted.big", new Uint8Array(5000).fill(0x76)],
      ]),
    }),
    makeHeader({ name: "only-empty-xattr", xattrs: new Map([["user.e", new Uint8Array(0)]]) }),
    makeHeader({ name: "legacy", type: 0, size: 3 }),
    makeHeader({ name: "legacydir/", type: 0 }),
    makeHeader({ name: "dir-with-size/", type: TarType.DIR, size: 700 }),
    makeHeader({ name: "cont", type: TarType.CONT, size: 10 }),
    makeHeader({ name: "vol", type: 0x56, size: 0 }),
    makeHeader({ name: "", size: 1 }),
  ];
  // Random mixes of the same ingredients.
  const pick = <T>(xs: T[]) => xs[Math.floor(next() * xs.length)];
  for (let i = 0; i < 150; i++) {
    const segs = 1 + Math.floor(next() * 6);
    let name = "";
    for (let s = 0; s < segs; s++) {
      name += (s ? "/" : "") + r(pick(["a", "é", "z", "漢", "-"]), 1 + Math.floor(next() * 60));
    }
    const type = pick([TarType.REG, TarType.REG, TarType.DIR, TarType.SYMLINK, TarType.CHR]);
    list.push(makeHeader({
      name: type === TarType.DIR ? name + "/" : name,
      type,
      linkname: type === TarType.SYMLINK ? r(pick(["t", "ü"]), Math.floor(next() * 200)) : "",
      mode: Math.floor(next() * 0o7777),
      uid: pick([0, 1000, 2097151, 2097152, 65534]),
      gid: pick([0, 42, 2 ** 31]),
      uname: pick(["", "root", "user"]),
      size: type === TarType.REG ? pick([0, 1, 100, 511, 512, 513, 4096, 10000]) : 0,
      mtimeSec: pick([0, 1, 1700000000, -1, 2 ** 33]),
      mtimeNsec: pick([0, 1, 999_999_999]),
      devmajor: type === TarType.CHR ? pick([0, 5, 2 ** 21]) : 0,
      // Xattrs force PAX, which cannot carry a GNU-only device number.
      xattrs: next() < 0.2 && type !== TarType.CHR
        ? new Map([["user.k" + i, enc.encode("v" + i)]])
        : undefined,
    }));
  }
  return list;
}

Deno.test("encode → parse round-trips header fields and bodies, whatever the chunking", () => {
  const headers = shapes();
  const entries = headers.map((h, i) => ({ h, body: bodyFor(h, i) }));
  const tar = archive(entries);
  for (const chunking of ["whole", "bytes", "random"] as const) {
    const got = parse(tar, chunking, 3);
    assert.equal(got.length, entries.length, chunking);
    for (const [i, e] of got.entries()) {
      const want = expectedAfterRoundTrip(headers[i]);
      assert.deepEqual(sortedXattrs(e.h), sortedXattrs(want), `${chunking}: entry ${i}`);
      assert.deepEqual(e.body, entries[i].body, `${chunking}: body of entry ${i}`);
    }
  }
});

Deno.test("header-only types carry no body even when their size field is set", () => {
  const dir = makeHeader({ name: "d/", type: TarType.DIR, size: 1000 });
  const file = makeHeader({ name: "f", size: 2 });
  const tar = archive([{ h: dir }, { h: file, body: enc.encode("ok") }]);
  const got = parse(tar);
  assert.equal(got[0].h.size, 1000);
  assert.equal(got[0].body.length, 0);
  assert.deepEqual(got[1].body, enc.encode("ok"));
});

Deno.test("archives without end marker, with one zero block, or with trailing data are accepted", () => {
  const entries = [{ h: makeHeader({ name: "f", size: 3 }), body: enc.encode("abc") }];
  const bare = archive(entries, false);
  assert.equal(parse(bare).length, 1);
  assert.equal(parse(concat([bare, new Uint8Array(512)])).length, 1);
  const trailing = concat([archive(entries), enc.encode("garbage after the end")]);
  for (const chunking of ["whole", "bytes"] as const) {
    assert.equal(parse(trailing, chunking).length, 1);
  }
  assert.equal(parse(new Uint8Array(0)).length, 0);
  const parser = new TarParser(collector());
  parser.push(archive(entries));
  assert.equal(parser.done, true);
});

// ---- crafted blocks -------------------------------------------------------

/** A USTAR block for `h` (our writer), to be edited by the tests. */
function ustarBlock(h: TarHeader): Uint8Array {
  const b = encodeHeader(h);
  assert.equal(b.length, 512);
  return b;
}

function setChecksum(b: Uint8Array, signed = false): Uint8Array {
  let sum = 0;
  for (let i = 0; i < 512; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i];
    sum += signed && c >= 0x80 ? c - 256 : c;
  }
  const field = (sum < 0 ? 0 : sum).toString(8).padStart(6, "0");
  b.set(enc.encode(field), 148);
  b[154] = 0;
  b[155] = 0x20;
  if (sum < 0) throw new Error("negative checksum not representable");
  return b;
}

function put(b: Uint8Array, off: number, len: number, s: string | Uint8Array): void {
  const bytes = typeof s === "string" ? enc.encode(s) : s;
  b.fill(0, off, off + len);
  b.set(bytes, off);
}

function paxBlock(records: string | Uint8Array, type: number = TarType.PAX): Uint8Array {
  const data = typeof records === "string" ? enc.encode(records) : records;
  const b = ustarBlock(makeHeader({ name: "PaxHeaders.0/x", size: data.length, mode: 0 }));
  b[156] = type;
  setChecksum(b);
  return concat([b, data, new Uint8Array(padding(data.length))]);
}

/** One PAX record, `"<len> <key>=<value>\n"`. */
function recBytes(key: string, value: Uint8Array): Uint8Array {
  const base = enc.encode(key).length + value.length + 3;
  let n = base + String(base).length;
  if (String(n).length !== String(base).length) n = base + String(n).length;
  return concat([enc.encode(`${n} ${key}=`), value, enc.encode("\n")]);
}

function rec(key: string, value: string): string {
  return new TextDecoder().decode(recBytes(key, enc.encode(value)));
}

Deno.test("PAX records set path, linkpath, ids, names, size and times with nanoseconds", () => {
  const records = rec("path", "real/name") + rec("linkpath", "real/target") +
    rec("uid", "3000000") + rec("gid", "9007199254740991") + rec("uname", "ünï") +
    rec("gname", "g") + rec("size", "3") + rec("mtime", "1700000000.1234567891") +
    rec("atime", "-1.25") + rec("ctime", "5.5") + rec("comment", "ignored") +
    rec("SCHILY.xattr.user.a", "A") + rec("uname", "later") + rec("path", "");
  const h = makeHeader({ name: "short", type: TarType.REG, size: 0, uid: 1 });
  const tar = concat([paxBlock(records), ustarBlock(h), enc.encode("xyz"), new Uint8Array(509)]);
  const [e] = parse(tar, "bytes");
  // The later empty path record keeps the header's name, as Go does.
  assert.equal(nameText(e.h.name), "short");
  assert.equal(nameText(e.h.linkname), "real/target");
  assert.equal(e.h.uid, 3000000);
  assert.equal(e.h.gid, 9007199254740991);
  assert.equal(e.h.uname, "later");
  assert.equal(e.h.size, 3);
  assert.deepEqual([e.h.mtimeSec, e.h.mtimeNsec], [1700000000, 123456789]);
  assert.deepEqual([e.h.atimeSec, e.h.atimeNsec], [-2, 750_000_000]);
  assert.deepEqual(e.h.xattrs, new Map([["user.a", enc.encode("A")]]));
  assert.deepEqual(e.body, enc.encode("xyz"));
});

Deno.test("PAX path keeps raw bytes, including invalid UTF-8", () => {
  const raw = new Uint8Array([0x61, 0xff, 0x2f, 0xc3, 0x28]);
  const tar = concat([paxBlock(recBytes("path", raw)), ustarBlock(makeHeader({ name: "x" }))]);
  const [e] = parse(tar);
  assert.deepEqual(e.h.name, raw);
});

Deno.test("a PAX global header is validated and skipped, not applied", () => {
  const g = paxBlock(rec("uname", "global") + rec("mtime", "5"), TarType.PAX_GLOBAL);
  const tar = concat([g, ustarBlock(makeHeader({ name: "f", uname: "own" })), END_OF_ARCHIVE]);
  const got = parse(tar);
  assert.equal(got.length, 1);
  assert.equal(got[0].h.uname, "own");
  assert.equal(got[0].h.mtimeSec, 0);
  const bad = concat([paxBlock(rec("mtime", "soon"), TarType.PAX_GLOBAL), END_OF_ARCHIVE]);
  assert.match(parseError(bad).reason, /^invalid PAX record/);
});

Deno.test("GNU long name and link blocks set the next entry's names and win over PAX", () => {
  const longName = r("N", 300);
  const longLink = r("K", 200);
  const gnuBlock = (type: number, s: string) => {
    const data = concat([enc.encode(s), new Uint8Array(1)]);
    const b = ustarBlock(makeHeader({ name: "././@LongLink", size: data.length }));
    b[156] = type;
    put(b, 257, 8, "ustar  \0");
    setChecksum(b);
    return concat([b, data, new Uint8Array(padding(data.length))]);
  };
  const tar = concat([
    paxBlock(rec("path", "pax-name")),
    gnuBlock(TarType.GNU_LONGNAME, longName),
    gnuBlock(TarType.GNU_LONGLINK, longLink),
    ustarBlock(makeHeader({ name: "cut", type: TarType.SYMLINK, linkname: "cut" })),
    END_OF_ARCHIVE,
  ]);
  const [e] = parse(tar, "random");
  assert.equal(nameText(e.h.name), longName);
  assert.equal(nameText(e.h.linkname), longLink);
});

Deno.test("v7, star and old-GNU headers: typeflag NUL, prefixes, base-256 numbers", () => {
  // v7: no magic, typeflag NUL, owner names not read.
  const v7 = ustarBlock(makeHeader({ name: "old/", type: TarType.DIR, uname: "ignored" }));
  v7[156] = 0;
  put(v7, 257, 8, "");
  setChecksum(v7);
  // star: prefix of 131 bytes and an atime.
  const star = ustarBlock(makeHeader({ name: "file", size: 0 }));
  put(star, 345, 131, "pre/fix");
  put(star, 476, 12, "00000000012");
  put(star, 508, 4, "tar\0");
  setChecksum(star);
  // GNU: base-256 uid, negative mtime, huge size, atime.
  const gnu = ustarBlock(makeHeader({ name: "gnu", type: TarType.CHR, size: 0 }));
  put(gnu, 257, 8, "ustar  \0");
  put(gnu, 108, 8, new Uint8Array([0x80, 0, 0, 0, 0, 0x20, 0x0b, 0x20])); // 2100000
  put(gnu, 136, 12, new Uint8Array(12).fill(0xff)); // -1
  put(gnu, 345, 12, "00000000007");
  put(gnu, 124, 12, new Uint8Array([0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])); // 2^33
  setChecksum(gnu);
  // A GNU header from Go < 1.8 with a ustar prefix where the times belong.
  const buggy = ustarBlock(makeHeader({ name: "tail" }));
  put(buggy, 257, 8, "ustar  \0");
  put(buggy, 345, 155, "head9");
  setChecksum(buggy);
  const got = parse(concat([v7, star, gnu, buggy, END_OF_ARCHIVE]));
  assert.equal(nameText(got[0].h.name), "old/");
  assert.equal(got[0].h.type, TarType.DIR);
  assert.equal(got[0].h.uname, "");
  assert.equal(nameText(got[1].h.name), "pre/fix/file");
  assert.equal(got[1].h.atimeSec, 10);
  assert.equal(got[2].h.uid, 2100000);
  assert.equal(got[2].h.mtimeSec, -1);
  assert.equal(got[2].h.size, 2 ** 33);
  assert.equal(got[2].h.atimeSec, 7);
  assert.equal(nameText(got[3].h.name), "head9/tail");
});

Deno.test("checksums written as signed byte sums are accepted", () => {
  const b = ustarBlock(makeHeader({ name: "x" }));
  put(b, 265, 32, enc.encode("ü")); // bytes >= 0x80 make the two sums differ
  setChecksum(b, true);
  assert.equal(parse(concat([b, END_OF_ARCHIVE]))[0].h.uname, "ü");
});

// ---- errors --------------------------------------------------------------

Deno.test("garbage and bad checksums are invalid tar headers, with the offset", () => {
  const garbage = new Uint8Array(1024).fill(0x41);
  const e1 = parseError(garbage);
  assert.match(e1.reason, /^invalid tar header/);
  assert.equal(e1.offset, 0);
  const good = archive([{ h: makeHeader({ name: "a", size: 1 }), body: enc.encode("1") }], false);
  const bad = ustarBlock(makeHeader({ name: "b" }));
  bad[0] ^= 1; // checksum no longer matches
  const e2 = parseError(concat([good, bad]), "bytes");
  assert.match(e2.reason, /^invalid tar header/);
  assert.equal(e2.offset, 1024);
  assert.match(e2.message, /offset 1024/);
  // A zero block followed by a non-zero one.
  const e3 = parseError(concat([new Uint8Array(512), good]));
  assert.match(e3.reason, /^invalid tar header/);
  assert.equal(e3.offset, 512);
  // Malformed octal digits.
  const nonOctal = ustarBlock(makeHeader({ name: "c" }));
  put(nonOctal, 108, 8, "0000009");
  setChecksum(nonOctal);
  assert.match(parseError(nonOctal).reason, /^invalid tar header: malformed uid/);
});

Deno.test("streams cut inside a header, a body or the padding fail as unexpected end", () => {
  const tar = archive([
    { h: makeHeader({ name: "first", size: 700 }), body: new Uint8Array(700) },
    { h: makeHeader({ name: "pax-é", size: 5 }), body: enc.encode("hello") },
  ]);
  // header of "first" = [0,512), body [512,1212), padding to 1536, PAX from 1536.
  const cuts: [number, RegExp, string | undefined][] = [
    [100, /header block/, undefined],
    [600, /body/, "first"],
    [1300, /padding/, "first"],
    [1536 + 520, /PAX/, undefined],
  ];
  for (const [cut, where, entry] of cuts) {
    for (const chunking of ["whole", "bytes"] as const) {
      const e = parseError(tar.subarray(0, cut), chunking);
      assert.match(e.reason, /^unexpected end of tar/);
      assert.match(e.reason, where);
      assert.equal(e.offset, cut);
      assert.equal(e.entry, entry);
    }
  }
  // Cut inside the second zero block of the end marker.
  assert.match(parseError(tar.subarray(0, tar.length - 100)).reason, /^unexpected end/);
});

Deno.test("sparse entries are refused, whether GNU 'S' or PAX GNU.sparse records", () => {
  const s = ustarBlock(makeHeader({ name: "holes", size: 0 }));
  s[156] = TarType.GNU_SPARSE;
  put(s, 257, 8, "ustar  \0");
  setChecksum(s);
  const e1 = parseError(concat([s, END_OF_ARCHIVE]));
  assert.match(e1.reason, /^sparse entries are not supported/);
  assert.equal(e1.entry, "holes");
  const pax = paxBlock(rec("GNU.sparse.major", "1") + rec("GNU.sparse.name", "real"));
  const e2 = parseError(concat([pax, ustarBlock(makeHeader({ name: "x" })), END_OF_ARCHIVE]));
  assert.match(e2.reason, /^sparse entries are not supported/);
  assert.equal(e2.entry, "real");
});

Deno.test("negative, unsafe and oversized sizes are refused", () => {
  const neg = ustarBlock(makeHeader({ name: "neg" }));
  put(neg, 124, 12, new Uint8Array(12).fill(0xff));
  setChecksum(neg);
  assert.match(parseError(neg).reason, /^invalid tar header: negative size/);
  const huge = ustarBlock(makeHeader({ name: "huge" }));
  put(huge, 124, 12, new Uint8Array([0x80, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0])); // 2^62
  setChecksum(huge);
  assert.match(parseError(huge).reason, /^invalid tar header: malformed size/);
  const paxHuge = paxBlock(rec("size", "9007199254740993"));
  assert.match(
    parseError(concat([paxHuge, ustarBlock(makeHeader({ name: "x" }))])).reason,
    /^invalid PAX record: bad value for "size"/,
  );
  const paxNeg = paxBlock(rec("size", "-5"));
  assert.match(
    parseError(concat([paxNeg, ustarBlock(makeHeader({ name: "x" }))])).reason,
    /negative size/,
  );
  const bigMeta = ustarBlock(makeHeader({ name: "PaxHeaders.0/x", size: 2 ** 20 + 1 }));
  bigMeta[156] = TarType.PAX;
  setChecksum(bigMeta);
  assert.match(parseError(bigMeta).reason, /exceeds the 1 MiB limit/);
});

Deno.test("malformed PAX records are refused", () => {
  const cases = [
    "5 a=b", // no newline, length too small for content
    "abc path=x\n",
    "3 a\n",
    "99 path=x\n", // length beyond data
    "12 pathxyz0\n", // no '='
    "9 path=\0\n", // NUL in path
    "7 =abc\n", // empty key
    "13 mtime=1.x\n",
    "11 uid=abc\n",
    "10 path=x\n\0", // trailing padding byte
  ];
  for (const records of cases) {
    const tar = concat([paxBlock(records), ustarBlock(makeHeader({ name: "x" })), END_OF_ARCHIVE]);
    const e = parseError(tar);
    assert.match(e.reason, /^invalid PAX record/, JSON.stringify(records));
    assert.equal(e.offset, 0);
  }
});

Deno.test("errors are sticky and sink errors propagate", () => {
  const parser = new TarParser(collector());
  assert.throws(() => parser.push(new Uint8Array(512).fill(1)), TarFormatError);
  assert.throws(() => parser.push(new Uint8Array(0)), TarFormatError);
  assert.throws(() => parser.finish(), TarFormatError);
  const boom = new Error("sink failed");
  const failing = new TarParser({
    entry() {
      throw boom;
    },
    data() {},
    end() {},
  });
  assert.throws(() => failing.push(archive([{ h: makeHeader({ name: "a" }) }])), boom);
});

// ---- streams ---------------------------------------------------------------

function streamOf(bytes: Uint8Array, chunk: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  });
}

Deno.test("readTar parses a stream and rejects a truncated one", async () => {
  const entries = shapes().slice(0, 30).map((h, i) => ({ h, body: bodyFor(h, i) }));
  const tar = archive(entries);
  const sink = collector();
  await readTar(streamOf(tar, 777), sink);
  assert.equal(sink.entries.length, 30);
  assert.deepEqual(sink.entries[3].body, entries[3].body);
  await assert.rejects(
    () => readTar(streamOf(tar.subarray(0, 5000), 333), collector()),
    (e) => e instanceof TarFormatError && /^unexpected end/.test(e.reason),
  );
});

Deno.test("readTar cancels the stream when the sink throws", async () => {
  let cancelled: unknown = null;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(archive([{ h: makeHeader({ name: "a" }) }], false));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const boom = new Error("stop");
  await assert.rejects(() =>
    readTar(stream, {
      entry() {
        throw boom;
      },
      data() {},
      end() {},
    }), boom);
  assert.equal(cancelled, boom);
});

// ---- GNU tar output ---------------------------------------------------------

const isRoot = Deno.uid() === 0;
const hasGnuTar = await new Deno.Command("tar", { args: ["--version"], stdout: "piped" })
  .output().then((o) => o.success && /GNU tar/.test(new TextDecoder().decode(o.stdout)))
  .catch(() => false);
if (!isRoot || !hasGnuTar) {
  console.log("GNU tar parsing tests skipped: they need root and GNU tar");
}

function byName(entries: Entry[]): Map<string, Entry> {
  return new Map(entries.map((e) => [nameText(e.h.name), e]));
}

Deno.test({
  name: "parses GNU tar --format=gnu/oldgnu (L/K long names, base-256 uid 2100000)",
  ignore: !isRoot || !hasGnuTar,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tar_reader_test" });
    try {
      await makeTree(dir);
      for (const format of ["gnu", "oldgnu"]) {
        const tar = await run("tar", [`--format=${format}`, "-C", dir, "-cf", "-", "."]);
        const got = byName(parse(tar, "random", 11));
        const long = `./long/${r("p", 150)}/${r("f", 150)}`;
        assert.equal(got.get(long)?.h.type, TarType.REG, format);
        assert.equal(got.get(`./${r("m", 255)}`)?.h.size, 0);
        const longlink = got.get("./longlink")!;
        assert.equal(nameText(longlink.h.linkname), r("target/", 40) + "end");
        assert.equal(got.get("./bigid")?.h.uid, 2100000);
        assert.equal(got.get("./bigid")?.h.gid, 2100000);
        const chr2 = got.get("./chr2")!.h;
        assert.deepEqual([chr2.type, chr2.devmajor, chr2.devminor], [TarType.CHR, 4, 300]);
        assert.equal(got.get("./fifo")?.h.type, TarType.FIFO);
        assert.equal(got.get("./d/sub/")?.h.mode! & 0o7777, 0o4755);
        const big = got.get("./d/big.bin")!;
        assert.deepEqual(big.body, await Deno.readFile(`${dir}/d/big.bin`));
        const names = [...got.keys()];
        assert.ok(names.some((n) => n.endsWith(r("é", 60))));
        assert.ok(got.has(`./${r("h", 120)}`) || got.has("./hardlink"));
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "parses GNU tar --format=pax --xattrs (ns times, binary xattrs, raw names)",
  ignore: !isRoot || !hasGnuTar,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tar_reader_test" });
    try {
      await makeTree(dir);
      const tar = await run("tar", [
        "--format=pax",
        "--xattrs",
        "--xattrs-include=*",
        "-C",
        dir,
        "-cf",
        "-",
        ".",
      ]);
      const entries = parse(tar, "bytes");
      const got = byName(entries);
      // The first of the hard-linked names is the file, the other a link to it.
      const hello = [got.get("./d/hello.txt"), got.get(`./${r("h", 120)}`)]
        .find((e) => e?.h.type === TarType.REG);
      assert.ok(hello);
      assert.deepEqual([hello.h.mtimeSec, hello.h.mtimeNsec], [...HELLO_MTIME]);
      assert.ok(hello.h.atimeSec !== undefined);
      assert.deepEqual(hello.h.xattrs?.get("user.binary"), BINARY_XATTR);
      assert.deepEqual(hello.h.xattrs?.get("user.text"), enc.encode("some text"));
      assert.deepEqual(got.get("./cap")?.h.xattrs?.get("security.capability"), CAPABILITY);
      assert.deepEqual(got.get("./d/")?.h.xattrs?.get("user.dir"), enc.encode("on a dir"));
      const link = got.get("./d/link")!.h;
      assert.deepEqual([link.mtimeSec, link.mtimeNsec], [1600000000, 500_000_000]);
      const bad = concat([enc.encode("./"), BAD_NAME]);
      assert.ok(
        entries.some((e) =>
          e.h.name.length === bad.length && e.h.name.every((c, i) => c === bad[i])
        ),
      );
      assert.ok(got.has("./\u6f22\u5b57\u30c6\u30b9\u30c8"));
      assert.ok(got.has("./cafe\u0301") && got.has("./caf\u00e9"));
      assert.equal(got.get("./bigid")?.h.uid, 2100000);
      assert.deepEqual(got.get("./d/big.bin")?.body, await Deno.readFile(`${dir}/d/big.bin`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "parses GNU tar --format=v7 and --format=ustar",
  ignore: !isRoot || !hasGnuTar,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tar_reader_test" });
    try {
      await makeTree(dir);
      const split = `${r("e", 154)}/${r("g", 100)}`;
      for (const format of ["v7", "ustar"]) {
        const what = format === "ustar" ? ["d", split] : ["d"];
        const tar = await run("tar", [`--format=${format}`, "-C", dir, "-cf", "-", ...what]);
        const got = byName(parse(tar, "random", 5));
        assert.equal(got.get("d/")?.h.type, TarType.DIR, format);
        assert.equal(got.get("d/")?.h.mtimeSec, 1650000000);
        assert.equal(nameText(got.get("d/link")!.h.linkname), "hello.txt");
        assert.equal(got.get("d/hello.txt")?.h.mtimeSec, HELLO_MTIME[0]);
        assert.deepEqual(got.get("d/hello.txt")?.body, enc.encode("hello\n"));
        assert.equal(got.get("d/sub/three")?.h.mode! & 0o7777, 0);
        assert.equal(got.get("d/hello.txt")?.h.uname, format === "v7" ? "" : "root");
        if (format === "ustar") assert.ok(got.has(split));
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
