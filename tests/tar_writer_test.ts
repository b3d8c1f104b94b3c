import { PEER } from "./support/peer.ts";
import assert from "node:assert/strict";
import { makeHeader, nameText, type TarHeader, TarType } from "../lib/archive/tar_header.ts";
import { TarParser } from "../lib/archive/tar_reader.ts";
import {
  encodeHeader,
  END_OF_ARCHIVE,
  isHeaderOnlyType,
  padding,
  TarEncodeError,
  ZERO_BLOCK,
} from "../lib/archive/tar_writer.ts";
import { makeTree, run } from "./fixtures/tar/make_tree.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function field(b: Uint8Array, off: number, len: number): string {
  return String.fromCharCode(...b.subarray(off, off + len));
}

const b64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

async function sha256(b: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b.slice()));
  return [...d].map((x) => x.toString(16).padStart(2, "0")).join("");
}

interface GoCase {
  label: string;
  name: string;
  linkname: string;
  type: number;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  devmajor: number;
  devminor: number;
  xattrs?: [string, string][];
  sha256?: string;
  length?: number;
  error?: string;
}

Deno.test("encodeHeader writes the bytes Go 1.19 WriteHeader writes, for 97 header shapes", async () => {
  const doc = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/tar/go_writer_cases.json", import.meta.url)),
  ) as { go: string; cases: GoCase[] };
  assert.match(doc.go, /^go1\.19/);
  assert.ok(doc.cases.length >= 90);
  for (const c of doc.cases) {
    const h: TarHeader = {
      name: b64(c.name),
      linkname: b64(c.linkname),
      type: c.type,
      mode: c.mode,
      uid: c.uid,
      gid: c.gid,
      uname: c.uname,
      gname: c.gname,
      size: c.size,
      mtimeSec: c.mtimeSec,
      mtimeNsec: c.mtimeNsec,
      devmajor: c.devmajor,
      devminor: c.devminor,
      xattrs: c.xattrs ? new Map(c.xattrs.map(([k, v]) => [k, b64(v)])) : undefined,
    };
    if (c.error) {
      assert.throws(() => encodeHeader(h), TarEncodeError, `${c.label}: Go says ${c.error}`);
      continue;
    }
    const got = encodeHeader(h);
    assert.equal(got.length, c.length, c.label);
    assert.equal(await sha256(got), c.sha256, c.label);
  }
});

Deno.test("a short entry is one USTAR block with Go's field encodings", () => {
  const b = encodeHeader(makeHeader({
    name: "etc/passwd",
    mode: 0o100644,
    uid: 1000,
    gid: 42,
    uname: "user",
    gname: "grp",
    size: 1234,
    mtimeSec: 1700000000,
  }));
  assert.equal(b.length, 512);
  assert.equal(field(b, 0, 11), "etc/passwd\0");
  assert.equal(field(b, 100, 8), "0100644\0");
  assert.equal(field(b, 108, 8), "0001750\0");
  assert.equal(field(b, 116, 8), "0000052\0");
  assert.equal(field(b, 124, 12), "00000002322\0");
  assert.equal(field(b, 136, 12), (1700000000).toString(8) + "\0");
  assert.equal(field(b, 156, 1), "0");
  assert.equal(field(b, 257, 8), "ustar\u000000");
  assert.equal(field(b, 265, 5), "user\0");
  assert.equal(field(b, 329, 16), "0000000\u00000000000\0");
  let sum = 8 * 32;
  for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) sum += b[i];
  assert.equal(field(b, 148, 8), sum.toString(8).padStart(6, "0") + "\0 ");
});

Deno.test("names of exactly 100 bytes fill the field; longer ones split at a slash", () => {
  const exact = encodeHeader(makeHeader({ name: "n".repeat(100) }));
  assert.equal(exact.length, 512);
  assert.equal(field(exact, 0, 100), "n".repeat(100));
  assert.equal(exact[100], 0x30); // the mode field follows directly
  const split = encodeHeader(makeHeader({ name: "p".repeat(155) + "/" + "s".repeat(100) }));
  assert.equal(split.length, 512);
  assert.equal(field(split, 0, 100), "s".repeat(100));
  assert.equal(field(split, 345, 155), "p".repeat(155));
});

