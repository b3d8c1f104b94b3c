import assert from "node:assert/strict";
import { AT, type Libc, O, S, systemLibc } from "../ffi/libc.ts";
import { tarDirectory } from "../lib/archive/tar_dir.ts";
import { TarSourceError, TarStream } from "../lib/archive/tar_appender.ts";
import { TarType } from "../lib/archive/tar_header.ts";
import { hostIdNames } from "../lib/archive/users.ts";
import { AUFS_DIFF_EXCLUDES } from "../lib/archive/whiteouts.ts";
import { readAll, readEntries, streamOf } from "./support/tar_entries.ts";

const libc = systemLibc();
const enc = new TextEncoder();
const fdCount = () => [...Deno.readDirSync("/proc/self/fd")].length;

async function tmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-tardir-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tarDirectory: byte order walk, no root entry, dirs with /, mode with type bits", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/b/sub`, { recursive: true });
    await Deno.writeTextFile(`${d}/b/sub/f`, "hello");
    await Deno.writeTextFile(`${d}/B`, "");
    await Deno.writeTextFile(`${d}/a.txt`, "x");
    await Deno.writeTextFile(`${d}/é`, "");
    await Deno.symlink("a.txt", `${d}/link`);
    Deno.chmodSync(`${d}/b`, 0o750);
    libc.utimensat(AT.FDCWD, `${d}/a.txt`, 0, 0, 1_600_000_000, 999_999_999, 0);
    const entries = await readEntries(tarDirectory(d));
    assert.deepEqual(entries.map((e) => e.name), [
      "B",
      "a.txt",
      "b/",
      "b/sub/",
      "b/sub/f",
      "link",
      "é",
    ]);
    const by = Object.fromEntries(entries.map((e) => [e.name, e]));
    assert.equal(by["b/"].header.mode, 0o40750);
    assert.equal(by["b/"].header.type, TarType.DIR);
    assert.equal(by["a.txt"].header.mode & S.IFMT, S.IFREG);
    assert.equal(by["a.txt"].header.mtimeSec, 1_600_000_000, "truncated, not rounded up");
    assert.equal(by["link"].header.type, TarType.SYMLINK);
    assert.equal(by["link"].linkname, "a.txt");
    assert.equal(by["link"].header.mode & S.IFMT, S.IFLNK);
    assert.equal(new TextDecoder().decode(by["b/sub/f"].body), "hello");
    assert.equal(by["a.txt"].header.uname, hostIdNames().userName(Deno.uid()!));
  });
});

Deno.test("tarDirectory: a missing directory gives an empty archive", async () => {
  const bytes = await readAll(tarDirectory("/nonexistent/strata-tar"));
  assert.deepEqual(bytes, new Uint8Array(1024));
});

Deno.test("tarDirectory: hard links point at the first path written, excluded paths never own the inode", async () => {
  await tmp(async (d) => {
    await Deno.writeTextFile(`${d}/.wh..wh.aufs`, "");
    await Deno.mkdir(`${d}/x`);
    await Deno.link(`${d}/.wh..wh.aufs`, `${d}/x/.wh.gone`);
    await Deno.link(`${d}/.wh..wh.aufs`, `${d}/x/.wh.other`);
    await Deno.writeTextFile(`${d}/data`, "payload");
    await Deno.link(`${d}/data`, `${d}/x/data2`);
    const entries = await readEntries(
      tarDirectory(d, { excludePatterns: [...AUFS_DIFF_EXCLUDES] }),
    );
    const by = Object.fromEntries(entries.map((e) => [e.name, e]));
    assert.equal(by[".wh..wh.aufs"], undefined);
    assert.equal(by["x/.wh.gone"].header.type, TarType.REG, "first whiteout is a file");
    assert.equal(by["x/.wh.other"].header.type, TarType.LINK);
    assert.equal(by["x/.wh.other"].linkname, "x/.wh.gone");
    assert.equal(by["data"].header.type, TarType.REG);
    assert.equal(by["x/data2"].header.type, TarType.LINK);
    assert.equal(by["x/data2"].linkname, "data");
    assert.equal(by["x/data2"].header.size, 0);
  });
});

