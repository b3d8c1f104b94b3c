/**
 * Tar codec throughput: encoding 30,000 headers of rootfs-like shapes, and
 * parsing a 100 MiB in-memory tar pushed in 64 KiB chunks.
 *
 * @module
 */

import { makeHeader, type TarHeader, TarType } from "../lib/archive/tar_header.ts";
import { TarParser } from "../lib/archive/tar_reader.ts";
import { encodeHeader, END_OF_ARCHIVE, padding } from "../lib/archive/tar_writer.ts";

const enc = new TextEncoder();

/** Rootfs-like headers: mostly short USTAR names, some long, unicode, xattrs, big ids. */
function headers(count: number): TarHeader[] {
  const out: TarHeader[] = [];
  for (let i = 0; i < count; i++) {
    const depth = 1 + (i % 6);
    const parts = [];
    for (let d = 0; d < depth; d++) parts.push(`dir${(i >> d) % 50}`);
    const kind = i % 40;
    const name = kind === 0
      ? parts.join("/") + "/" + "long-name-".repeat(12) + i
      : kind === 1
      ? parts.join("/") + `/fïlé-${i}`
      : parts.join("/") + `/file-${i}.txt`;
    out.push(makeHeader({
      name,
      type: kind === 2 ? TarType.SYMLINK : TarType.REG,
      linkname: kind === 2 ? "../target" : "",
      mode: 0o100644,
      uid: kind === 3 ? 2100000 : 0,
      uname: "root",
      gname: "root",
      size: kind === 2 ? 0 : (i * 7919) % 20000,
      mtimeSec: 1700000000 + i,
      xattrs: kind === 4 ? new Map([["user.k", enc.encode("value")]]) : undefined,
    }));
  }
  return out;
}

const HEADERS = headers(30_000);

Deno.bench("encodeHeader × 30,000 rootfs-like headers", () => {
  for (const h of HEADERS) encodeHeader(h);
});

/** An in-memory tar of about `mib` MiB: files of 0–64 KiB plus a few of 4 MiB. */
function bigTar(mib: number): Uint8Array {
  const target = mib * 1024 * 1024;
  const out = new Uint8Array(target + 8 * 1024 * 1024);
  let at = 0;
  for (let i = 0; at < target - 5 * 1024 * 1024; i++) {
    const size = i % 100 === 0 ? 4 * 1024 * 1024 : (i * 7919) % 65536;
    const h = encodeHeader(makeHeader({ name: `d${i % 97}/f${i}`, size, mtimeSec: 1 }));
    out.set(h, at);
    at += h.length;
    out.fill(i & 0xff, at, at + size);
    at += size + padding(size);
  }
  out.set(END_OF_ARCHIVE, at);
  return out.subarray(0, at + END_OF_ARCHIVE.length);
}

const TAR = bigTar(100);
const CHUNK = 64 * 1024;

Deno.bench(`TarParser: ${(TAR.length / 2 ** 20).toFixed(0)} MiB tar in 64 KiB chunks`, () => {
  let bytes = 0;
  const parser = new TarParser({
    entry() {},
    data(chunk) {
      bytes += chunk.length;
    },
    end() {},
  });
  for (let i = 0; i < TAR.length; i += CHUNK) parser.push(TAR.subarray(i, i + CHUNK));
  parser.finish();
  if (bytes === 0) throw new Error("no data parsed");
});
