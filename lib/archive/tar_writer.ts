/**
 * Tar header encoding that reproduces, byte for byte, what Go 1.19's
 * `archive/tar` `Writer.WriteHeader` emits when the header's `Format` is left
 * unspecified (as containers/storage 1.43 calls it): USTAR when every field
 * fits, else a PAX extended header (`x`) before a USTAR-shaped block, and the
 * GNU format only when PAX cannot express a field (a mode or device number
 * that does not fit octal). No I/O: the caller writes the returned blocks, the
 * body, {@linkcode padding} zero bytes and finally {@linkcode END_OF_ARCHIVE}.
 *
 * @module
 */

import { nameText, type TarHeader, TarType } from "./tar_header.ts";

/** Size of one tar block. */
const BLOCK = 512;

// Field offsets and lengths of a header block (V7 part, then USTAR/GNU part).
const NAME = 0, NAME_LEN = 100;
const MODE = 100, UID = 108, GID = 116, NUM8 = 8;
const SIZE = 124, MTIME = 136, NUM12 = 12;
const CHKSUM = 148, TYPEFLAG = 156;
const LINKNAME = 157, LINKNAME_LEN = 100;
const MAGIC = 257; // magic (6 bytes) then version (2 bytes)
const UNAME = 265, GNAME = 297, OWNER_LEN = 32;
const DEVMAJOR = 329, DEVMINOR = 337;
const PREFIX = 345, PREFIX_LEN = 155;

/** Largest body Go accepts for a PAX or GNU long-name pseudo file (1 MiB). */
const MAX_SPECIAL_FILE = 1 << 20;

/** Go's zero `time.Time` (year 1) in Unix seconds: written as mtime 0. */
const GO_ZERO_TIME_UNIX = -62135596800;

// The formats a header may take, as a bit set (like Go's Format).
const F_USTAR = 1, F_PAX = 2, F_GNU = 4;

const SLASH = 0x2f;
const encoder = new TextEncoder();

/**
 * 512 zero bytes, for padding a body: write
 * `ZERO_BLOCK.subarray(0, padding(size))` after it. Never modify it.
 *
 * @example
 * ```ts
 * import { padding, ZERO_BLOCK } from "./tar_writer.ts";
 * const pad = ZERO_BLOCK.subarray(0, padding(5)); // 507 zero bytes
 * console.log(pad.length); // 507
 * ```
 */
export const ZERO_BLOCK: Uint8Array = new Uint8Array(BLOCK);

/**
 * The end-of-archive marker: two zero blocks (1024 bytes), what Go's
 * `Writer.Close` writes. Never modify it.
 *
 * @example
 * ```ts
 * import { END_OF_ARCHIVE } from "./tar_writer.ts";
 * console.log(END_OF_ARCHIVE.length); // 1024
 * ```
 */
export const END_OF_ARCHIVE: Uint8Array = new Uint8Array(2 * BLOCK);

/**
 * A header that no tar format can carry (Go's "archive/tar: cannot encode
 * header" errors), e.g. a regular file named with a trailing slash or a
 * PAX record that would contain a NUL.
 *
 * @example
 * ```ts
 * import { encodeHeader, TarEncodeError } from "./tar_writer.ts";
 * import { makeHeader } from "./tar_header.ts";
 * try {
 *   encodeHeader(makeHeader({ name: "file/" }));
 * } catch (e) {
 *   console.log(e instanceof TarEncodeError); // true
 * }
 * ```
 */
export class TarEncodeError extends Error {
  /** The entry's name as text. */
  readonly entry: string;
  /** Says which field could not be encoded for which entry. */
  constructor(entry: string, reason: string) {
    super(`cannot encode tar header for "${entry}": ${reason}`);
    this.name = "TarEncodeError";
    this.entry = entry;
  }
}