Deno.test("tarDirectory: sockets are skipped, devices and FIFOs kept with their numbers", async () => {
  await tmp(async (d) => {
    const listener = Deno.listen({ transport: "unix", path: `${d}/sock` });
    try {
      libc.mknodat(AT.FDCWD, `${d}/tty`, S.IFCHR | 0o620, 4, 300);
      libc.mknodat(AT.FDCWD, `${d}/loop`, S.IFBLK | 0o660, 7, 0);
      libc.mknodat(AT.FDCWD, `${d}/fifo`, S.IFIFO | 0o644, 0, 0);
      const entries = await readEntries(tarDirectory(d));
      assert.deepEqual(entries.map((e) => e.name), ["fifo", "loop", "tty"]);
      assert.equal(entries[0].header.type, TarType.FIFO);
      assert.deepEqual([
        entries[1].header.type,
        entries[1].header.devmajor,
        entries[1].header.devminor,
      ], [
        TarType.BLK,
        7,
        0,
      ]);
      assert.deepEqual([entries[2].header.devmajor, entries[2].header.devminor], [4, 300]);
      const st = libc.fstatat(AT.FDCWD, `${d}/tty`, AT.SYMLINK_NOFOLLOW);
      assert.equal(entries[2].header.mode, st.mode);
      assert.equal(st.mode & S.IFMT, S.IFCHR);
    } finally {
      listener.close();
    }
  });
});

Deno.test("tarDirectory: security.capability and user.* xattrs are written, others not", async () => {
  await tmp(async (d) => {
    await Deno.writeTextFile(`${d}/f`, "x");
    await Deno.writeTextFile(`${d}/empty`, "");
    const cap = Uint8Array.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    libc.lsetxattr(`${d}/f`, "security.capability", cap);
    libc.lsetxattr(`${d}/f`, "user.b", enc.encode("2"));
    libc.lsetxattr(`${d}/f`, "user.a", enc.encode("1"));
    libc.lsetxattr(`${d}/f`, "trusted.t", enc.encode("no"));
    libc.lsetxattr(`${d}/empty`, "user.e", enc.encode("by path"));
    const entries = await readEntries(tarDirectory(d));
    const x = entries.find((e) => e.name === "f")!.header.xattrs!;
    assert.deepEqual([...x.keys()].sort(), ["security.capability", "user.a", "user.b"]);
    assert.deepEqual(x.get("security.capability"), cap);
    assert.deepEqual(
      entries.find((e) => e.name === "empty")!.header.xattrs?.get("user.e"),
      enc.encode("by path"),
    );
  });
});

Deno.test("tarDirectory: id maps apply host→container, except to .wh.* names", async () => {
  await tmp(async (d) => {
    await Deno.writeTextFile(`${d}/f`, "");
    await Deno.writeTextFile(`${d}/.wh.gone`, "");
    Deno.chownSync(`${d}/f`, 100005, 100007);
    Deno.chownSync(`${d}/.wh.gone`, 100005, 100007);
    const maps = [{ containerID: 0, hostID: 100000, size: 65536 }];
    const entries = await readEntries(tarDirectory(d, { uidMaps: maps, gidMaps: maps }));
    const by = Object.fromEntries(entries.map((e) => [e.name, e.header]));
    assert.deepEqual([by["f"].uid, by["f"].gid], [5, 7]);
    assert.deepEqual([by[".wh.gone"].uid, by[".wh.gone"].gid], [100005, 100007]);
  });
});

Deno.test("tarDirectory: an unmappable id errors the stream, or goes to onError and the file is left out", async () => {
  await tmp(async (d) => {
    await Deno.writeTextFile(`${d}/a`, "");
    await Deno.writeTextFile(`${d}/b`, "");
    Deno.chownSync(`${d}/a`, 5, 5);
    const maps = [{ containerID: 0, hostID: 100000, size: 65536 }];
    Deno.chownSync(`${d}/b`, 100001, 100001);
    await assert.rejects(readAll(tarDirectory(d, { uidMaps: maps, gidMaps: maps })), /Host ID 5/);
    const errors: Error[] = [];
    const entries = await readEntries(
      tarDirectory(d, { uidMaps: maps, gidMaps: maps, onError: (e) => errors.push(e) }),
    );
    assert.deepEqual(entries.map((e) => e.name), ["b"]);
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /cannot be mapped/);
  });
});

