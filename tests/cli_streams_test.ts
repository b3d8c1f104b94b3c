import assert from "node:assert/strict";
import { decompressed, detectCompression, UnsupportedCompressionError } from "../cli/decompress.ts";
import { TarEntryCounter } from "../cli/tar_count.ts";
import { decompressFd } from "../lib/compression.ts";
import { AT, O, systemLibc } from "../ffi/libc.ts";
import { Progress, tarProgress } from "../cli/progress.ts";

/** Run `fn` in a fresh temp dir, removed afterwards. */
async function inTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "strata-decompress-test-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** GNU tar of `names` in `dir`, with extra `args`. */
async function gnuTar(dir: string, names: string[], args: string[] = []): Promise<Uint8Array> {
  const out = await new Deno.Command("tar", {
    args: [...args, "-C", dir, "-cf", "-", ...names],
    stdout: "piped",
  }).output();
  assert.ok(out.success);
  return out.stdout;
}

/** A small real tar made by GNU tar: two files and a directory. */
function makeTar(): Promise<Uint8Array> {
  return inTempDir(async (src) => {
    await Deno.mkdir(`${src}/sub`, { recursive: true });
    await Deno.writeTextFile(`${src}/a.txt`, "hello\n");
    await Deno.writeFile(`${src}/sub/b.bin`, new Uint8Array(3000).fill(7));
    return await gnuTar(src, ["a.txt", "sub"]);
  });
}

async function compress(tool: string, data: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command(tool, { args: ["-c"], stdin: "piped", stdout: "piped" }).spawn();
  const w = child.stdin.getWriter();
  await w.write(data);
  await w.close();
  const out = await child.output();
  assert.ok(out.success, `${tool} failed`);
  return out.stdout;
}

function streamOf(data: Uint8Array, chunk = 100): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= data.length) return c.close();
      c.enqueue(data.slice(off, off + chunk));
      off += chunk;
    },
  });
}

async function bytesOf(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

const tar = await makeTar();

Deno.test("a plain tar passes through unchanged, even read in small chunks", async () => {
  const { stream, format } = await decompressed(streamOf(tar, 7), "t.tar");
  assert.equal(format, "none");
  assert.deepEqual(await bytesOf(stream), tar);
});

for (const tool of ["gzip", "zstd"] as const) {
  Deno.test(`a ${tool} tar is recognised by its magic bytes and decompressed`, async () => {
    const packed = await compress(tool, tar);
    const { stream, format } = await decompressed(streamOf(packed, 50), `t.tar.${tool}`);
    assert.equal(format, tool);
    assert.deepEqual(await bytesOf(stream), tar);
  });

  Deno.test(`a ${tool} tar read from a descriptor is decompressed by the worker`, async () => {
    const packed = await compress(tool, tar);
    // Big enough to take several worker buffers: the tar repeated (it is only bytes here).
    const copies = Math.ceil((3 << 20) / tar.length);
    const big = new Uint8Array(tar.length * copies);
    for (let i = 0; i < copies; i++) big.set(tar, i * tar.length);
    const packedBig = await compress(tool, big);
    for (const [input, expected] of [[packed, tar], [packedBig, big]] as const) {
      await inTempDir(async (dir) => {
        const path = `${dir}/t.${tool}`;
        await Deno.writeFile(path, input);
        const libc = systemLibc();
        const fd = libc.openat(AT.FDCWD, path, O.RDONLY);
        const head = new Uint8Array(10);
        assert.equal(libc.read(fd, head), 10);
        const s = decompressFd(fd, tool, { head, source: path });
        assert.deepEqual(await bytesOf(s), expected);
        assert.throws(() => libc.close(fd), "the descriptor was closed at the end");
      });
    }
  });

  Deno.test(`corrupt ${tool} input errors the worker's stream, naming the input`, async () => {
    const packed = await compress(tool, tar);
    await inTempDir(async (dir) => {
      const path = `${dir}/bad.${tool}`;
      const bad = packed.slice();
      bad.fill(0x55, 20, Math.min(bad.length - 8, 400));
      await Deno.writeFile(path, bad);
      const fd = systemLibc().openat(AT.FDCWD, path, O.RDONLY);
      await assert.rejects(
        bytesOf(decompressFd(fd, tool, { source: path })),
        new RegExp(`bad\\.${tool}: ${tool} decompression failed`),
      );
    });
  });
}

for (
  const [tool, format, hint] of [["xz", "xz", "xz -d"], ["bzip2", "bzip2", "bunzip2"]]
) {
  Deno.test(`a ${format} tar is refused with an error naming the format`, async () => {
    const packed = await compress(tool, tar);
    await assert.rejects(decompressed(streamOf(packed), "layer.tar.x"), (e: unknown) => {
      assert.ok(e instanceof UnsupportedCompressionError);
      assert.equal(e.format, format);
      assert.match(e.message, new RegExp(`layer\\.tar\\.x is ${format}-compressed`));
      assert.ok(e.message.includes(hint));
      return true;
    });
  });
}

Deno.test("a tar whose first file is named like a bzip2 header is still a tar", async () => {
  const head = await inTempDir(async (src) => {
    await Deno.writeTextFile(`${src}/BZh91AY&SY`, "x");
    return (await gnuTar(src, ["BZh91AY&SY"])).subarray(0, 512);
  });
  assert.equal(detectCompression(head), "none");
});

Deno.test("an empty input is treated as a plain (empty) stream", async () => {
  const { stream, format } = await decompressed(streamOf(new Uint8Array(0)), "empty");
  assert.equal(format, "none");
  assert.equal((await bytesOf(stream)).length, 0);
});

Deno.test("the tar entry counter counts entries, not PAX or end blocks", async () => {
  const c = new TarEntryCounter();
  for (let i = 0; i < tar.length; i += 333) c.push(tar.subarray(i, i + 333));
  assert.equal(c.entries, 3); // a.txt, sub/, sub/b.bin
  // A PAX header (long name) must not count, and its size= record must be honoured.
  const long = "n".repeat(150);
  const pax = await inTempDir(async (src) => {
    await Deno.writeFile(`${src}/${long}`, new Uint8Array(1000));
    await Deno.writeTextFile(`${src}/short`, "y");
    return await gnuTar(src, [long, "short"], ["--format=pax"]);
  });
  const p = new TarEntryCounter();
  p.push(pax);
  assert.equal(p.entries, 2);
});

Deno.test("tarProgress reports every byte and entry that flows through", async () => {
  const progress = new Progress("t", { enabled: false });
  const through = await bytesOf(streamOf(tar, 64).pipeThrough(tarProgress(progress)));
  assert.deepEqual(through, tar);
  assert.equal(progress.bytes, tar.length);
  assert.equal(progress.entries, 3);
});

Deno.test("the progress line draws bytes, entries, rate and elapsed, then erases itself", () => {
  const written: string[] = [];
  let now = 0;
  const p = new Progress("apply x", {
    enabled: true,
    now: () => now,
    writer: { writeSync: (b) => (written.push(new TextDecoder().decode(b)), b.length) },
  });
  now = 2000;
  p.add(2 * 1024 * 1024, 10);
  assert.match(written.at(-1)!, /apply x: 2\.0 MiB, 10 entries, 1\.0 MiB\/s, 2\.0s/);
  now = 2050;
  p.add(1, 0); // within the redraw interval: no new line
  assert.equal(written.length, 1);
  p.done();
  assert.equal(written.at(-1), "\r\x1b[K");
  const silent = new Progress("q", { enabled: false, writer: { writeSync: () => assert.fail() } });
  silent.add(100, 1);
  silent.done();
});