/**
 * Zero bytes that follow a body of `size` bytes so the next header starts on
 * a 512-byte boundary (0 to 511).
 *
 * @example
 * ```ts
 * import { padding } from "./tar_writer.ts";
 * console.log(padding(0), padding(1), padding(512)); // 0 511 0
 * ```
 */
export function padding(size: number): number {
  const rest = size % BLOCK;
  return rest === 0 ? 0 : BLOCK - rest;
}

/**
 * Whether a typeflag never carries a body, whatever its size field says
 * (hard link, symlink, devices, directory, FIFO), as in Go's
 * `isHeaderOnlyType`.
 *
 * @example
 * ```ts
 * import { isHeaderOnlyType } from "./tar_writer.ts";
 * import { TarType } from "./tar_header.ts";
 * console.log(isHeaderOnlyType(TarType.DIR), isHeaderOnlyType(TarType.REG)); // true false
 * ```
 */
export function isHeaderOnlyType(type: number): boolean {
  return type >= TarType.LINK && type <= TarType.FIFO;
}

/**
 * Encode every block that precedes an entry's body, exactly as Go 1.19's
 * `tar.Writer.WriteHeader` writes them with the format unspecified: a PAX
 * extended header (its own block plus records) when needed, GNU long-name
 * blocks in the rare GNU case, then the entry's header block.
 *
 * Like Go, the modification time is rounded to the nearest second
 * (`mtimeNsec >= 5e8` rounds up; pass 0 to truncate) and the access time is
 * ignored; a legacy `'\0'` typeflag is written as `'5'` for names ending in
 * `/` and `'0'` otherwise. `xattrs` become `SCHILY.xattr.<name>` records,
 * values kept as raw bytes. The body that follows is `h.size` bytes for
 * types with a body (none for {@linkcode isHeaderOnlyType} types), then
 * {@linkcode padding}`(size)` zero bytes.
 *
 * @throws {TarEncodeError} when no format can carry the header.
 *
 * @example
 * ```ts
 * import { encodeHeader } from "./tar_writer.ts";
 * import { makeHeader, TarType } from "./tar_header.ts";
 * const blocks = encodeHeader(makeHeader({ name: "etc/", type: TarType.DIR, mode: 0o40755 }));
 * console.log(blocks.length); // 512 (plain USTAR)
 * const withXattr = encodeHeader(makeHeader({
 *   name: "bin/ping",
 *   mode: 0o100755,
 *   size: 3,
 *   xattrs: new Map([["security.capability", new Uint8Array([1, 0, 0, 2])]]),
 * }));
 * console.log(withXattr.length); // 1536 (PAX header, its records, the entry)
 * ```
 */
export function encodeHeader(h: TarHeader): Uint8Array {
  const hdr = normalise(h);
  const plan = chooseFormat(hdr);
  if (plan.format & F_USTAR) return encodeUstar(hdr);
  if (plan.format & F_PAX) return encodePax(hdr, plan.records);
  if (plan.format & F_GNU) return encodeGnu(hdr);
  throw new TarEncodeError(nameText(hdr.name), plan.why.join("; and ") || "no format fits");
}

/** The header as Go's WriteHeader sees it after its own adjustments. */
interface WriteHeader {
  name: Uint8Array;
  linkname: Uint8Array;
  type: number;
  mode: number;
  uid: number;
  gid: number;
  uname: Uint8Array;
  gname: Uint8Array;
  size: number;
  /** Whole seconds after rounding; null for Go's zero time. */
  mtime: number | null;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Uint8Array> | undefined;
}