Deno.test("tarDirectory, overlay format: 0/0 devices become .wh. entries, opaque dirs get a marker", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/opaque`);
    Deno.chmodSync(`${d}/opaque`, 0o2755);
    await Deno.writeTextFile(`${d}/opaque/new`, "");
    libc.lsetxattr(`${d}/opaque`, "trusted.overlay.opaque", enc.encode("y"));
    libc.mknodat(AT.FDCWD, `${d}/gone`, S.IFCHR | 0o600, 0, 0);
    libc.mknodat(AT.FDCWD, `${d}/null`, S.IFCHR | 0o666, 1, 3);
    const entries = await readEntries(tarDirectory(d, { whiteoutFormat: "overlay" }));
    assert.deepEqual(entries.map((e) => e.name), [
      ".wh.gone",
      "null",
      "opaque/",
      "opaque/.wh..wh..opq",
      "opaque/new",
    ]);
    const wh = entries[0].header;
    assert.deepEqual([wh.type, wh.mode, wh.size], [TarType.REG, 0, 0]);
    const opq = entries[3].header;
    assert.deepEqual([opq.type, opq.mode, opq.size, opq.mtimeSec], [TarType.REG, 0o755, 0, 0]);
    assert.equal(entries[1].header.type, TarType.CHR);
    // The aufs format keeps them as they are.
    const aufs = await readEntries(tarDirectory(d));
    assert.deepEqual(aufs.map((e) => e.name), ["gone", "null", "opaque/", "opaque/new"]);
  });
});

Deno.test("tarDirectory: big files are streamed in ~1 MiB chunks", async () => {
  await tmp(async (d) => {
    const big = new Uint8Array(3 * 1024 * 1024 + 5);
    for (let i = 0; i < big.length; i += 4096) big[i] = i / 4096;
    await Deno.writeFile(`${d}/big`, big);
    const reader = tarDirectory(d).getReader();
    const sizes: number[] = [];
    const chunks: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      sizes.push(value.length);
      chunks.push(value);
    }
    assert.ok(sizes.length >= 4, `chunks: ${sizes}`);
    assert.ok(sizes.every((n) => n <= 1 << 20), `chunks: ${sizes}`);
    const entries = await readEntries(streamOf(...chunks));
    assert.deepEqual(entries[0].body, big);
  });
});

Deno.test("tarDirectory: cancelling stops the walk and closes every descriptor", async () => {
  await tmp(async (d) => {
    for (let i = 0; i < 3; i++) {
      await Deno.mkdir(`${d}/d${i}/e`, { recursive: true });
      await Deno.writeFile(`${d}/d${i}/e/big`, new Uint8Array(1536 * 1024));
    }
    const before = fdCount();
    const reader = tarDirectory(d).getReader();
    const first = await reader.read();
    assert.equal(first.done, false);
    assert.ok(fdCount() > before, "the walk holds descriptors mid-way");
    await reader.cancel();
    assert.equal(fdCount(), before);
  });
});

/** A libc whose `openat` swaps a file for a symlink just before opening it. */
function swappingLibc(real: Libc, victim: string, target: string): Libc {
  return new Proxy(real, {
    get(obj, prop, recv) {
      if (prop === "openat") {
        return (dirfd: number, path: string | Uint8Array, flags: number, mode?: number) => {
          const name = typeof path === "string" ? path : new TextDecoder().decode(path);
          if (name === victim && !(flags & O.DIRECTORY)) {
            real.unlinkat(dirfd, victim, 0);
            real.symlinkat(target, dirfd, victim);
          }
          return real.openat(dirfd, path, flags, mode);
        };
      }
      const v = Reflect.get(obj, prop, recv);
      return typeof v === "function" ? v.bind(obj) : v;
    },
  });
}

Deno.test("tarDirectory: a file swapped for a symlink after lstat is never read through", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/tree`);
    await Deno.writeTextFile(`${d}/secret`, "host secret");
    await Deno.writeTextFile(`${d}/tree/file`, "innocent");
    await Deno.writeTextFile(`${d}/tree/zz`, "after");
    const errors: Error[] = [];
    const bytes = await readAll(
      tarDirectory(`${d}/tree`, {
        libc: swappingLibc(libc, "file", `${d}/secret`),
        onError: (e) => errors.push(e),
      }),
    );
    assert.equal(new TextDecoder().decode(bytes).includes("host secret"), false);
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /file/);
    const entries = await readEntries(streamOf(bytes));
    assert.deepEqual(entries.map((e) => e.name), ["zz"]);
  });
});

