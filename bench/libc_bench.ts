/**
 * Cost of the per-file libc wrappers against the bare FFI call they make.
 * Each group pairs the wrapper from `ffi/libc.ts` with a baseline that calls
 * the same libc symbol directly (preencoded path, preallocated buffer), so
 * the gap is what the wrapper adds: argument conversion, C-string encoding,
 * result decoding and allocation.
 *
 *   deno bench --allow-all bench/libc_bench.ts
 *
 * The fixture (a small file with two user xattrs, an empty file with a
 * non-ASCII name and a directory of 1,000 empty files) lives in a temp dir
 * removed when the bench exits.
 *
 * @module
 */

import { join } from "node:path";
import { AT, O, systemLibc } from "../ffi/libc.ts";

const libc = systemLibc();
const raw = Deno.dlopen("libc.so.6", {
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  llistxattr: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  getdents64: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  fchownat: { parameters: ["i32", "buffer", "u32", "u32", "i32"], result: "i32" },
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
}).symbols;

const dir = Deno.makeTempDirSync({ prefix: "strata-libc-bench-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

const file = join(dir, "small.txt");
Deno.writeTextFileSync(file, "a small file of a few dozen bytes, as in /etc\n");
libc.lsetxattr(file, "user.one", new TextEncoder().encode("1"));
libc.lsetxattr(file, "user.two", new TextEncoder().encode("two"));
const many = join(dir, "many");
Deno.mkdirSync(many);
for (let i = 0; i < 1000; i++) Deno.writeFileSync(join(many, `entry-${i}`), new Uint8Array(0));

const cstr = (s: string) => new TextEncoder().encode(s + "\0");
const fileC = cstr(file);
const nameC = cstr("user.two");
const emptyC = cstr("");
const statxBuf = new Uint8Array(256);
const listBuf = new Uint8Array(64 * 1024);
const LIST_LEN = BigInt(listBuf.length);
const readBuf = new Uint8Array(4096);
const READ_LEN = BigInt(readBuf.length);
const dentsBuf = new Uint8Array(64 * 1024);
const DENTS_LEN = BigInt(dentsBuf.length);
const times = new BigInt64Array([1n, 0n, 2n, 0n]);
const timesBytes = new Uint8Array(times.buffer);
const readFd = libc.openat(AT.FDCWD, file, O.RDONLY);
const dirFd = libc.openat(AT.FDCWD, many, O.RDONLY | O.DIRECTORY);
const bytePath = new TextEncoder().encode(file);
const nonAscii = join(dir, "fïlé");
Deno.writeFileSync(nonAscii, new Uint8Array(0));

Deno.bench("raw statx", { group: "statx", baseline: true }, () => {
  raw.statx(AT.FDCWD, fileC, AT.SYMLINK_NOFOLLOW, 0x7ff, statxBuf);
});
Deno.bench("fstatat (string path)", { group: "statx" }, () => {
  libc.fstatat(AT.FDCWD, file, AT.SYMLINK_NOFOLLOW);
});
Deno.bench("fstatat (byte path)", { group: "statx" }, () => {
  libc.fstatat(AT.FDCWD, bytePath, AT.SYMLINK_NOFOLLOW);
});
Deno.bench("fstatat (non-ASCII string path)", { group: "statx" }, () => {
  libc.fstatat(AT.FDCWD, nonAscii, AT.SYMLINK_NOFOLLOW);
});
Deno.bench("fstat (open fd)", { group: "statx" }, () => {
  libc.fstat(readFd);
});

Deno.bench("raw llistxattr", { group: "xattr", baseline: true }, () => {
  raw.llistxattr(fileC, listBuf, LIST_LEN);
});
Deno.bench("llistxattr (2 names)", { group: "xattr" }, () => {
  libc.llistxattr(file);
});
Deno.bench("llistxattr (no xattrs)", { group: "xattr" }, () => {
  libc.llistxattr(nonAscii);
});
Deno.bench("raw lgetxattr", { group: "xattr" }, () => {
  raw.lgetxattr(fileC, nameC, listBuf, LIST_LEN);
});
Deno.bench("lgetxattr", { group: "xattr" }, () => {
  libc.lgetxattr(file, "user.two");
});
Deno.bench("lgetxattr (absent)", { group: "xattr" }, () => {
  libc.lgetxattr(file, "security.capability");
});

Deno.bench("raw openat + close", { group: "open", baseline: true }, () => {
  raw.close(raw.openat(AT.FDCWD, fileC, O.RDONLY | O.CLOEXEC, 0));
});
Deno.bench("openat + close", { group: "open" }, () => {
  libc.close(libc.openat(AT.FDCWD, file, O.RDONLY));
});

Deno.bench("raw read (lseek + read)", { group: "read", baseline: true }, () => {
  raw.lseek(readFd, 0n, 0);
  raw.read(readFd, readBuf, READ_LEN);
});
Deno.bench("read (small file, after a raw lseek)", { group: "read" }, () => {
  raw.lseek(readFd, 0n, 0);
  libc.read(readFd, readBuf);
});

Deno.bench("raw getdents64 (1,000 entries)", { group: "readdir", baseline: true }, () => {
  raw.lseek(dirFd, 0n, 0);
  while (raw.getdents64(dirFd, dentsBuf, DENTS_LEN) > 0n);
});
Deno.bench("readdir (1,000 entries)", { group: "readdir" }, () => {
  raw.lseek(dirFd, 0n, 0);
  libc.readdir(dirFd);
});

Deno.bench("raw fchownat + utimensat", { group: "meta", baseline: true }, () => {
  raw.fchownat(AT.FDCWD, fileC, 0, 0, AT.SYMLINK_NOFOLLOW);
  raw.utimensat(AT.FDCWD, fileC, timesBytes, AT.SYMLINK_NOFOLLOW);
});
Deno.bench("fchownat + utimensat", { group: "meta" }, () => {
  libc.fchownat(AT.FDCWD, file, 0, 0, AT.SYMLINK_NOFOLLOW);
  libc.utimensat(AT.FDCWD, file, 1, 0, 2, 0, AT.SYMLINK_NOFOLLOW);
});
Deno.bench("openat + read + close", { group: "read" }, () => {
  const fd = libc.openat(AT.FDCWD, file, O.RDONLY);
  libc.read(fd, readBuf);
  libc.close(fd);
});

const writeFd = libc.openat(AT.FDCWD, file, O.WRONLY);
Deno.bench(
  "raw fchownat + utimensat (fd, AT_EMPTY_PATH)",
  { group: "fd meta", baseline: true },
  () => {
    raw.fchownat(writeFd, emptyC, 0, 0, AT.EMPTY_PATH);
    raw.utimensat(writeFd, emptyC, timesBytes, AT.EMPTY_PATH);
  },
);
Deno.bench("fchownat + utimensat (fd, AT_EMPTY_PATH)", { group: "fd meta" }, () => {
  libc.fchownat(writeFd, "", 0, 0, AT.EMPTY_PATH);
  libc.utimensat(writeFd, "", 1, 0, 2, 0, AT.EMPTY_PATH);
});
Deno.bench("fchown + futimens (fd)", { group: "fd meta" }, () => {
  libc.fchown!(writeFd, 0, 0);
  libc.futimens!(writeFd, 1, 0, 2, 0);
});
