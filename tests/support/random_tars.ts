/**
 * Random tars for the tar-split round trip: seeded, so a failure replays
 * from its seed. Each tar mixes directories, files of sizes around the block
 * size, symlinks and hard links, names that are long (PAX or GNU `L`),
 * non-ASCII or not UTF-8, headers in USTAR, PAX, GNU and v7 form, padding
 * that is not zero, and different endings (end blocks, record padding,
 * junk after the end, no end at all). {@linkcode tarSplitRoundTrip}
 * extracts one while recording its tar-split and reassembles it.
 *
 * @module
 */

import { join } from "node:path";
import { mulberry32 } from "./rng.ts";
import { encodeHeader, END_OF_ARCHIVE, padding } from "../../lib/archive/tar_writer.ts";
import { makeHeader, type TarHeader, TarType } from "../../lib/archive/tar_header.ts";
import { untar } from "../../lib/archive/untar.ts";
import { applyLayer } from "../../lib/archive/apply_layer.ts";
import { assembleTar, dirFileGetter, TarSplitRecorder } from "../../lib/archive/tar_split.ts";

const enc = new TextEncoder();

/** One random tar and what went into it. */
export interface RandomTar {
  seed: number;
  bytes: Uint8Array;
  entries: number;
}

const PIECES = ["a", "bin", "etc", "usr", "lib64", "ä", "日本", "x y", "<&>", "long"];

/**
 * A random tar from `seed` (about `maxEntries` entries at most).
 *
 * @example
 * ```ts
 * import { randomTar } from "./random_tars.ts";
 * console.log(randomTar(1).bytes.length % 512); // usually 0 (some endings add junk)
 * ```
 */
export function randomTar(seed: number, maxEntries = 24): RandomTar {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(a: readonly T[]): T => a[int(a.length)];
  const parts: Uint8Array[] = [];
  const dirs: string[] = [""];
  const files: string[] = [];
  const used = new Set<string>();

  const component = (): Uint8Array => {
    const r = rnd();
    if (r < 0.08) return new Uint8Array([0x62, 0xff, 0xfe, 0x61 + int(26)]); // not UTF-8
    let s = pick(PIECES) + int(1000);
    if (r < 0.2) s = s.padEnd(100 + int(60), "n"); // long: PAX path or GNU L
    if (r > 0.95) s += "\nnl";
    return enc.encode(s);
  };
  const freshName = (dir: string): Uint8Array => {
    for (;;) {
      const c = component();
      const name = concat(fromLatin1(dir === "" ? "" : dir + "/"), c);
      const key = latin1(name);
      if (!used.has(key)) {
        used.add(key);
        return name;
      }
    }
  };

  const emit = (h: TarHeader, body?: Uint8Array) => {
    let blocks: Uint8Array;
    const style = rnd();
    if (style < 0.12 && h.name.length > 100 && h.name.length < 900) {
      blocks = gnuLongName(h);
    } else {
      blocks = encodeHeader(h);
      if (blocks.length === 512 && style > 0.85) {
        blocks = style > 0.93 ? toV7(blocks) : toOldGnu(blocks);
      }
    }
    parts.push(blocks);
    if (body && body.length > 0) {
      parts.push(body);
      const pad = new Uint8Array(padding(body.length));
      if (rnd() < 0.1) pad.fill(0x5a); // non-zero padding: kept byte for byte
      parts.push(pad);
    }
  };

  const n = 1 + int(maxEntries);
  let entries = 0;
  for (let i = 0; i < n; i++) {
    const dir = pick(dirs);
    const r = rnd();
    const common = {
      mode: 0o600 | int(0o200),
      uid: int(3) * 1000,
      gid: int(3) * 1000,
      uname: pick(["", "root", "user"]),
      gname: pick(["", "root", "staff"]),
      mtimeSec: 1_000_000_000 + int(1e9),
      mtimeNsec: rnd() < 0.2 ? int(1e9) : 0,
    };
    if (r < 0.25) {
      const name = latin1(freshName(dir));
      dirs.push(name);
      // Go's writer refuses a trailing slash on names that need a long-name form.
      const nameBytes = fromLatin1(name + (rnd() < 0.5 && name.length < 90 ? "/" : ""));
      emit(makeHeader({ ...common, name: nameBytes, type: TarType.DIR, mode: 0o755 }));
    } else if (r < 0.8) {
      const size = pick([0, 1, 100, 511, 512, 513, 1024, 4097, int(70_000)]);
      const body = new Uint8Array(size);
      for (let k = 0; k < size; k += 97) body[k] = int(256);
      const name = freshName(dir);
      files.push(latin1(name));
      emit(makeHeader({ ...common, name, size }), body);
    } else if (r < 0.9) {
      emit(makeHeader({
        ...common,
        name: freshName(dir),
        type: TarType.SYMLINK,
        linkname: pick(["/etc/passwd", "../x", "a", "日本/ä", "t".repeat(120)]),
      }));
    } else if (files.length > 0) {
      emit(makeHeader({
        ...common,
        name: freshName(dir),
        type: TarType.LINK,
        linkname: fromLatin1(pick(files)),
      }));
    } else continue;
    entries++;
  }
  const ending = rnd();
  if (ending < 0.5) {
    parts.push(END_OF_ARCHIVE);
  } else if (ending < 0.75) {
    // GNU tar's 10 KiB records
    const len = parts.reduce((s, p) => s + p.length, 0) + END_OF_ARCHIVE.length;
    parts.push(END_OF_ARCHIVE, new Uint8Array((10240 - (len % 10240)) % 10240));
  } else if (ending < 0.9) {
    const junk = new Uint8Array(1 + int(3000));
    for (let k = 0; k < junk.length; k++) junk[k] = int(256);
    parts.push(END_OF_ARCHIVE, junk);
  } else if (ending < 0.95) {
    parts.push(END_OF_ARCHIVE.subarray(0, 512)); // one zero block, then EOF
  } // else: no end blocks at all
  const bytes = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { seed, bytes, entries };
}