Deno.test("tarDirectory: a file that shrinks while read is padded with zeros and reported", async () => {
  await tmp(async (d) => {
    await Deno.writeFile(`${d}/f`, new Uint8Array(10_000).fill(7));
    await Deno.writeTextFile(`${d}/g`, "next");
    // Every read first cuts f down to 100 bytes (through a descriptor of our own).
    const fd = libc.openat(AT.FDCWD, `${d}/f`, O.RDWR);
    const shrinking = new Proxy(libc, {
      get(obj, prop, recv) {
        if (prop === "read") {
          return (rfd: number, buf: Uint8Array, n?: number) => {
            if (obj.fstat(fd).size > 100) obj.ftruncate(fd, 100);
            return obj.read(rfd, buf, n);
          };
        }
        const v = Reflect.get(obj, prop, recv);
        return typeof v === "function" ? v.bind(obj) : v;
      },
    });
    try {
      const errors: Error[] = [];
      const entries = await readEntries(
        tarDirectory(d, { libc: shrinking, onError: (e) => errors.push(e) }),
      );
      assert.deepEqual(entries.map((e) => e.name), ["f", "g"]);
      assert.equal(entries[0].body.length, 10_000);
      assert.deepEqual(entries[0].body.subarray(0, 100), new Uint8Array(100).fill(7));
      assert.deepEqual(entries[0].body.subarray(100), new Uint8Array(9_900));
      assert.equal(new TextDecoder().decode(entries[1].body), "next");
      assert.equal(errors.length, 1);
      assert.ok(errors[0] instanceof TarSourceError);
      assert.match(errors[0].message, /shrank/);
    } finally {
      libc.close(fd);
    }
  });
});

Deno.test("tarDirectory: a directory whose own entry fails still has its contents archived (as Go)", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/dir`);
    await Deno.writeTextFile(`${d}/dir/f`, "");
    Deno.chownSync(`${d}/dir`, 7, 7);
    Deno.chownSync(`${d}/dir/f`, 100000, 100000);
    const maps = [{ containerID: 0, hostID: 100000, size: 65536 }];
    const errors: Error[] = [];
    const entries = await readEntries(
      tarDirectory(d, { uidMaps: maps, gidMaps: maps, onError: (e) => errors.push(e) }),
    );
    assert.deepEqual(entries.map((e) => e.name), ["dir/f"]);
    assert.equal(errors.length, 1);
  });
});

/** `libc` with `sendfile` counted (or removed when `withSendfile` is false). */
function countingSendfile(real: Libc, withSendfile: boolean): { libc: Libc; calls: () => number } {
  let calls = 0;
  const libc = new Proxy(real, {
    get(obj, prop, recv) {
      if (prop === "sendfile") {
        if (!withSendfile) return undefined;
        return (out: number, inFd: number, count: number) => {
          calls++;
          return obj.sendfile!(out, inFd, count);
        };
      }
      const v = Reflect.get(obj, prop, recv);
      return typeof v === "function" ? v.bind(obj) : v;
    },
  });
  return { libc, calls: () => calls };
}

Deno.test("tarDirectory: writeToFd writes the stream's bytes; big bodies go by sendfile, or by read without it", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/tree/sub`, { recursive: true });
    const big = new Uint8Array(300 * 1024 + 5);
    for (let i = 0; i < big.length; i += 512) big[i] = (i >> 9) & 0xff;
    await Deno.writeFile(`${d}/tree/big`, big);
    await Deno.writeFile(`${d}/tree/sub/exact`, new Uint8Array(64 * 1024).fill(3));
    for (let i = 0; i < 40; i++) {
      await Deno.writeTextFile(`${d}/tree/sub/f${i}`, "x".repeat(i * 37));
    }
    const expected = await readAll(tarDirectory(`${d}/tree`));
    for (const withSendfile of [true, false]) {
      const { libc: l, calls } = countingSendfile(libc, withSendfile);
      const out = `${d}/out-${withSendfile}.tar`;
      const fd = libc.openat(AT.FDCWD, out, O.WRONLY | O.CREAT | O.TRUNC, 0o644);
      const seen: [number, number][] = [];
      try {
        const tar = tarDirectory(`${d}/tree`, { libc: l });
        assert.ok(tar instanceof TarStream);
        tar.writeToFd(fd, { onProgress: (bytes, entries) => seen.push([bytes, entries]) });
      } finally {
        libc.close(fd);
      }
      assert.deepEqual(await Deno.readFile(out), expected, `sendfile ${withSendfile}`);
      assert.equal(calls() > 0, withSendfile, "bodies of 64 KiB and more go by sendfile");
      assert.deepEqual(seen.at(-1), [expected.length, 43], "last progress: all bytes, entries");
    }
  });
});