function normalise(h: TarHeader): WriteHeader {
  const isSafe = Number.isSafeInteger;
  if (
    !isSafe(h.mode) || !isSafe(h.uid) || !isSafe(h.gid) || !isSafe(h.size) ||
    !isSafe(h.mtimeSec) || !isSafe(h.devmajor) || !isSafe(h.devminor)
  ) {
    const fields = { ...h, name: undefined, linkname: undefined, xattrs: undefined };
    const bad = Object.entries(fields).find(([, v]) => typeof v === "number" && !isSafe(v));
    throw new TarEncodeError(nameText(h.name), `${bad?.[0]}=${bad?.[1]} is not a safe integer`);
  }
  const nsec = h.mtimeNsec;
  if (!Number.isInteger(nsec) || nsec < 0 || nsec >= 1e9) {
    throw new TarEncodeError(nameText(h.name), `mtimeNsec=${nsec} is not in [0, 1e9)`);
  }
  let type = h.type;
  if (type === 0) {
    const n = h.name;
    type = n.length > 0 && n[n.length - 1] === SLASH ? TarType.DIR : TarType.REG;
  }
  // Go rounds the time to the nearest second (halves up) when no format is forced.
  const sec = h.mtimeSec + (nsec >= 500_000_000 ? 1 : 0);
  return {
    name: h.name,
    linkname: h.linkname,
    type,
    mode: h.mode,
    uid: h.uid,
    gid: h.gid,
    uname: ownerBytes(h.uname),
    gname: ownerBytes(h.gname),
    size: h.size,
    mtime: sec === GO_ZERO_TIME_UNIX ? null : sec,
    devmajor: h.devmajor,
    devminor: h.devminor,
    xattrs: h.xattrs,
  };
}

/** User and group names repeat: their bytes are cached (never modified). */
const ownerCache = new Map<string, Uint8Array>();

function ownerBytes(s: string): Uint8Array {
  let b = ownerCache.get(s);
  if (b === undefined) {
    b = encoder.encode(s);
    if (ownerCache.size < 1024) ownerCache.set(s, b);
  }
  return b;
}

/** The formats that can carry a header, and the PAX records PAX would need. */
interface FormatPlan {
  format: number;
  records: Map<string, Uint8Array>;
  why: string[];
}

/** Go's `Header.allowedFormats` for a header without PAXRecords or a forced format. */
function chooseFormat(h: WriteHeader): FormatPlan {
  let format = F_USTAR | F_PAX | F_GNU;
  const records = new Map<string, Uint8Array>();
  const why: string[] = [];
  const entry = () => nameText(h.name);

  const verifyString = (s: Uint8Array, size: number, field: string, key: string) => {
    const tooLong = s.length > size;
    const longOkForGnu = key === "path" || key === "linkpath";
    if (hasNul(s) || (tooLong && !longOkForGnu)) {
      format &= ~F_GNU;
      why.push(`GNU cannot encode ${field}`);
    }
    if (!isAscii(s) || tooLong) {
      if (key !== "path" || splitUstarPath(s) === null) {
        format &= ~F_USTAR;
        why.push(`USTAR cannot encode ${field}`);
      }
      records.set(key, s);
    }
  };
  const verifyNumber = (n: number, size: number, field: string, key: string | null) => {
    if (!fitsBase256(size, n)) {
      format &= ~F_GNU;
      why.push(`GNU cannot encode ${field}=${n}`);
    }
    if (!fitsOctal(size, n)) {
      format &= ~F_USTAR;
      why.push(`USTAR cannot encode ${field}=${n}`);
      if (key === null) {
        format &= ~F_PAX;
        why.push(`PAX cannot encode ${field}=${n}`);
      } else {
        records.set(key, ascii(String(n)));
      }
    }
  };

  verifyString(h.name, NAME_LEN, "Name", "path");
  verifyString(h.linkname, LINKNAME_LEN, "Linkname", "linkpath");
  verifyString(h.uname, OWNER_LEN, "Uname", "uname");
  verifyString(h.gname, OWNER_LEN, "Gname", "gname");
  verifyNumber(h.mode, NUM8, "Mode", null);
  verifyNumber(h.uid, NUM8, "Uid", "uid");
  verifyNumber(h.gid, NUM8, "Gid", "gid");
  verifyNumber(h.size, NUM12, "Size", "size");
  verifyNumber(h.devmajor, NUM8, "Devmajor", null);
  verifyNumber(h.devminor, NUM8, "Devminor", null);
  if (h.mtime !== null && !fitsOctal(NUM12, h.mtime)) {
    // Every safe integer fits base-256 in 12 bytes, so GNU stays possible.
    format &= ~F_USTAR;
    why.push(`USTAR cannot encode ModTime=${h.mtime}`);
    records.set("mtime", ascii(String(h.mtime)));
  }

  switch (h.type) {
    case TarType.REG:
    case TarType.CHR:
    case TarType.BLK:
    case TarType.FIFO:
    case TarType.GNU_SPARSE:
      if (h.name.length > 0 && h.name[h.name.length - 1] === SLASH) {
        throw new TarEncodeError(entry(), "filename may not have trailing slash");
      }
      break;
    case TarType.PAX:
    case TarType.PAX_GLOBAL:
    case TarType.GNU_LONGNAME:
    case TarType.GNU_LONGLINK:
      throw new TarEncodeError(
        entry(),
        `typeflag '${String.fromCharCode(h.type)}' is written by the encoder itself`,
      );
  }
  if (!isHeaderOnlyType(h.type) && h.size < 0) {
    throw new TarEncodeError(entry(), "negative size on an entry with a body");
  }

  if (h.xattrs && h.xattrs.size > 0) {
    for (const [k, v] of h.xattrs) records.set(`SCHILY.xattr.${k}`, v);
    format &= F_PAX;
    why.push("only PAX supports Xattrs");
  }
  for (const [k, v] of records) {
    const bad = k === "" || k.includes("=") ||
      ((k === "path" || k === "linkpath" || k === "uname" || k === "gname")
        ? hasNul(v)
        : k.includes("\0"));
    if (bad) throw new TarEncodeError(entry(), `invalid PAX record ${JSON.stringify(k)}`);
  }
  return { format, records, why };
}

