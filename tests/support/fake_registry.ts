/**
 * A small registry on 127.0.0.1 (Deno.serve) that serves one image and can
 * misbehave on purpose: cut a blob mid-way, send wrong bytes, answer 500,
 * lack a blob its manifest lists, trickle a blob slowly, or demand a Bearer
 * token. It records every request, so tests can see ranges and retries.
 *
 * @module
 */

import type { BuiltImage } from "./oci_build.ts";

/** How the fake misbehaves. */
export interface Faults {
  /** Cut these blobs' first response after this many bytes (then behave). */
  cutAfter?: Record<string, number>;
  /** Serve other bytes (same length) for these blobs. */
  corrupt?: Set<string>;
  /** Answer 500 to the first N requests for these blobs (Infinity: always). */
  fail500?: Record<string, number>;
  /** Answer 404 for these blobs. */
  missing?: Set<string>;
  /** Send these blobs in 4 KiB pieces with this many ms between them. */
  trickleMs?: Record<string, number>;
  /** Serve the tag as an image index: the image for this host, a missing one for s390x. */
  index?: boolean;
  /** Require `Authorization: Bearer <token>` got from /token with these credentials. */
  bearer?: { username: string; password: string };
}

/** One request the fake saw. */
export interface Seen {
  method: string;
  path: string;
  range: string | null;
  status: number;
}

/** A running fake. */
export interface FakeRegistry {
  /** `127.0.0.1:PORT`. */
  host: string;
  /** Requests so far. */
  seen: Seen[];
  /** The most trickled blob bodies that were being sent at once. */
  maxInFlight: () => number;
}

const TOKEN = "t0ken";

/** Run `fn` with a fake serving `img` as `repo:tag`. */
export async function withFakeRegistry(
  img: BuiltImage,
  repo: string,
  tag: string,
  faults: Faults,
  fn: (r: FakeRegistry) => Promise<void>,
): Promise<void> {
  const blobs = new Map<string, Uint8Array>();
  for (const b of [img.config, ...img.layers]) blobs.set(b.digest, b.bytes);
  const arch = Deno.build.arch === "x86_64" ? "amd64" : "arm64";
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      {
        mediaType: img.manifest.mediaType,
        digest: "sha256:" + "5".repeat(64),
        size: 100,
        platform: { os: "linux", architecture: "s390x" },
      },
      {
        mediaType: img.manifest.mediaType,
        digest: img.manifest.digest,
        size: img.manifest.size,
        platform: { os: "linux", architecture: arch },
      },
    ],
  });
  const seen: Seen[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const counts = new Map<string, number>();
  const ac = new AbortController();
  let port = 0;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: ac.signal,
    onListen: (a) => port = a.port,
  }, (req) => {
    const url = new URL(req.url);
    const range = req.headers.get("range");
    const respond = (res: Response) => {
      seen.push({ method: req.method, path: url.pathname, range, status: res.status });
      return res;
    };
    if (url.pathname === "/token") {
      const want = faults.bearer!;
      if (
        req.headers.get("authorization") !== `Basic ${btoa(`${want.username}:${want.password}`)}`
      ) {
        return respond(new Response("bad credentials", { status: 401 }));
      }
      return respond(Response.json({ token: TOKEN }));
    }
    if (faults.bearer && req.headers.get("authorization") !== `Bearer ${TOKEN}`) {
      return respond(
        new Response("{}", {
          status: 401,
          headers: {
            "www-authenticate":
              `Bearer realm="http://127.0.0.1:${port}/token",service="fake",scope="repository:${repo}:pull"`,
          },
        }),
      );
    }
    if (url.pathname === "/v2/") return respond(new Response("{}"));
    if (faults.index && url.pathname === `/v2/${repo}/manifests/${tag}`) {
      return respond(
        new Response(index, {
          headers: { "content-type": "application/vnd.oci.image.index.v1+json" },
        }),
      );
    }
    if (
      url.pathname === `/v2/${repo}/manifests/${tag}` ||
      url.pathname === `/v2/${repo}/manifests/${img.manifest.digest}`
    ) {
      return respond(
        new Response(img.manifest.bytes as Uint8Array<ArrayBuffer>, {
          headers: {
            "content-type": img.manifest.mediaType,
            "docker-content-digest": img.manifest.digest,
          },
        }),
      );
    }
    const m = new RegExp(`^/v2/${repo}/blobs/(sha256:[0-9a-f]{64})$`).exec(url.pathname);
    if (!m || !blobs.has(m[1]) || faults.missing?.has(m[1])) {
      return respond(new Response('{"errors":[{"code":"BLOB_UNKNOWN"}]}', { status: 404 }));
    }
    const digest = m[1];
    const n = (counts.get(digest) ?? 0) + 1;
    counts.set(digest, n);
    if (n <= (faults.fail500?.[digest] ?? 0)) return respond(new Response("boom", { status: 500 }));
    let data = blobs.get(digest)!;
    if (faults.corrupt?.has(digest)) {
      data = data.slice();
      data[Math.floor(data.length / 2)] ^= 0xff;
    }
    let start = 0;
    const r = range ? /^bytes=(\d+)-$/.exec(range) : null;
    if (r) start = Number(r[1]);
    const body = data.subarray(start);
    const cut = n === 1 ? faults.cutAfter?.[digest] : undefined;
    const trickle = faults.trickleMs?.[digest];
    const headers = {
      "content-type": "application/octet-stream",
      "content-length": String(body.length),
    };
    if (cut === undefined && trickle === undefined) {
      return respond(
        new Response(body as Uint8Array<ArrayBuffer>, { status: r ? 206 : 200, headers }),
      );
    }
    let off = 0;
    let counted = false;
    const finish = () => {
      if (counted) inFlight--;
      counted = false;
    };
    if (trickle) {
      inFlight++;
      counted = true;
      maxInFlight = Math.max(maxInFlight, inFlight);
    }
    const stream = new ReadableStream<Uint8Array>({
      cancel: finish,
      async pull(c) {
        if (cut !== undefined && off >= cut) {
          c.error(new Error("connection dropped on purpose"));
          return;
        }
        if (off >= body.length) {
          finish();
          c.close();
          return;
        }
        if (trickle) await new Promise((res) => setTimeout(res, trickle));
        const end = Math.min(body.length, off + 4096, cut ?? Infinity);
        c.enqueue(body.slice(off, end));
        off = end;
      },
    });
    return respond(new Response(stream, { status: r ? 206 : 200, headers }));
  });
  try {
    await fn({ host: `127.0.0.1:${port}`, seen, maxInFlight: () => maxInFlight });
  } finally {
    ac.abort();
    await server.finished;
  }
}