Deno.test("tarDirectory: writeToFd pads a file that shrinks under sendfile with zeros and reports it", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/tree`);
    await Deno.writeFile(`${d}/tree/f`, new Uint8Array(200_000).fill(9));
    await Deno.writeTextFile(`${d}/tree/g`, "next");
    const victim = libc.openat(AT.FDCWD, `${d}/tree/f`, O.RDWR);
    const shrinking = new Proxy(libc, {
      get(obj, prop, recv) {
        if (prop === "sendfile") {
          return (out: number, inFd: number, count: number) => {
            if (obj.fstat(victim).size > 1000) obj.ftruncate(victim, 1000);
            return obj.sendfile!(out, inFd, count);
          };
        }
        const v = Reflect.get(obj, prop, recv);
        return typeof v === "function" ? v.bind(obj) : v;
      },
    });
    const out = `${d}/out.tar`;
    const fd = libc.openat(AT.FDCWD, out, O.WRONLY | O.CREAT | O.TRUNC, 0o644);
    const errors: Error[] = [];
    try {
      (tarDirectory(`${d}/tree`, { libc: shrinking, onError: (e) => errors.push(e) }) as TarStream)
        .writeToFd(fd);
    } finally {
      libc.close(fd);
      libc.close(victim);
    }
    const entries = await readEntries(streamOf(await Deno.readFile(out)));
    assert.deepEqual(entries.map((e) => e.name), ["f", "g"]);
    assert.equal(entries[0].body.length, 200_000);
    assert.deepEqual(entries[0].body.subarray(0, 1000), new Uint8Array(1000).fill(9));
    assert.deepEqual(entries[0].body.subarray(1000), new Uint8Array(199_000));
    assert.equal(new TextDecoder().decode(entries[1].body), "next");
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /shrank/);
  });
});

Deno.test("tarDirectory: a BYOB reader with one recycled small buffer gets the same bytes", async () => {
  await tmp(async (d) => {
    await Deno.writeFile(`${d}/a`, new Uint8Array(70_000).fill(1));
    await Deno.writeTextFile(`${d}/b`, "bee");
    const expected = await readAll(tarDirectory(d));
    const reader = tarDirectory(d).getReader({ mode: "byob" });
    let buf = new Uint8Array(1000).fill(0xee); // stale bytes: padding must be written, not assumed
    const parts: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read(buf);
      if (done || !value) break;
      parts.push(value.slice());
      buf = new Uint8Array(value.buffer).fill(0xee);
    }
    assert.deepEqual(await readAll(streamOf(...parts)), expected);
  });
});