/** The PAX records of a header that needed one, as text. */
function paxRecords(blocks: Uint8Array): { name: string; records: string; main: Uint8Array } {
  assert.equal(blocks[156], TarType.PAX);
  const size = parseInt(field(blocks, 124, 11), 8);
  return {
    name: field(blocks, 0, 100).replace(/\0.*$/s, ""),
    records: dec.decode(blocks.subarray(512, 512 + size)),
    main: blocks.subarray(blocks.length - 512),
  };
}

Deno.test("uid/gid of 2^21 and more, 8 GiB sizes and pre-1970 times go to PAX records", () => {
  const blocks = encodeHeader(makeHeader({
    name: "dir/file",
    uid: 2100000,
    gid: 2097151,
    size: 2 ** 33,
    mtimeSec: -1,
  }));
  assert.equal(blocks.length, 1536);
  const { name, records, main } = paxRecords(blocks);
  assert.equal(name, "dir/PaxHeaders.0/file");
  assert.equal(records, "12 mtime=-1\n19 size=8589934592\n15 uid=2100000\n");
  assert.equal(field(main, 108, 8), "0000000\0"); // does not fit: written as 0
  assert.equal(field(main, 116, 8), "7777777\0");
  assert.equal(field(main, 124, 12), "00000000000\0");
});

Deno.test("non-ASCII and invalid UTF-8 names go raw into PAX path; the block keeps ASCII", () => {
  const raw = new Uint8Array([0x61, 0xff, 0x2f, 0xc3, 0xa9, 0x62]); // "a\xff/éb"
  const blocks = encodeHeader(makeHeader({ name: raw, size: 1 }));
  const size = parseInt(field(blocks, 124, 11), 8);
  const data = blocks.subarray(512, 512 + size);
  assert.deepEqual(data, concat([enc.encode("15 path="), raw, enc.encode("\n")]));
  assert.equal(field(blocks, 0, 20).replace(/\0.*$/s, ""), "a/PaxHeaders.0/b");
  const main = blocks.subarray(blocks.length - 512);
  assert.equal(field(main, 0, 4), "a/b\0");
});

Deno.test("xattrs become SCHILY.xattr records sorted by key bytes, values kept binary", () => {
  const cap = new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const blocks = encodeHeader(makeHeader({
    name: "usr/bin/ping",
    xattrs: new Map([["user.z", enc.encode("1")], ["security.capability", cap]]),
  }));
  const size = parseInt(field(blocks, 124, 11), 8);
  const data = blocks.subarray(512, 512 + size);
  const want = concat([
    enc.encode("57 SCHILY.xattr.security.capability="),
    cap,
    enc.encode("\n"),
    enc.encode("25 SCHILY.xattr.user.z=1\n"),
  ]);
  assert.deepEqual(data, want);
});

Deno.test("device numbers beyond octal fall back to GNU base-256", () => {
  const b = encodeHeader(makeHeader({ name: "dev/x", type: TarType.CHR, devmajor: 2 ** 21 }));
  assert.equal(b.length, 512);
  assert.equal(field(b, 257, 8), "ustar  \0");
  assert.deepEqual([...b.subarray(329, 337)], [0x80, 0, 0, 0, 0, 0x20, 0, 0]);
});

Deno.test("mtime is rounded to the nearest second like Go; atime is not written", () => {
  const at = (sec: number, nsec: number) =>
    parseInt(
      field(encodeHeader(makeHeader({ name: "t", mtimeSec: sec, mtimeNsec: nsec })), 136, 11),
      8,
    );
  assert.equal(at(100, 499_999_999), 100);
  assert.equal(at(100, 500_000_000), 101);
  const withAtime = encodeHeader(makeHeader({ name: "t", atimeSec: 5, atimeNsec: 1 }));
  assert.equal(withAtime.length, 512);
});

