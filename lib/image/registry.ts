/**
 * A client of the OCI distribution API over Deno's `fetch`: manifests,
 * blobs (HEAD, GET with resume, mount, chunked or monolithic upload), token
 * auth from `WWW-Authenticate` (Bearer and Basic, credentials from flags,
 * `$REGISTRY_AUTH_FILE` or `~/.docker/config.json`), and bounded retries
 * with backoff on 5xx, 429 and connection failures. Plain `http://` is used
 * only for loopback registries or when asked (`insecure`).
 *
 * @module
 */

import { join } from "node:path";
import { digestHex, sha256Digest } from "./digest.ts";
import { isLoopbackHost } from "./reference.ts";
import { MEDIA } from "./compression.ts";

/** User name and password for a registry. */
export interface Credentials {
  /** User name. */
  username: string;
  /** Password or token. */
  password: string;
}

/** Options of {@linkcode RegistryClient}. */
export interface RegistryOptions {
  /** Allow `http://` to a registry that is not on loopback. */
  insecure?: boolean;
  /** Credentials; default: looked up in the auth file. */
  credentials?: Credentials;
  /** Auth file (default `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json`). */
  authFile?: string;
  /** Attempts per request on 5xx/429/connection failures (default 4). */
  attempts?: number;
  /** First backoff delay in ms, doubled each retry (default 200). */
  backoffMs?: number;
  /** Cancels every request. */
  signal?: AbortSignal;
}

/** A registry answered with an error status. */
export class RegistryError extends Error {
  /** HTTP status. */
  readonly status: number;
  /** `what` failed with `status`; `body` is the registry's error text. */
  constructor(what: string, status: number, body: string) {
    super(`${what}: HTTP ${status}${body ? `: ${body.slice(0, 300).trim()}` : ""}`);
    this.name = "RegistryError";
    this.status = status;
  }
}

/** The accepted manifest media types, for `Accept`. */
export const MANIFEST_ACCEPT: string = [
  MEDIA.ociIndex,
  MEDIA.ociManifest,
  MEDIA.dockerList,
  MEDIA.dockerManifest,
].join(", ");

/**
 * Credentials for `host` from a Docker-style auth file
 * (`{"auths": {"host": {"auth": base64("user:pass")}}}`), or undefined.
 *
 * @example
 * ```ts
 * import { credentialsFromAuthFile } from "./registry.ts";
 * console.log(await credentialsFromAuthFile("127.0.0.1:5000", "/nonexistent.json")); // undefined
 * ```
 */
