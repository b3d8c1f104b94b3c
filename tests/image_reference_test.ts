/**
 * The registry client's pure parts and its refusals: image references,
 * loopback detection, WWW-Authenticate parsing, Docker auth files, plain
 * http refused for a non-loopback host unless insecure, and an AbortSignal
 * that stops a pull (no network: the refusals happen before any request).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { formatImageRef, isLoopbackHost, parseImageRef } from "../lib/image/reference.ts";
import { credentialsFromAuthFile, parseChallenge, RegistryClient } from "../lib/image/registry.ts";
import { chainIds } from "../lib/image/digest.ts";
import { parseOciRef } from "../lib/image/oci_layout.ts";

Deno.test("image references: host, repository, tag, digest, Docker defaults; bad ones are refused", () => {
  assert.deepEqual(parseImageRef("127.0.0.1:5000/team/app:1"), {
    host: "127.0.0.1:5000",
    repository: "team/app",
    tag: "1",
  });
  const d = "sha256:" + "a".repeat(64);
  assert.deepEqual(parseImageRef(`localhost/app@${d}`), {
    host: "localhost",
    repository: "app",
    digest: d,
  });
  assert.deepEqual(parseImageRef("busybox"), {
    host: "docker.io",
    repository: "library/busybox",
    tag: "latest",
  });
  assert.equal(formatImageRef(parseImageRef("[::1]:5000/a")), "[::1]:5000/a:latest");
  assert.throws(() => parseImageRef("127.0.0.1:5000/App"), /bad repository/);
  assert.throws(() => parseImageRef("127.0.0.1:5000/a@sha256:xyz"), /bad digest/);
  assert.throws(() => parseImageRef("127.0.0.1:5000/a:b/c"), /bad/);
  assert.deepEqual(parseOciRef("oci:/tmp/a:b/c:v1"), { dir: "/tmp/a:b/c", tag: "v1" });
  assert.deepEqual(parseOciRef("oci:rel"), { dir: "rel", tag: undefined });
  assert.throws(() => parseOciRef("docker://x"), /oci:DIR/);
});

Deno.test("loopback hosts get http; others https, http only with insecure, and plain http is refused", async () => {
  assert.ok(
    isLoopbackHost("127.0.0.1:5000") && isLoopbackHost("[::1]:1") && isLoopbackHost("localhost"),
  );
  assert.ok(!isLoopbackHost("10.0.0.1:5000") && !isLoopbackHost("example.com"));
  assert.equal(new RegistryClient("127.0.0.1:5000").baseUrl, "http://127.0.0.1:5000");
  assert.equal(new RegistryClient("registry.example:443").baseUrl, "https://registry.example:443");
  assert.equal(
    new RegistryClient("registry.example", { insecure: true }).baseUrl,
    "http://registry.example",
  );
  const c = new RegistryClient("registry.example");
  await assert.rejects(
    () =>
      c.request("http://registry.example/v2/", { actions: "pull", repository: "a", what: "probe" }),
    /refusing plain http to registry.example/,
  );
});

Deno.test("WWW-Authenticate challenges and Docker auth files", async () => {
  assert.deepEqual(
    parseChallenge(
      'Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"',
    ),
    {
      scheme: "bearer",
      params: { realm: "https://auth.example/token", service: "reg", scope: "repository:a:pull" },
    },
  );
  assert.deepEqual(parseChallenge('Basic realm="x"'), { scheme: "basic", params: { realm: "x" } });
  const dir = await Deno.makeTempDir();
  try {
    const f = join(dir, "config.json");
    await Deno.writeTextFile(
      f,
      JSON.stringify({
        auths: {
          "https://127.0.0.1:5000": { auth: btoa("me:pa:ss") },
          "other:1": { username: "u", password: "p" },
        },
      }),
    );
    assert.deepEqual(await credentialsFromAuthFile("127.0.0.1:5000", f), {
      username: "me",
      password: "pa:ss",
    });
    assert.deepEqual(await credentialsFromAuthFile("other:1", f), { username: "u", password: "p" });
    assert.equal(await credentialsFromAuthFile("none:1", f), undefined);
    await Deno.writeTextFile(f, "{");
    await assert.rejects(() => credentialsFromAuthFile("x", f), /auth file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("chain ids: the first is the diff id, then sha256 of 'parent diff'", async () => {
  const a = "sha256:" + "a".repeat(64), b = "sha256:" + "b".repeat(64);
  const [c1, c2] = chainIds([a, b]);
  assert.equal(c1, a);
  const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${a} ${b}`));
  const hex = Array.from(new Uint8Array(h), (x) => x.toString(16).padStart(2, "0")).join("");
  assert.equal(c2, `sha256:${hex}`);
  assert.throws(() => chainIds(["md5:00"]), /not a sha256 digest/);
});