function encodeUstar(h: WriteHeader): Uint8Array {
  const out = new Uint8Array(BLOCK);
  const split = splitUstarPath(h.name);
  writeMainFields(out, 0, h, split ? split[1] : h.name, putOctal, false);
  if (split) putString(out, PREFIX, PREFIX_LEN, split[0]);
  finishBlock(out, 0, F_USTAR);
  return out;
}

function encodePax(h: WriteHeader, records: Map<string, Uint8Array>): Uint8Array {
  if (records.size === 0) {
    const out = new Uint8Array(BLOCK);
    writeMainFields(out, 0, h, h.name, putOctal, true);
    finishBlock(out, 0, F_PAX);
    return out;
  }
  const data = formatPaxRecords(records);
  if (data.length > MAX_SPECIAL_FILE) {
    throw new TarEncodeError(nameText(h.name), "PAX records exceed 1 MiB");
  }
  const bodyEnd = BLOCK + data.length;
  const mainAt = bodyEnd + padding(data.length);
  const out = new Uint8Array(mainAt + BLOCK);
  writeSpecialHeader(out, 0, paxHeaderName(h.name), data.length, TarType.PAX, F_PAX);
  out.set(data, BLOCK);
  writeMainFields(out, mainAt, h, h.name, putOctal, true);
  finishBlock(out, mainAt, F_PAX);
  return out;
}

const LONG_LINK_NAME = ascii("././@LongLink");

function encodeGnu(h: WriteHeader): Uint8Array {
  const longs: [number, Uint8Array][] = [];
  if (h.name.length > NAME_LEN) longs.push([TarType.GNU_LONGNAME, h.name]);
  if (h.linkname.length > LINKNAME_LEN) longs.push([TarType.GNU_LONGLINK, h.linkname]);
  let total = BLOCK;
  for (const [, s] of longs) total += BLOCK + s.length + 1 + padding(s.length + 1);
  const out = new Uint8Array(total);
  let at = 0;
  for (const [flag, s] of longs) {
    // The body is the name plus a terminating NUL (already zero in `out`).
    writeSpecialHeader(out, at, LONG_LINK_NAME, s.length + 1, flag, F_GNU);
    out.set(s, at + BLOCK);
    at += BLOCK + s.length + 1 + padding(s.length + 1);
  }
  writeMainFields(out, at, h, h.name, putNumeric, false);
  finishBlock(out, at, F_GNU);
  return out;
}

