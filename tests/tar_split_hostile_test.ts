/**
 * Hostile tar-split records: names that leave the layer (`..`, absolute
 * paths, symlinks in the layer pointing at `/etc`), sizes and checksums that
 * disagree with the files, malformed and truncated JSON, a damaged gzip
 * stream. Each is refused with a `TarSplitError` naming the problem, and
 * reassembly never returns a byte of a file outside the layer.
 *
 * The records aim at host paths, so the module runs inside the host guard
 * (tests/support/host_guard.ts).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Crc64 } from "../lib/archive/crc64.ts";
import { assembleTar, dirFileGetter, TarSplitError } from "../lib/archive/tar_split.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { mountpointsUnder } from "../lib/mounts.ts";
import { hostGuard } from "./support/host_guard.ts";

const test = hostGuard(import.meta.url);

const enc = new TextEncoder();

function crcB64(b: Uint8Array): string {
  const c = new Crc64();
  c.update(b);
  return c.sum().toBase64();
}

function seg(payload: Uint8Array, position: number): string {
  return JSON.stringify({ type: 2, payload: payload.toBase64(), position });
}

function fileLine(name: string, content: Uint8Array, position: number): string {
  return JSON.stringify({
    type: 1,
    name,
    size: content.length,
    payload: crcB64(content),
    position,
  });
}

/** A record: a header-ish segment, the given file lines, an end segment. */
function record(...files: string[]): string {
  return files.join("\n") + "\n";
}

async function gzip(text: string): Promise<Uint8Array> {
  const s = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(s).arrayBuffer());
}

