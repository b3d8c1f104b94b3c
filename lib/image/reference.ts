/**
 * Registry image references: `HOST[:PORT]/REPO[:TAG][@DIGEST]`, with
 * Docker's defaults (`docker.io`, `library/`, `latest`) for short names.
 *
 * @module
 */

import { isDigest } from "./digest.ts";

/** A parsed image reference. */
export interface ImageRef {
  /** Registry host with port, e.g. `127.0.0.1:5000`. */
  host: string;
  /** Repository path, e.g. `team/app`. */
  repository: string;
  /** Tag, when given (or `latest` when neither tag nor digest was). */
  tag?: string;
  /** Manifest digest, when given. */
  digest?: string;
}

const REPO_RE =
  /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Parse `ref`; throws naming it when it is not a valid reference.
 *
 * @example
 * ```ts
 * import { parseImageRef } from "./reference.ts";
 * console.log(parseImageRef("127.0.0.1:5000/app:1"));
 * // { host: "127.0.0.1:5000", repository: "app", tag: "1" }
 * ```
 */
export function parseImageRef(ref: string): ImageRef {
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) throw new Error(`image reference ${JSON.stringify(ref)}: bad digest`);
  }
  let host = "docker.io";
  const slash = rest.indexOf("/");
  const first = slash < 0 ? "" : rest.slice(0, slash);
  if (first && (first.includes(".") || first.includes(":") || first === "localhost")) {
    host = first;
    rest = rest.slice(slash + 1);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw new Error(`image reference ${JSON.stringify(ref)}: bad tag`);
  }
  if (host === "docker.io" && !rest.includes("/")) rest = `library/${rest}`;
  if (!REPO_RE.test(rest)) {
    throw new Error(
      `image reference ${JSON.stringify(ref)}: bad repository name ${JSON.stringify(rest)}`,
    );
  }
  if (tag === undefined && digest === undefined) tag = "latest";
  return {
    host,
    repository: rest,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest ? { digest } : {}),
  };
}

/**
 * The canonical text of `ref`: `host/repo:tag`, `host/repo@digest` or both.
 *
 * @example
 * ```ts
 * import { formatImageRef, parseImageRef } from "./reference.ts";
 * console.log(formatImageRef(parseImageRef("localhost:5000/a"))); // localhost:5000/a:latest
 * ```
 */
export function formatImageRef(ref: ImageRef): string {
  return `${ref.host}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ""}${
    ref.digest ? `@${ref.digest}` : ""
  }`;
}

/**
 * True when `host` (with or without a port) is a loopback address.
 *
 * @example
 * ```ts
 * import { isLoopbackHost } from "./reference.ts";
 * console.log(isLoopbackHost("127.0.0.1:5000"), isLoopbackHost("[::1]:80")); // true true
 * ```
 */
export function isLoopbackHost(host: string): boolean {
  let h = host;
  if (h.startsWith("[")) h = h.slice(1, h.indexOf("]"));
  else if (h.includes(":")) h = h.slice(0, h.lastIndexOf(":"));
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}