/** A GNU `L` long-name entry, then the header with the name cut to 100 bytes (old GNU magic). */
function gnuLongName(h: TarHeader): Uint8Array {
  const nameBody = concat(h.name, new Uint8Array([0]));
  const l = encodeHeader(makeHeader({ name: "././@LongLink", size: nameBody.length }));
  l[156] = TarType.GNU_LONGNAME;
  toOldGnuInPlace(l);
  const main = toOldGnu(encodeHeader({ ...h, name: h.name.subarray(0, 100) }));
  return concat(
    concat(concat(l, nameBody), new Uint8Array(padding(nameBody.length))),
    main,
  );
}

/** A USTAR header block re-stamped with the old GNU magic (`"ustar  \0"`). */
function toOldGnu(block: Uint8Array): Uint8Array {
  const b = block.slice();
  if (b.length !== 512 || b[345] !== 0) return b; // GNU headers have no prefix
  return toOldGnuInPlace(b);
}

function toOldGnuInPlace(b: Uint8Array): Uint8Array {
  b.set(enc.encode("ustar  \0"), 257);
  return rechecksum(b);
}

/** A USTAR header block as a v7 one (no magic, owner names or prefix). */
function toV7(block: Uint8Array): Uint8Array {
  const b = block.slice();
  if (b[345] !== 0) return b; // a prefix cannot be expressed in v7
  b.fill(0, 257, 500);
  return rechecksum(b);
}

function rechecksum(b: Uint8Array): Uint8Array {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += b[i];
  b.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  return b;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return s;
}

function fromLatin1(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}

/** What one round trip found. */
export interface RoundTrip {
  /** Whether a record was kept (false: the tar is not describable, e.g. a path twice). */
  recorded: boolean;
  /** The reassembled tar equals the original, byte for byte (true when nothing was recorded). */
  same: boolean;
  /** First differing byte offset, or -1. */
  firstDiff: number;
}

/**
 * Extract `tar` into `dest` (literally, or as an overlay layer), recording
 * its tar-split, then reassemble it from the record and the extracted files.
 *
 * @example
 * ```ts
 * import { randomTar, tarSplitRoundTrip } from "./random_tars.ts";
 * const r = await tarSplitRoundTrip(randomTar(7).bytes, await Deno.makeTempDir() + "/x", "untar");
 * console.log(r.same);
 * ```
 */
export async function tarSplitRoundTrip(
  tar: Uint8Array,
  dest: string,
  mode: "untar" | "overlay",
): Promise<RoundTrip> {
  const parts: Uint8Array[] = [];
  const rec = new TarSplitRecorder((b) => parts.push(b), {
    whiteoutsConverted: mode === "overlay",
  });
  const stream = new Blob([tar as Uint8Array<ArrayBuffer>]).stream();
  if (mode === "untar") await untar(stream, dest, { tarSplit: rec });
  else await applyLayer(stream, dest, { tarSplit: rec, whiteoutFormat: "overlay" });
  if (!rec.usable) return { recorded: false, same: true, firstDiff: -1 };
  const record = new Blob(parts as Uint8Array<ArrayBuffer>[]).stream();
  const out = new Uint8Array(
    await new Response(assembleTar(record, dirFileGetter(dest), { gzip: false })).arrayBuffer(),
  );
  let firstDiff = -1;
  const n = Math.min(out.length, tar.length);
  for (let i = 0; i < n; i++) {
    if (out[i] !== tar[i]) {
      firstDiff = i;
      break;
    }
  }
  if (firstDiff < 0 && out.length !== tar.length) firstDiff = n;
  return { recorded: true, same: firstDiff < 0, firstDiff };
}

/**
 * A random tree on disk from `seed` (files, dirs, symlinks, hard links), for
 * tars made by GNU tar.
 *
 * @example
 * ```ts
 * import { randomTree } from "./random_tars.ts";
 * await randomTree(3, await Deno.makeTempDir() + "/t");
 * ```
 */
export async function randomTree(seed: number, dir: string): Promise<void> {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  await Deno.mkdir(dir, { recursive: true });
  const dirs = [dir];
  const files: string[] = [];
  const n = 5 + int(30);
  for (let i = 0; i < n; i++) {
    const parent = dirs[int(dirs.length)];
    const name = join(
      parent,
      (PIECES[int(PIECES.length)] + i).padEnd(rnd() < 0.15 ? 110 : 1, "q"),
    );
    const r = rnd();
    if (r < 0.2) {
      await Deno.mkdir(name);
      dirs.push(name);
    } else if (r < 0.85) {
      const size = [0, 1, 511, 512, 513, 9000, int(100_000)][int(7)];
      await Deno.writeFile(name, new Uint8Array(size).map((_, k) => (k * 31 + i) & 0xff));
      files.push(name);
    } else if (r < 0.93 || files.length === 0) {
      await Deno.symlink(rnd() < 0.5 ? "/etc/passwd" : "rel/target", name);
    } else {
      await Deno.link(files[int(files.length)], name);
    }
  }
}
