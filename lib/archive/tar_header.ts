/**
 * The decoded form of one tar entry's header(s): what the tar reader yields and
 * the tar writer takes. Names, link targets and xattr values are bytes, so
 * non-UTF-8 names and binary values round-trip.
 *
 * @module
 */

/**
 * Tar typeflag bytes.
 *
 * @example
 * ```ts
 * import { makeHeader, TarType } from "../../mod.ts";
 * const dir = makeHeader({ name: "etc/", type: TarType.DIR, mode: 0o755 });
 * console.log(dir.type === TarType.DIR); // true
 * ```
 */
export const TarType = {
  /** Regular file (`'0'`; the legacy `'\0'` is normalised to this on read). */
  REG: 0x30,
  /** Hard link (`'1'`). */
  LINK: 0x31,
  /** Symbolic link (`'2'`). */
  SYMLINK: 0x32,
  /** Character device (`'3'`). */
  CHR: 0x33,
  /** Block device (`'4'`). */
  BLK: 0x34,
  /** Directory (`'5'`). */
  DIR: 0x35,
  /** FIFO (`'6'`). */
  FIFO: 0x36,
  /** Contiguous file (`'7'`), treated as regular. */
  CONT: 0x37,
  /** PAX extended header for the next entry (`'x'`). */
  PAX: 0x78,
  /** PAX global header (`'g'`). */
  PAX_GLOBAL: 0x67,
  /** GNU long name (`'L'`). */
  GNU_LONGNAME: 0x4c,
  /** GNU long link name (`'K'`). */
  GNU_LONGLINK: 0x4b,
  /** GNU sparse file (`'S'`): not supported. */
  GNU_SPARSE: 0x53,
} as const;

/**
 * One entry's metadata.
 *
 * @example
 * ```ts
 * import { encodeHeader, makeHeader, type TarHeader } from "../../mod.ts";
 * const h: TarHeader = makeHeader({ name: "hello.txt", mode: 0o644, size: 6 });
 * console.log(encodeHeader(h).length % 512); // 0: whole 512-byte blocks
 * ```
 */
export interface TarHeader {
  /** Entry name as bytes (PAX `path` / GNU `L` / ustar prefix + name already merged). */
  name: Uint8Array;
  /** Link target as bytes (symlinks and hard links), else empty. */
  linkname: Uint8Array;
  /** A {@linkcode TarType} byte. */
  type: number;
  /**
   * The header's mode field. Go's writer puts the POSIX file-type bits in it
   * (a 0755 directory is written as 040755); readers must mask with 0o7777
   * for permissions.
   */
  mode: number;
  /** Owner user id. */
  uid: number;
  /** Owner group id. */
  gid: number;
  /** User name ("" when none). */
  uname: string;
  /** Group name ("" when none). */
  gname: string;
  /** Body size in bytes (as the header says; only regular files carry a body). */
  size: number;
  /** Modification time, seconds since the epoch (may be negative). */
  mtimeSec: number;
  /** Nanoseconds of the modification time (only PAX carries them). */
  mtimeNsec: number;
  /** Access time when the archive carries one (PAX `atime`), else undefined. */
  atimeSec?: number;
  /** Nanoseconds of the access time. */
  atimeNsec?: number;
  /** Device major number (devices only). */
  devmajor: number;
  /** Device minor number (devices only). */
  devminor: number;
  /** Extended attributes (PAX `SCHILY.xattr.<name>`), in the order read / to write. */
  xattrs?: Map<string, Uint8Array>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * A header with defaults, for building entries by hand.
 *
 * @example
 * ```ts
 * import { makeHeader, TarType } from "./tar_header.ts";
 * const h = makeHeader({ name: "etc/", type: TarType.DIR, mode: 0o40755 });
 * console.log(h.size); // 0
 * ```
 */
export function makeHeader(
  fields: Partial<Omit<TarHeader, "name" | "linkname">> & {
    name: string | Uint8Array;
    linkname?: string | Uint8Array;
  },
): TarHeader {
  const { name, linkname, ...rest } = fields;
  return {
    type: TarType.REG,
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    devmajor: 0,
    devminor: 0,
    ...rest,
    name: typeof name === "string" ? enc.encode(name) : name,
    linkname: linkname === undefined
      ? new Uint8Array(0)
      : typeof linkname === "string"
      ? enc.encode(linkname)
      : linkname,
  };
}

/**
 * Name bytes as text for messages (invalid UTF-8 shown with U+FFFD).
 *
 * @example
 * ```ts
 * import { nameText } from "./tar_header.ts";
 * console.log(nameText(new TextEncoder().encode("a/b"))); // a/b
 * ```
 */
export function nameText(bytes: Uint8Array): string {
  return dec.decode(bytes);
}
