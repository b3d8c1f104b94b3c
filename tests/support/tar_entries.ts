/**
 * Test helper: read a whole tar stream into a list of entries (headers with
 * names as text and bodies as bytes), using the project's tar reader.
 *
 * @module
 */

import { nameText, type TarHeader } from "../../lib/archive/tar_header.ts";
import { readTar } from "../../lib/archive/tar_reader.ts";

/** One entry of a tar, for assertions. */
export interface Entry {
  name: string;
  linkname: string;
  header: TarHeader;
  body: Uint8Array;
}

/** All entries of `stream`, in order. */
export async function readEntries(stream: ReadableStream<Uint8Array>): Promise<Entry[]> {
  const out: Entry[] = [];
  let parts: Uint8Array[] = [];
  await readTar(stream, {
    entry(h) {
      parts = [];
      out.push({
        name: nameText(h.name),
        linkname: nameText(h.linkname),
        header: h,
        body: new Uint8Array(0),
      });
    },
    data(chunk) {
      parts.push(chunk.slice());
    },
    end() {
      const e = out[out.length - 1];
      let n = 0;
      for (const p of parts) n += p.length;
      e.body = new Uint8Array(n);
      let at = 0;
      for (const p of parts) {
        e.body.set(p, at);
        at += p.length;
      }
    },
  });
  return out;
}

/** The whole stream as one byte array. */
export async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A stream that yields `chunks` in order. */
export function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(ch);
      c.close();
    },
  });
}
