/**
 * Fixtures for the extraction tests: tar archives built from header lists,
 * streams cut into chunks, snapshots of directory trees (to prove that
 * nothing outside the destination changed), and a sandbox with a victim
 * tree next to the destination.
 *
 * @module
 */

import { concatBytes } from "../../lib/archive/bytes.ts";
import { join } from "node:path";
import { encodeHeader, END_OF_ARCHIVE, padding } from "../../lib/archive/tar_writer.ts";
import { makeHeader, type TarHeader, TarType } from "../../lib/archive/tar_header.ts";

export { TarType };

const enc = new TextEncoder();

/** One tar entry for {@linkcode tarOf}: header fields plus an optional body. */
export type EntrySpec = Parameters<typeof makeHeader>[0] & {
  body?: string | Uint8Array;
  /** PAX records to put in an `x` header before the entry (e.g. atime). */
  pax?: Record<string, string>;
};

/** A regular file entry. */
export function file(name: string, body: string | Uint8Array = "", mode = 0o644): EntrySpec {
  return { name, body, mode, type: TarType.REG };
}

/** A directory entry. */
export function dir(name: string, mode = 0o755): EntrySpec {
  return { name, mode, type: TarType.DIR };
}

/** A symlink entry `name -> target`. */
export function symlink(target: string, name: string): EntrySpec {
  return { name, linkname: target, mode: 0o777, type: TarType.SYMLINK };
}

/** A hard link entry `name` to `target`. */
export function link(target: string, name: string, mode = 0o644): EntrySpec {
  return { name, linkname: target, mode, type: TarType.LINK };
}

/** Recompute the checksum of the header block at `block[0..512)` (after editing it). */
export function checksum(block: Uint8Array): void {
  for (let i = 148; i < 156; i++) block[i] = 0x20;
  let sum = 0;
  for (const b of block) sum += b;
  const text = sum.toString(8).padStart(6, "0");
  for (let i = 0; i < 6; i++) block[148 + i] = text.charCodeAt(i);
  block[154] = 0;
  block[155] = 0x20;
}

/** A PAX extended header (typeflag `x`) with the given records, padded. */
export function paxBlock(records: Record<string, string>): Uint8Array {
  let body = "";
  for (const [k, v] of Object.entries(records)) {
    const rest = ` ${k}=${v}\n`;
    let n = rest.length + 1;
    while (String(n).length + rest.length !== n) n = String(n).length + rest.length;
    body += `${n}${rest}`;
  }
  const data = enc.encode(body);
  const hdr = encodeHeader(makeHeader({ name: "PaxHeaders/entry", size: data.length }));
  const block = hdr.slice(hdr.length - 512);
  block[156] = TarType.PAX;
  checksum(block);
  return concat([block, data, new Uint8Array(padding(data.length))]);
}

/** Concatenate byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  return concatBytes(...parts);
}

/** Encode one entry (its PAX block if any, header, body, padding). */
export function entryBytes(spec: EntrySpec): Uint8Array {
  const { body, pax, ...fields } = spec;
  const data = typeof body === "string" ? enc.encode(body) : body ?? new Uint8Array(0);
  const h: TarHeader = makeHeader({ ...fields, size: fields.size ?? data.length });
  const parts = [encodeHeader(h), data, new Uint8Array(padding(data.length))];
  if (pax) parts.unshift(paxBlock(pax));
  return concat(parts);
}

/** A whole archive from entry specs, with the end-of-archive marker. */
export function tarOf(specs: EntrySpec[]): Uint8Array {
  return concat([...specs.map(entryBytes), END_OF_ARCHIVE]);
}

/**
 * A stream of `bytes` in chunks of at most `chunk` bytes (default: one
 * chunk); a byte stream (readable with a BYOB reader, as a file's is) unless
 * `byteStream` is false.
 */
export function streamOf(
  bytes: Uint8Array,
  chunk = bytes.length || 1,
  byteStream = true,
): ReadableStream<Uint8Array> {
  let off = 0;
  if (byteStream) {
    return new ReadableStream({
      type: "bytes",
      pull(c) {
        if (off >= bytes.length) {
          c.close();
          c.byobRequest?.respond(0);
          return;
        }
        const req = c.byobRequest;
        if (req?.view) {
          const view = new Uint8Array(req.view.buffer, req.view.byteOffset, req.view.byteLength);
          const n = Math.min(view.length, chunk, bytes.length - off);
          view.set(bytes.subarray(off, off + n));
          off += n;
          req.respond(n);
        } else {
          c.enqueue(bytes.slice(off, off + chunk));
          off += chunk;
        }
      },
    });
  }
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) {
        c.close();
        return;
      }
      c.enqueue(bytes.slice(off, off + chunk));
      off += chunk;
    },
  });
}

/** What a snapshot records of one entry. */
export interface EntryInfo {
  type: "file" | "dir" | "symlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  ino: number;
  nlink: number;
  content?: string;
  target?: string;
}