Deno.test("unencodable headers throw TarEncodeError naming the entry", () => {
  const bad: [Parameters<typeof makeHeader>[0] & { name: string }, RegExp][] = [
    [{ name: "file/" }, /trailing slash/],
    [{ name: "x", xattrs: new Map([["user.a=b", new Uint8Array(1)]]) }, /invalid PAX record/],
    [{ name: "x", uid: 2 ** 60 }, /not a safe integer/],
    [{ name: "x", mode: 1.5 }, /not a safe integer/],
    [{ name: "x", mtimeNsec: 1e9 }, /mtimeNsec/],
    [{ name: "x", type: TarType.PAX }, /written by the encoder/],
    [{ name: "x", size: -1 }, /negative size/],
    [{ name: "x", devmajor: 2 ** 22, uname: "u".repeat(33) }, /GNU cannot encode Uname/],
  ];
  for (const [fields, reason] of bad) {
    assert.throws(
      () => encodeHeader(makeHeader(fields)),
      (e) => e instanceof TarEncodeError && reason.test(e.message) && e.entry === fields.name,
      String(reason),
    );
  }
});

Deno.test("padding, isHeaderOnlyType and the end marker", () => {
  assert.deepEqual([0, 1, 511, 512, 513, 2 ** 33 + 1].map(padding), [0, 511, 1, 0, 511, 511]);
  assert.equal(END_OF_ARCHIVE.length, 1024);
  assert.ok(END_OF_ARCHIVE.every((b) => b === 0));
  assert.equal(ZERO_BLOCK.length, 512);
  assert.ok(ZERO_BLOCK.every((b) => b === 0));
  assert.deepEqual(
    ([TarType.REG, TarType.LINK, TarType.SYMLINK, TarType.CHR] as number[])
      .concat([TarType.BLK, TarType.DIR, TarType.FIFO, TarType.CONT]).map(isHeaderOnlyType),
    [false, true, true, true, true, true, true, false],
  );
});

Deno.test("encodeHeader leaves its input untouched", () => {
  const h = makeHeader({ name: "x".repeat(150), type: 0, mtimeNsec: 900_000_000 });
  const copy = structuredClone(h);
  encodeHeader(h);
  assert.deepEqual(h, copy);
});

// ---- the Go peer -----------------------------------------------------------

const peer = await Deno.stat(PEER).then((s) => s.isFile).catch(() => false);
if (!peer) console.log(`tar writer peer test skipped: ${PEER} is absent`);
else if (Deno.uid() !== 0) console.log("tar writer peer test skipped: it needs root");

Deno.test({
  name: "re-encoding every header of a storagepeer tar reproduces it byte for byte",
  ignore: !peer || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tar_writer_test" });
    try {
      await makeTree(dir);
      const tar = await run(PEER, ["tar", dir]);
      const parts: Uint8Array[] = [];
      const names: string[] = [];
      let size = 0;
      const parser = new TarParser({
        entry(h) {
          names.push(nameText(h.name));
          size = isHeaderOnlyType(h.type) ? 0 : h.size;
          parts.push(encodeHeader(h));
        },
        data(chunk) {
          parts.push(chunk.slice());
        },
        end() {
          parts.push(ZERO_BLOCK.subarray(0, padding(size)));
        },
      });
      parser.push(tar);
      parser.finish();
      parts.push(END_OF_ARCHIVE);
      const again = concat(parts);
      // The tree's awkward shapes must all be there for the comparison to mean much.
      assert.ok(names.length >= 45, `only ${names.length} entries`);
      assert.ok(names.includes("bigid") && names.includes("cap") && names.includes("fifo"));
      assert.ok(names.some((n) => n.length > 300));
      assert.equal(again.length, tar.length);
      const diff = again.findIndex((b, i) => b !== tar[i]);
      assert.equal(diff, -1, `first differing byte at ${diff}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