/** A layer dir with a few files and links aimed at the host. */
async function withLayer(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-tsh-" });
  try {
    await Deno.writeTextFile(join(dir, "five"), "12345");
    await Deno.mkdir(join(dir, "sub"));
    await Deno.symlink("/etc", join(dir, "etc-link"));
    await Deno.symlink("/etc/passwd", join(dir, "passwd-link"));
    await Deno.symlink("../../../../../..", join(dir, "up"));
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Reassemble; returns the bytes or the error. */
async function reassemble(
  dir: string,
  rec: string | Uint8Array,
): Promise<{ out?: Uint8Array; err?: unknown }> {
  const gz = typeof rec === "string" ? await gzip(rec) : rec;
  try {
    const s = assembleTar(new Blob([gz as Uint8Array<ArrayBuffer>]).stream(), dirFileGetter(dir), {
      source: "hostile",
    });
    return { out: new Uint8Array(await new Response(s).arrayBuffer()) };
  } catch (err) {
    return { err };
  }
}

async function refused(dir: string, rec: string | Uint8Array, reason: RegExp): Promise<void> {
  const { out, err } = await reassemble(dir, rec);
  assert.equal(out, undefined, "must not reassemble");
  assert.ok(err instanceof TarSplitError, `a TarSplitError, got ${err}`);
  assert.match(err.message, reason);
  assert.match(err.message, /^tar-split hostile: /);
}

const hostPasswd = (() => {
  try {
    return Deno.readFileSync("/etc/passwd");
  } catch {
    return enc.encode("root:x:0:0:root:/root:/bin/sh\n");
  }
})();

test("names that climb out of the layer are refused before anything is opened", async () => {
  await withLayer(async (dir) => {
    for (const name of ["../../../../etc/passwd", "sub/../../etc/passwd", "..", "a/../.."]) {
      await refused(
        dir,
        record(seg(new Uint8Array(512), 0), fileLine(name, hostPasswd, 1)),
        /path outside the layer/,
      );
    }
  });
});

test("absolute names and symlinks resolve inside the layer, never to the host's files", async () => {
  await withLayer(async (dir) => {
    for (const name of ["/etc/passwd", "etc-link/passwd", "up/etc/passwd", "passwd-link"]) {
      const { out, err } = await reassemble(dir, record(fileLine(name, hostPasswd, 0)));
      assert.equal(out, undefined, `${name}: the host's /etc/passwd must not be read`);
      assert.ok(err instanceof TarSplitError, `${name}: ${err}`);
      // Not in the layer (ENOENT), or the last component is a link (ELOOP).
      assert.match(err.message, /open: .*(ENOENT|ELOOP)/, name);
    }
  });
});

test("a file the layer holds under an absolute name is read from the layer", async () => {
  await withLayer(async (dir) => {
    const { out, err } = await reassemble(
      dir,
      record(fileLine("/five", enc.encode("12345"), 0), seg(enc.encode("end"), 1)),
    );
    assert.equal(err, undefined);
    assert.equal(new TextDecoder().decode(out), "12345end");
  });
});

test("sizes that disagree with the files, and checksums that do not match, are refused", async () => {
  await withLayer(async (dir) => {
    await refused(
      dir,
      record(fileLine("five", enc.encode("123456"), 0)),
      /size 5 in the layer, 6 in the record \(file "five", position 0\)/,
    );
    await refused(
      dir,
      record(fileLine("five", enc.encode("1234"), 0)),
      /size 5 in the layer, 4 in the record/,
    );
    await refused(
      dir,
      record(fileLine("five", enc.encode("54321"), 0)),
      /checksum failed .*file "five"/,
    );
    await refused(dir, record(fileLine("sub", enc.encode("x"), 0)), /not a regular file/);
    await refused(dir, record(fileLine("missing", enc.encode("x"), 0)), /open: .*ENOENT/);
  });
});

test("malformed, truncated and out-of-order records are refused", async () => {
  await withLayer(async (dir) => {
    const good = record(seg(enc.encode("hdr"), 0), fileLine("five", enc.encode("12345"), 1));
    // Cut inside the last line.
    await refused(dir, good.slice(0, good.length - 20), /line 2: not a JSON object \(truncated/);
    await refused(dir, "not json\n", /line 1: not a JSON object/);
    await refused(dir, "[1,2]\n", /line 1: not a JSON object/);
    await refused(dir, '{"type":3,"position":0}\n', /unknown entry type 3/);
    await refused(dir, '{"type":2,"payload":"","position":1}\n', /position 1 out of order/);
    await refused(dir, '{"type":2,"payload":"%%%","position":0}\n', /not base64/);
    await refused(
      dir,
      '{"type":1,"name":"five","size":-5,"payload":null,"position":0}\n',
      /size -5 is not a non-negative integer/,
    );
    await refused(
      dir,
      '{"type":1,"name":"five","size":5,"payload":"AAAA","position":0}\n',
      /not an 8-byte CRC-64/,
    );
    await refused(
      dir,
      record(fileLine("five", enc.encode("12345"), 0), fileLine("./five", enc.encode("12345"), 1)),
      /the same file twice/,
    );
    // A damaged gzip stream: cut short, and garbage.
    const gz = await gzip(good);
    await refused(dir, gz.subarray(0, gz.length - 12), /unreadable|truncated|not a JSON object/);
    await refused(dir, enc.encode("definitely not gzip"), /unreadable \(damaged gzip stream\?\)/);
  });
});

test("a hostile record in a layer makes diff fail naming the file; the layer stays intact", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-tsh-drv-" });
  let d: OverlayDriver | undefined;
  try {
    d = await OverlayDriver.init(join(dir, "root"), { onWarning: () => {} });
    const body = enc.encode("content\n");
    const tar = new Uint8Array([
      ...(await import("../lib/archive/tar_writer.ts")).encodeHeader(
        (await import("../lib/archive/tar_header.ts")).makeHeader({ name: "f", size: body.length }),
      ),
      ...body,
      ...new Uint8Array(512 - body.length),
      ...new Uint8Array(1024),
    ]);
    await d.create("l", "");
    await d.applyDiff("l", "", new Blob([tar]).stream());
    await Deno.writeFile(
      d.tarSplit.pathOf("l"),
      await gzip(record(fileLine("../../../../etc/passwd", hostPasswd, 0))),
    );
    const out = await d.diff("l", "");
    assert.equal(out.source, "original");
    await assert.rejects(
      new Response(out).arrayBuffer(),
      (e) => e instanceof TarSplitError && /path outside the layer/.test(e.message),
    );
    assert.equal(await Deno.readTextFile(join(d.diffDir("l"), "f")), "content\n");
    // The rebuilt tar is still there for whoever asks.
    const rebuilt = await d.diff("l", "", { source: "rebuilt" });
    assert.ok((await new Response(rebuilt).arrayBuffer()).byteLength >= 1536);
  } finally {
    try {
      await d?.cleanup();
    } finally {
      assert.deepEqual(mountpointsUnder(dir), []);
      await Deno.remove(dir, { recursive: true });
    }
  }
});

test("a tar whose body lands elsewhere than its name (../x) is applied but keeps no record", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-tsh-up-" });
  let d: OverlayDriver | undefined;
  try {
    d = await OverlayDriver.init(join(dir, "root"), { onWarning: () => {} });
    const { encodeHeader, END_OF_ARCHIVE, padding } = await import("../lib/archive/tar_writer.ts");
    const { makeHeader } = await import("../lib/archive/tar_header.ts");
    const body = enc.encode("up\n");
    const tar = new Uint8Array([
      ...encodeHeader(makeHeader({ name: "../../escaped", size: body.length })),
      ...body,
      ...new Uint8Array(padding(body.length)),
      ...END_OF_ARCHIVE,
    ]);
    await d.create("l", "");
    await d.applyDiff("l", "", new Blob([tar]).stream());
    assert.equal(await Deno.readTextFile(join(d.diffDir("l"), "escaped")), "up\n");
    assert.equal(d.tarSplit.has("l"), false);
    const out = await d.diff("l", "");
    assert.equal(out.source, "rebuilt");
    await out.cancel();
  } finally {
    try {
      await d?.cleanup();
    } finally {
      assert.deepEqual(mountpointsUnder(dir), []);
      await Deno.remove(dir, { recursive: true });
    }
  }
});