type NumberWriter = (b: Uint8Array, off: number, len: number, x: number) => void;

/** Go's `templateV7Plus`: the fields every format shares. */
function writeMainFields(
  b: Uint8Array,
  at: number,
  h: WriteHeader,
  name: Uint8Array,
  putNum: NumberWriter,
  asciiOnly: boolean,
): void {
  const str = asciiOnly ? putAsciiString : putString;
  b[at + TYPEFLAG] = h.type;
  str(b, at + NAME, NAME_LEN, name);
  str(b, at + LINKNAME, LINKNAME_LEN, h.linkname);
  putNum(b, at + MODE, NUM8, h.mode);
  putNum(b, at + UID, NUM8, h.uid);
  putNum(b, at + GID, NUM8, h.gid);
  putNum(b, at + SIZE, NUM12, h.size);
  putNum(b, at + MTIME, NUM12, h.mtime ?? 0);
  str(b, at + UNAME, OWNER_LEN, h.uname);
  str(b, at + GNAME, OWNER_LEN, h.gname);
  putNum(b, at + DEVMAJOR, NUM8, h.devmajor);
  putNum(b, at + DEVMINOR, NUM8, h.devminor);
}

/** Go's `writeRawFile` header: a minimal block for a PAX or GNU pseudo file. */
function writeSpecialHeader(
  b: Uint8Array,
  at: number,
  rawName: Uint8Array,
  size: number,
  flag: number,
  format: number,
): void {
  let name = toAscii(rawName);
  if (name.length > NAME_LEN) name = name.subarray(0, NAME_LEN);
  let end = name.length;
  while (end > 0 && name[end - 1] === SLASH) end--;
  b[at + TYPEFLAG] = flag;
  putString(b, at + NAME, NAME_LEN, name.subarray(0, end));
  putOctal(b, at + MODE, NUM8, 0);
  putOctal(b, at + UID, NUM8, 0);
  putOctal(b, at + GID, NUM8, 0);
  putOctal(b, at + SIZE, NUM12, size);
  putOctal(b, at + MTIME, NUM12, 0);
  finishBlock(b, at, format);
}

/** Magic, version and checksum (Go's `setFormat`). */
function finishBlock(b: Uint8Array, at: number, format: number): void {
  const magic = format === F_GNU ? MAGIC_GNU : MAGIC_USTAR;
  for (let i = 0; i < 8; i++) b[at + MAGIC + i] = magic[i];
  let sum = 8 * 0x20; // the checksum field itself counts as eight spaces
  for (let i = at; i < at + CHKSUM; i++) sum += b[i];
  for (let i = at + CHKSUM + 8; i < at + BLOCK; i++) sum += b[i];
  putOctal(b, at + CHKSUM, 7, sum);
  b[at + CHKSUM + 7] = 0x20;
}

/** `ustar\0` + `00`. */
const MAGIC_USTAR = ascii("ustar\u000000");
/** `ustar ` + ` \0`. */
const MAGIC_GNU = ascii("ustar  \u0000");

/**
 * Go's `formatString`: copy, NUL-terminate when room is left; when the value
 * was cut and the cut ends in `/`, the first of those trailing slashes
 * becomes a NUL.
 */
function putString(b: Uint8Array, off: number, len: number, s: Uint8Array): void {
  const n = s.length < len ? s.length : len;
  for (let i = 0; i < n; i++) b[off + i] = s[i];
  endString(b, off, len, s.length);
}

