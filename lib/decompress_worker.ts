/**
 * The worker behind `decompressFd` (`compression.ts`): reads a descriptor
 * with `read(2)` into a few reused input buffers, inflates gzip or zstd with
 * `node:zlib`, and copies the output into the 1 MiB buffers the reader hands
 * back and forth (transferred, never copied across threads). It waits for a
 * buffer to come back before producing more, so memory stays flat.
 *
 * Messages in: `{type: "start", fd, format, head, buffers, size}` once, then
 * `{type: "buffer", buffer}` for every buffer the reader is done with.
 * Messages out: `{type: "chunk", buffer, length}`, then `{type: "end"}`, or
 * `{type: "error", message}`.
 *
 * @module
 */

import zlib from "node:zlib";
import { systemLibc } from "../ffi/libc.ts";

/** Size of each buffer `read(2)` fills. */
const IN_CHUNK = 256 << 10;
/** Input buffers: a read can proceed while zlib still holds the previous ones. */
const IN_BUFFERS = 4;

interface Start {
  type: "start";
  fd: number;
  format: "gzip" | "zstd";
  head: Uint8Array;
  buffers: number;
  size: number;
}

// deno-lint-ignore no-explicit-any
const scope = self as any;

const free: Uint8Array<ArrayBuffer>[] = [];
let wakeFree: (() => void) | undefined;

function post(m: unknown, transfer: Transferable[] = []): void {
  scope.postMessage(m, transfer);
}

async function takeFree(): Promise<Uint8Array<ArrayBuffer>> {
  while (free.length === 0) {
    await new Promise<void>((resolve) => wakeFree = resolve);
    wakeFree = undefined;
  }
  return free.pop()!;
}

async function run(m: Start): Promise<void> {
  for (let i = 0; i < m.buffers; i++) free.push(new Uint8Array(m.size));
  const libc = systemLibc();
  const z = m.format === "gzip"
    ? zlib.createGunzip({ chunkSize: 256 << 10 })
    : zlib.createZstdDecompress({ chunkSize: 256 << 10 });
  let zError: Error | undefined;
  z.on("error", (e: Error) => zError = e);

  // Input: the sniffed head, then read(2) into recycled buffers.
  const inFree: Uint8Array[] = [];
  for (let i = 0; i < IN_BUFFERS; i++) inFree.push(new Uint8Array(IN_CHUNK));
  let wakeIn: (() => void) | undefined;
  const pump = (async () => {
    if (m.head.length > 0) z.write(m.head);
    for (;;) {
      while (inFree.length === 0) {
        if (zError) return;
        await new Promise<void>((resolve) => wakeIn = resolve);
        wakeIn = undefined;
      }
      if (zError) return;
      const buf = inFree.pop()!;
      const n = libc.read(m.fd, buf);
      if (n === 0) {
        z.end();
        return;
      }
      z.write(buf.subarray(0, n), () => {
        inFree.push(buf);
        wakeIn?.();
      });
    }
  })();

  let out = await takeFree();
  let pos = 0;
  for await (const chunk of z as AsyncIterable<Uint8Array>) {
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(chunk.length - off, out.length - pos);
      out.set(chunk.subarray(off, off + n), pos);
      pos += n;
      off += n;
      if (pos === out.length) {
        post({ type: "chunk", buffer: out.buffer, length: pos }, [out.buffer]);
        out = await takeFree();
        pos = 0;
      }
    }
  }
  await pump;
  if (zError) throw zError;
  if (pos > 0) post({ type: "chunk", buffer: out.buffer, length: pos }, [out.buffer]);
  post({ type: "end" });
}

scope.onmessage = (e: MessageEvent) => {
  const m = e.data as Start | { type: "buffer"; buffer: ArrayBuffer };
  if (m.type === "buffer") {
    free.push(new Uint8Array(m.buffer));
    wakeFree?.();
    return;
  }
  run(m).catch((err: Error) => post({ type: "error", message: err?.message ?? String(err) }));
};