export async function credentialsFromAuthFile(
  host: string,
  file?: string,
): Promise<Credentials | undefined> {
  const path = file ?? Deno.env.get("REGISTRY_AUTH_FILE") ??
    join(Deno.env.get("HOME") ?? "/root", ".docker", "config.json");
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    doc = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`auth file ${path}: ${(e as Error).message}`, { cause: e });
  }
  const auths = doc.auths ?? {};
  const key = Object.keys(auths).find((k) =>
    k.replace(/^https?:\/\//, "").replace(/\/.*$/, "") === host
  );
  if (!key) return undefined;
  const entry = auths[key];
  if (entry.auth) {
    const text = atob(entry.auth);
    const colon = text.indexOf(":");
    if (colon < 0) throw new Error(`auth file ${path}: the auth of ${key} is not user:password`);
    return { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  if (entry.username !== undefined && entry.password !== undefined) {
    return { username: entry.username, password: entry.password };
  }
  return undefined;
}

/** Parse a `WWW-Authenticate` header: scheme and parameters. */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!m) return { scheme: "", params: {} };
  const params: Record<string, string> = {};
  const re = /(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (const p of m[2].matchAll(re)) params[p[1].toLowerCase()] = p[2] ?? p[3] ?? "";
  return { scheme: m[1].toLowerCase(), params };
}

const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** A body that can be sent again on a retry. */
export type RequestBody = Uint8Array | (() => Promise<BodyInit>) | undefined;

/** Options of one {@linkcode RegistryClient.request}. */
export interface RequestOptions {
  /** HTTP method (default GET). */
  method?: string;
  /** Request headers. */
  headers?: Record<string, string>;
  /** Body, sent again as it is on a retry. */
  body?: RequestBody;
  /** `pull` or `pull,push`: the scope a token is asked for. */
  actions: string;
  /** Repository the request works on (for the token scope). */
  repository: string;
  /** Statuses that are not errors (default 2xx). */
  ok?: (status: number) => boolean;
  /** What the request does, for messages. */
  what: string;
  /** Extra scopes (blob mount source). */
  extraScopes?: string[];
}

/**
 * One registry host.
 *
 * @example
 * ```ts
 * import { RegistryClient } from "./registry.ts";
 * const c = new RegistryClient("127.0.0.1:5000");
 * console.log(c.baseUrl); // http://127.0.0.1:5000
 * ```
 */
export class RegistryClient {
  /** Host with port. */
  readonly host: string;
  /** `http(s)://host`. */
  readonly baseUrl: string;
  readonly #opts: RegistryOptions;
  #credentials: Credentials | undefined | null = null; // null: not looked up yet
  #basic = false;
  readonly #tokens = new Map<string, string>();

  /** `host` is `name[:port]`; http is used for loopback hosts or with `insecure`. */
  constructor(host: string, opts: RegistryOptions = {}) {
    this.host = host;
    this.#opts = opts;
    const plain = isLoopbackHost(host) || opts.insecure === true;
    this.baseUrl = `${plain ? "http" : "https"}://${host}`;
  }

  async #creds(): Promise<Credentials | undefined> {
    if (this.#credentials === null) {
      this.#credentials = this.#opts.credentials ??
        await credentialsFromAuthFile(this.host, this.#opts.authFile);
    }
    return this.#credentials;
  }

  #scopeKey(o: RequestOptions): string {
    return [`repository:${o.repository}:${o.actions}`, ...(o.extraScopes ?? [])].join(" ");
  }

  async #authHeader(o: RequestOptions): Promise<string | undefined> {
    if (this.#basic) {
      const c = await this.#creds();
      return c ? `Basic ${btoa(`${c.username}:${c.password}`)}` : undefined;
    }
    const t = this.#tokens.get(this.#scopeKey(o));
    return t ? `Bearer ${t}` : undefined;
  }

  /** Answer a 401 challenge; false when it cannot be answered. */
  async #authenticate(res: Response, o: RequestOptions): Promise<boolean> {
    const header = res.headers.get("www-authenticate") ?? "";
    const { scheme, params } = parseChallenge(header);
    if (scheme === "basic") {
      if (this.#basic || !(await this.#creds())) return false;
      this.#basic = true;
      return true;
    }
    if (scheme !== "bearer" || !params.realm) return false;
    if (this.#tokens.has(this.#scopeKey(o))) return false; // the token we had was refused
    const realm = new URL(params.realm);
    if (realm.protocol === "http:" && !isLoopbackHost(realm.host) && !this.#opts.insecure) {
      throw new Error(`${o.what}: token realm ${params.realm} is plain http (use --insecure)`);
    }
    if (params.service) realm.searchParams.set("service", params.service);
    for (const s of [`repository:${o.repository}:${o.actions}`, ...(o.extraScopes ?? [])]) {
      realm.searchParams.append("scope", s);
    }
    const headers: Record<string, string> = {};
    const c = await this.#creds();
    if (c) headers.authorization = `Basic ${btoa(`${c.username}:${c.password}`)}`;
    const tr = await this.#fetchRetrying(
      realm.href,
      { headers },
      `${o.what}: token from ${realm.origin}`,
    );
    if (!tr.ok) {
      throw new RegistryError(`${o.what}: token from ${realm.origin}`, tr.status, await tr.text());
    }
    const doc = await tr.json() as { token?: string; access_token?: string };
    const token = doc.token ?? doc.access_token;
    if (!token) throw new Error(`${o.what}: the token response from ${realm.origin} has no token`);
    this.#tokens.set(this.#scopeKey(o), token);
    return true;
  }

  /** fetch with bounded retries and backoff on connection failures, 5xx and 429. */
  async #fetchRetrying(
    url: string,
    init: RequestInit & { bodyFactory?: () => Promise<BodyInit | undefined> },
    what: string,
  ): Promise<Response> {
    const attempts = this.#opts.attempts ?? 4;
    let delay = this.#opts.backoffMs ?? 200;
    for (let i = 1;; i++) {
      this.#opts.signal?.throwIfAborted();
      let res: Response | undefined;
      try {
        const body = init.bodyFactory ? await init.bodyFactory() : init.body;
        res = await fetch(url, { ...init, body, signal: this.#opts.signal, redirect: "follow" });
      } catch (e) {
        if (this.#opts.signal?.aborted || i >= attempts) {
          throw new Error(`${what}: ${(e as Error).message} (after ${i} attempt(s))`, { cause: e });
        }
      }
      if (res && (!RETRY_STATUS.has(res.status) || i >= attempts)) return res;
      await res?.body?.cancel();
      await new Promise((r) => setTimeout(r, delay));
      delay *= 2;
    }
  }

  /** One request with auth (one challenge answered) and retries. */
  async request(path: string, o: RequestOptions): Promise<Response> {
    const url = path.startsWith("http") ? path : `${this.baseUrl}${path}`;
    const target = new URL(url);
    if (target.protocol === "http:" && !isLoopbackHost(target.host) && !this.#opts.insecure) {
      throw new Error(`${o.what}: refusing plain http to ${target.host} (use --insecure)`);
    }
    for (let round = 0; round < 2; round++) {
      const headers: Record<string, string> = { ...o.headers };
      const auth = await this.#authHeader(o);
      if (auth) headers.authorization = auth;
      const body = o.body;
      const res = await this.#fetchRetrying(url, {
        method: o.method ?? "GET",
        headers,
        bodyFactory: body === undefined
          ? undefined
          : body instanceof Uint8Array
          ? () => Promise.resolve(body as Uint8Array<ArrayBuffer>)
          : body,
      }, o.what);
      if (res.status === 401 && round === 0) {
        await res.body?.cancel();
        if (await this.#authenticate(res, o)) continue;
        throw new RegistryError(
          o.what,
          401,
          (await this.#creds())
            ? "credentials refused"
            : "authentication required (no credentials)",
        );
      }
      if (!(o.ok ?? ((s: number) => s >= 200 && s < 300))(res.status)) {
        throw new RegistryError(o.what, res.status, await res.text().catch(() => ""));
      }
      return res;
    }
    throw new RegistryError(o.what, 401, "credentials refused");
  }

  /**
   * The manifest or index `reference` (tag or digest) of `repository`: its
   * bytes (checked against the digest when one was asked for, or the
   * registry's `Docker-Content-Digest`), digest and media type.
   */
  async getManifest(
    repository: string,
    reference: string,
  ): Promise<{ bytes: Uint8Array; digest: string; mediaType: string }> {
    const what = `manifest ${this.host}/${repository}:${reference}`;
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, {
      headers: { accept: MANIFEST_ACCEPT },
      actions: "pull",
      repository,
      what,
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes.length > 4 << 20) throw new Error(`${what}: ${bytes.length} bytes is too big`);
    const digest = sha256Digest(bytes);
    const claimed = res.headers.get("docker-content-digest");
    if (reference.startsWith("sha256:") && digest !== reference) {
      throw new Error(`${what}: digest mismatch: the registry sent content hashing to ${digest}`);
    }
    if (claimed && claimed.startsWith("sha256:") && claimed !== digest) {
      throw new Error(
        `${what}: digest mismatch: Docker-Content-Digest ${claimed}, content ${digest}`,
      );
    }
    const mediaType = (res.headers.get("content-type") ?? "").split(";")[0].trim();
    return { bytes, digest, mediaType };
  }

  /** Whether blob `digest` is in `repository`. */
  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const res = await this.request(`/v2/${repository}/blobs/${digest}`, {
      method: "HEAD",
      actions: "pull,push",
      repository,
      what: `HEAD blob ${digest} in ${this.host}/${repository}`,
      ok: (s) => s === 200 || s === 404,
    });
    await res.body?.cancel();
    return res.status === 200;
  }

  /**
   * GET blob `digest` from byte `offset` on. Returns the body stream and the
   * offset it really starts at (0 when the registry ignored the range).
   */
  async getBlob(
    repository: string,
    digest: string,
    offset = 0,
  ): Promise<{ body: ReadableStream<Uint8Array>; start: number }> {
    digestHex(digest, "blob");
    const res = await this.request(`/v2/${repository}/blobs/${digest}`, {
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      actions: "pull",
      repository,
      what: `blob ${digest} from ${this.host}/${repository}`,
    });
    if (!res.body) throw new Error(`blob ${digest} from ${this.host}/${repository}: no body`);
    return { body: res.body, start: res.status === 206 ? offset : 0 };
  }

  /** Mount blob `digest` from `from` into `repository`; false when the registry declined. */
  async mountBlob(repository: string, digest: string, from: string): Promise<boolean> {
    const res = await this.request(
      `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${
        encodeURIComponent(from)
      }`,
      {
        method: "POST",
        actions: "pull,push",
        repository,
        extraScopes: [`repository:${from}:pull`],
        what: `mount blob ${digest} from ${from} into ${this.host}/${repository}`,
      },
    );
    await res.body?.cancel();
    if (res.status === 201) return true;
    // 202: an upload session was opened instead; leave it (registries expire them).
    return false;
  }

  /**
   * Upload blob `digest` of `size` bytes read by `read(offset, length)`:
   * monolithic (one PUT) up to `chunkSize`, else chunked (PATCH per chunk,
   * then PUT). Each request is retried on its own.
   */
  async uploadBlob(
    repository: string,
    digest: string,
    size: number,
    read: (offset: number, length: number) => Promise<Uint8Array>,
    chunkSize = 16 << 20,
  ): Promise<void> {
    const what = `upload blob ${digest} to ${this.host}/${repository}`;
    const start = await this.request(`/v2/${repository}/blobs/uploads/`, {
      method: "POST",
      actions: "pull,push",
      repository,
      what,
    });
    await start.body?.cancel();
    let location = this.#location(start, what);
    const withDigest = (loc: string) => {
      const u = new URL(loc);
      u.searchParams.set("digest", digest);
      return u.href;
    };
    if (size <= chunkSize) {
      const data = await read(0, size);
      const res = await this.request(withDigest(location), {
        method: "PUT",
        headers: { "content-type": "application/octet-stream" },
        body: data,
        actions: "pull,push",
        repository,
        what,
      });
      await res.body?.cancel();
      return;
    }
    for (let off = 0; off < size; off += chunkSize) {
      const len = Math.min(chunkSize, size - off);
      const data = await read(off, len);
      const res = await this.request(location, {
        method: "PATCH",
        headers: {
          "content-type": "application/octet-stream",
          "content-range": `${off}-${off + len - 1}`,
        },
        body: data,
        actions: "pull,push",
        repository,
        what: `${what} (bytes ${off}-${off + len - 1})`,
      });
      await res.body?.cancel();
      location = this.#location(res, what);
    }
    const res = await this.request(withDigest(location), {
      method: "PUT",
      actions: "pull,push",
      repository,
      what,
    });
    await res.body?.cancel();
  }

  #location(res: Response, what: string): string {
    const loc = res.headers.get("location");
    if (!loc) throw new Error(`${what}: the registry sent no upload Location`);
    const u = new URL(loc, this.baseUrl);
    if (u.protocol === "http:" && !isLoopbackHost(u.host) && !this.#opts.insecure) {
      throw new Error(`${what}: upload location ${u.origin} is plain http`);
    }
    return u.href;
  }

  /** PUT a manifest; returns the digest the registry reports (or the content's). */
  async putManifest(
    repository: string,
    reference: string,
    bytes: Uint8Array,
    mediaType: string,
  ): Promise<string> {
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, {
      method: "PUT",
      headers: { "content-type": mediaType },
      body: bytes,
      actions: "pull,push",
      repository,
      what: `put manifest ${this.host}/${repository}:${reference}`,
    });
    await res.body?.cancel();
    return res.headers.get("docker-content-digest") ?? sha256Digest(bytes);
  }
}