/** {@linkcode putString} of Go's `toASCII(s)`, without building it. */
function putAsciiString(b: Uint8Array, off: number, len: number, s: Uint8Array): void {
  let w = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === 0 || c >= 0x80) continue;
    if (w < len) b[off + w] = c;
    w++;
  }
  endString(b, off, len, w);
}

/** The NUL or trailing-slash fix after `written` bytes went into a `len`-byte field. */
function endString(b: Uint8Array, off: number, len: number, written: number): void {
  if (written < len) {
    b[off + written] = 0;
  } else if (written > len && b[off + len - 1] === SLASH) {
    let n = len;
    while (n > 0 && b[off + n - 1] === SLASH) n--;
    b[off + n] = 0;
  }
}

/** Go's `formatOctal`: zero-padded octal with a NUL, or 0 when it does not fit. */
function putOctal(b: Uint8Array, off: number, len: number, x: number): void {
  if (!fitsOctal(len, x)) x = 0;
  // Digits right-aligned in len-1 bytes, zero-filled, then the NUL (the
  // fits test guarantees they fit).
  b[off + len - 1] = 0;
  for (let i = off + len - 2; i >= off; i--) {
    b[i] = 0x30 + (x % 8);
    x = Math.floor(x / 8);
  }
}

/** Go's `formatNumeric`: octal if it fits, else base-256 (two's complement). */
function putNumeric(b: Uint8Array, off: number, len: number, x: number): void {
  if (fitsOctal(len, x)) return putOctal(b, off, len, x);
  if (!fitsBase256(len, x)) return putOctal(b, off, len, 0);
  for (let i = off + len - 1; i >= off; i--) {
    b[i] = ((x % 256) + 256) % 256;
    x = Math.floor(x / 256);
  }
  b[off] |= 0x80;
}

function fitsOctal(len: number, x: number): boolean {
  return x >= 0 && (len >= 22 || x < 2 ** ((len - 1) * 3));
}

function fitsBase256(len: number, x: number): boolean {
  const bits = (len - 1) * 8;
  return len >= 9 || (x >= -(2 ** bits) && x < 2 ** bits);
}

/** Go's `splitUSTARPath`: [prefix, suffix] or null. */
function splitUstarPath(name: Uint8Array): [Uint8Array, Uint8Array] | null {
  let length = name.length;
  if (length <= NAME_LEN || !isAscii(name)) return null;
  if (length > PREFIX_LEN + 1) length = PREFIX_LEN + 1;
  else if (name[length - 1] === SLASH) length--;
  let i = length - 1;
  while (i >= 0 && name[i] !== SLASH) i--;
  const suffixLen = name.length - i - 1;
  if (i <= 0 || suffixLen > NAME_LEN || suffixLen === 0 || i > PREFIX_LEN) return null;
  return [name.subarray(0, i), name.subarray(i + 1)];
}

/** Records sorted by key bytes, each `"<len> <key>=<value>\n"`. */
function formatPaxRecords(records: Map<string, Uint8Array>): Uint8Array {
  const entries: [Uint8Array, Uint8Array, number][] = [];
  let total = 0;
  for (const [key, value] of records) {
    const k = keyBytes(key);
    const base = k.length + value.length + 3; // ' ', '=', '\n'
    let size = base + decimalDigits(base);
    if (decimalDigits(size) !== decimalDigits(base)) size = base + decimalDigits(size);
    entries.push([k, value, size]);
    total += size;
  }
  if (entries.length > 1) entries.sort((x, y) => compareBytes(x[0], y[0]));
  const out = new Uint8Array(total);
  let at = 0;
  for (const [k, v, size] of entries) {
    const digits = decimalDigits(size);
    for (let i = digits - 1, x = size; i >= 0; i--, x = Math.floor(x / 10)) {
      out[at + i] = 0x30 + (x % 10);
    }
    at += digits;
    out[at++] = 0x20;
    out.set(k, at);
    at += k.length;
    out[at++] = 0x3d;
    out.set(v, at);
    at += v.length;
    out[at++] = 0x0a;
  }
  return out;
}

