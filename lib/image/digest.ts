/**
 * Content digests for images: parsing and checking `sha256:<hex>` strings,
 * OCI chain ids, and a pass-through stream that verifies a blob's digest and
 * size while it flows (so a blob is read once and checked on the way).
 *
 * @module
 */

import { createHash } from "node:crypto";

const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

/** A blob's bytes did not match the digest or size it was announced with. */
export class DigestMismatchError extends Error {
  /** The digest the blob should have had. */
  readonly expected: string;
  /** What it hashed to (or `""` when the size was wrong first). */
  readonly actual: string;
  /** `what` names the blob, e.g. `layer 2 blob sha256:ab…`. */
  constructor(what: string, expected: string, actual: string, detail?: string) {
    super(
      `${what}: digest mismatch: expected ${expected}, got ${actual || "?"}${
        detail ? ` (${detail})` : ""
      }`,
    );
    this.name = "DigestMismatchError";
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * The hex part of a `sha256:<64 hex>` digest; throws naming `what` otherwise
 * (other algorithms are refused: strata stores and verifies sha256 only).
 *
 * @example
 * ```ts
 * import { digestHex } from "./digest.ts";
 * console.log(digestHex("sha256:" + "0".repeat(64), "config")); // 000…0
 * ```
 */
export function digestHex(digest: unknown, what = "digest"): string {
  const m = typeof digest === "string" ? DIGEST_RE.exec(digest) : null;
  if (!m) {
    throw new Error(`${what}: ${JSON.stringify(digest)} is not a sha256 digest (sha256:<64 hex>)`);
  }
  return m[1];
}

/**
 * True when `s` is a well-formed `sha256:<64 hex>` digest.
 *
 * @example
 * ```ts
 * import { isDigest } from "./digest.ts";
 * console.log(isDigest("sha256:abc")); // false
 * ```
 */
export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

/**
 * `sha256:<hex>` of `data`.
 *
 * @example
 * ```ts
 * import { sha256Digest } from "./digest.ts";
 * console.log(sha256Digest(new Uint8Array())); // sha256:e3b0c442…
 * ```
 */
export function sha256Digest(data: Uint8Array | string): string {
  return "sha256:" + createHash("sha256").update(data).digest("hex");
}

/**
 * The OCI chain ids of a list of diff ids: the first is the first diff id,
 * each next is `sha256(previous chain id + " " + diff id)`.
 *
 * @example
 * ```ts
 * import { chainIds } from "./digest.ts";
 * const a = "sha256:" + "a".repeat(64);
 * console.log(chainIds([a])[0] === a); // true
 * ```
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const [i, d] of diffIds.entries()) {
    digestHex(d, `diff id ${i + 1}`);
    out.push(i === 0 ? d : sha256Digest(`${out[i - 1]} ${d}`));
  }
  return out;
}

/** What a {@linkcode verifying} stream saw, readable once it has ended. */
export interface VerifyResult {
  /** Bytes that passed. */
  size: number;
  /** `sha256:<hex>` of them (set when the stream ends). */
  digest: string;
}

/**
 * A pass-through stream that hashes and counts what flows through it. With
 * `expected`, it fails (instead of ending) when the digest differs, and as
 * soon as more than `expectedSize` bytes pass; the error names `what`.
 * `onChunk` sees every chunk (progress, a copy to a file).
 *
 * @example
 * ```ts
 * import { sha256Digest, verifying } from "./digest.ts";
 * const data = new TextEncoder().encode("hi");
 * const v = verifying("greeting", { digest: sha256Digest(data), size: 2 });
 * await new Blob([data]).stream().pipeThrough(v.stream).pipeTo(new WritableStream());
 * console.log(v.result.digest);
 * ```
 */
export function verifying(
  what: string,
  expected?: { digest?: string; size?: number },
  onChunk?: (chunk: Uint8Array) => void | Promise<void>,
): { stream: TransformStream<Uint8Array, Uint8Array>; result: VerifyResult } {
  const hash = createHash("sha256");
  const result: VerifyResult = { size: 0, digest: "" };
  const want = expected?.digest;
  const wantSize = expected?.size;
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      result.size += chunk.length;
      if (wantSize !== undefined && wantSize >= 0 && result.size > wantSize) {
        throw new DigestMismatchError(
          what,
          want ?? "?",
          "",
          `more than the announced ${wantSize} bytes`,
        );
      }
      hash.update(chunk);
      if (onChunk) await onChunk(chunk);
      controller.enqueue(chunk);
    },
    flush() {
      result.digest = "sha256:" + hash.digest("hex");
      if (wantSize !== undefined && wantSize >= 0 && result.size !== wantSize) {
        throw new DigestMismatchError(
          what,
          want ?? "?",
          result.digest,
          `${result.size} bytes, announced ${wantSize}`,
        );
      }
      if (want !== undefined && result.digest !== want) {
        throw new DigestMismatchError(what, want, result.digest);
      }
    },
  });
  return { stream, result };
}