function hashBytes(b: Uint8Array): string {
  // FNV-1a 64 over the bytes, as hex: enough to see a change.
  let h = 0xcbf29ce484222325n;
  for (const x of b) h = BigInt.asUintN(64, (h ^ BigInt(x)) * 0x100000001b3n);
  return `${b.length}:${h.toString(16)}`;
}

/**
 * Every entry below `dir` (lstat, symlinks not followed), keyed by relative
 * path (`""` for `dir` itself), with file contents hashed.
 */
export function snapshot(dir: string): Map<string, EntryInfo> {
  const out = new Map<string, EntryInfo>();
  const visit = (rel: string) => {
    const p = rel ? join(dir, rel) : dir;
    const st = Deno.lstatSync(p);
    const info: EntryInfo = {
      type: st.isFile ? "file" : st.isDirectory ? "dir" : st.isSymlink ? "symlink" : "other",
      mode: st.mode ?? 0,
      uid: st.uid ?? 0,
      gid: st.gid ?? 0,
      size: st.size,
      mtime: st.mtime?.getTime() ?? 0,
      ino: st.ino ?? 0,
      nlink: st.nlink ?? 0,
    };
    if (st.isFile) info.content = hashBytes(Deno.readFileSync(p));
    if (st.isSymlink) info.target = Deno.readLinkSync(p);
    out.set(rel, info);
    if (st.isDirectory) {
      for (const e of Deno.readDirSync(p)) visit(rel ? `${rel}/${e.name}` : e.name);
    }
  };
  visit("");
  return out;
}

/** The differences between two snapshots, as readable lines (empty: equal). */
export function diffSnapshots(a: Map<string, EntryInfo>, b: Map<string, EntryInfo>): string[] {
  const lines: string[] = [];
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w) lines.push(`removed ${k}`);
    else if (JSON.stringify(v) !== JSON.stringify(w)) {
      lines.push(`changed ${k}: ${JSON.stringify(v)} -> ${JSON.stringify(w)}`);
    }
  }
  for (const k of b.keys()) if (!a.has(k)) lines.push(`added ${k}`);
  return lines;
}

/** The two name resolvers every extraction suite runs under. */
export const RESOLVERS = [
  { name: "openat2", forceFallback: false },
  { name: "walk", forceFallback: true },
] as const;

/**
 * A temp dir holding `dest/` (empty) and `victim/` (a small tree: `hello`,
 * a subdir, a symlink), the victim's snapshot, and a check that the temp
 * dir still holds exactly those two and the victim is unchanged.
 */
export interface Sandbox {
  base: string;
  dest: string;
  victim: string;
  /** The victim's `hello` content (unique per sandbox). */
  hello: string;
  /** Throws a readable error if anything outside `dest` changed. */
  assertOutsideUnchanged(): void;
  /** Remove everything (as a plain recursive remove would). */
  cleanup(): Promise<void>;
}

/** Make a {@linkcode Sandbox}; `prepareVictim` adds to the victim tree before its snapshot. */
export async function makeSandbox(prepareVictim?: (victim: string) => void): Promise<Sandbox> {
  const base = await Deno.makeTempDir({ prefix: "strata-extract-" });
  const dest = join(base, "dest");
  const victim = join(base, "victim");
  await Deno.mkdir(dest);
  await Deno.mkdir(victim);
  const hello = `hello ${crypto.randomUUID()}`;
  await Deno.writeTextFile(join(victim, "hello"), hello, { mode: 0o644 });
  await Deno.mkdir(join(victim, "sub"));
  await Deno.writeTextFile(join(victim, "sub", "file"), "sub file");
  await Deno.symlink("hello", join(victim, "link"));
  prepareVictim?.(victim);
  const before = snapshot(victim);
  const baseEntries = () => [...Deno.readDirSync(base)].map((e) => e.name).sort().join(",");
  const baseBefore = baseEntries();
  const hostEtc = ["/etc/unbroken", "/etc/localpasswd", "/victim", "/localetc"];
  return {
    base,
    dest,
    victim,
    hello,
    assertOutsideUnchanged() {
      const diff = diffSnapshots(before, snapshot(victim));
      if (diff.length > 0) throw new Error(`outside changed:\n${diff.join("\n")}`);
      const now = baseEntries();
      if (now !== baseBefore) throw new Error(`temp dir changed: ${baseBefore} -> ${now}`);
      for (const p of hostEtc) {
        let exists = true;
        try {
          Deno.lstatSync(p);
        } catch {
          exists = false;
        }
        if (exists) throw new Error(`host path ${p} exists`);
      }
    },
    async cleanup() {
      await Deno.remove(base, { recursive: true });
    },
  };
}

/** Every regular file below `dir` whose content equals `text` (none expected). */
export function filesWithContent(dir: string, text: string): string[] {
  const found: string[] = [];
  if (!exists(dir)) return found;
  for (const [rel, info] of snapshot(dir)) {
    if (info.type === "file" && info.content === hashBytes(enc.encode(text))) found.push(rel);
  }
  return found;
}

export { MKTREE, PEER } from "./peer.ts";

/** Whether `path` exists. */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