function decimalDigits(x: number): number {
  let n = 1;
  while (x >= 10) {
    x = Math.floor(x / 10);
    n++;
  }
  return n;
}

/** PAX keys repeat (`path`, `SCHILY.xattr.…`): their bytes are cached. */
const keyCache = new Map<string, Uint8Array>();

function keyBytes(key: string): Uint8Array {
  let b = keyCache.get(key);
  if (b === undefined) {
    b = encoder.encode(key);
    if (keyCache.size < 1024) keyCache.set(key, b);
  }
  return b;
}

const PAX_HEADERS_DIR = ascii("PaxHeaders.0");

/**
 * The PAX header's own name: `path.Join(dir, "PaxHeaders.0", base)` of the
 * entry name, as Go builds it (the join also cleans the path).
 */
function paxHeaderName(name: Uint8Array): Uint8Array {
  let i = name.length - 1;
  while (i >= 0 && name[i] !== SLASH) i--;
  // dir keeps its trailing slash, so "dir/" + "PaxHeaders.0" needs no separator.
  const dirLen = i + 1;
  const fileLen = name.length - dirLen;
  const joined = new Uint8Array(dirLen + PAX_HEADERS_DIR.length + (fileLen > 0 ? fileLen + 1 : 0));
  joined.set(name.subarray(0, dirLen), 0);
  joined.set(PAX_HEADERS_DIR, dirLen);
  if (fileLen > 0) {
    joined[dirLen + PAX_HEADERS_DIR.length] = SLASH;
    joined.set(name.subarray(dirLen), dirLen + PAX_HEADERS_DIR.length + 1);
  }
  return cleanPath(joined);
}

/** Go's `path.Clean` on bytes (the result is never longer than the input). */
function cleanPath(p: Uint8Array): Uint8Array {
  const n = p.length;
  if (n === 0) return ascii(".");
  const rooted = p[0] === SLASH;
  const out = new Uint8Array(n);
  let w = 0;
  let r = 0;
  let dotdot = 0; // w never backtracks below this
  if (rooted) {
    out[w++] = SLASH;
    r = 1;
    dotdot = 1;
  }
  while (r < n) {
    if (p[r] === SLASH) {
      r++;
    } else if (p[r] === 0x2e && (r + 1 === n || p[r + 1] === SLASH)) {
      r++;
    } else if (p[r] === 0x2e && p[r + 1] === 0x2e && (r + 2 === n || p[r + 2] === SLASH)) {
      r += 2;
      if (w > dotdot) {
        w--;
        while (w > dotdot && out[w] !== SLASH) w--;
      } else if (!rooted) {
        if (w > 0) out[w++] = SLASH;
        out[w++] = 0x2e;
        out[w++] = 0x2e;
        dotdot = w;
      }
    } else {
      if ((rooted && w !== 1) || (!rooted && w !== 0)) out[w++] = SLASH;
      while (r < n && p[r] !== SLASH) out[w++] = p[r++];
    }
  }
  if (w === 0) return ascii(".");
  return out.subarray(0, w);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

/** Go's `isASCII`: every byte in 1..0x7f (invalid UTF-8 counts as non-ASCII). */
function isAscii(s: Uint8Array): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === 0 || c >= 0x80) return false;
  }
  return true;
}

/** Go's `toASCII`: drop every byte outside 1..0x7f (whole multi-byte runes go). */
function toAscii(s: Uint8Array): Uint8Array {
  if (isAscii(s)) return s;
  const out = new Uint8Array(s.length);
  let w = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== 0 && c < 0x80) out[w++] = c;
  }
  return out.subarray(0, w);
}

function hasNul(s: Uint8Array): boolean {
  for (let i = 0; i < s.length; i++) {
    if (s[i] === 0) return true;
  }
  return false;
}

function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
