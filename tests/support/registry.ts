/**
 * A real registry for tests: Debian's `docker-registry` (the CNCF
 * distribution registry) on 127.0.0.1 and a free port, storing into a temp
 * dir, optionally behind htpasswd (bcrypt) basic auth; stopped (and its dir
 * removed) when the callback ends, even on failure.
 *
 * @module
 */

import { join } from "node:path";

/** A running registry. */
export interface TestRegistry {
  /** `127.0.0.1:PORT`. */
  host: string;
  /** Its storage and config dir. */
  dir: string;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A registry started by {@linkcode startRegistry}; `stop()` ends it and removes its dir. */
export interface StartedRegistry extends TestRegistry {
  /** Kill the registry, wait for it, remove its dir. */
  stop(): Promise<void>;
  /** What the registry printed on stderr so far (after stop). */
  log(): Promise<string>;
}

/** Start a fresh registry; with `auth`, only that user gets in. Call `stop()` in a finally. */
export async function startRegistry(
  auth?: { username: string; password: string },
): Promise<StartedRegistry> {
  const dir = await Deno.makeTempDir({ prefix: "strata-registry-" });
  const port = freePort();
  const host = `127.0.0.1:${port}`;
  let authConf = "";
  if (auth) {
    const out = await new Deno.Command("htpasswd", {
      args: ["-Bbn", auth.username, auth.password],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`htpasswd: ${new TextDecoder().decode(out.stderr)}`);
    await Deno.writeFile(join(dir, "htpasswd"), out.stdout);
    authConf = `auth:\n  htpasswd:\n    realm: strata-test\n    path: ${join(dir, "htpasswd")}\n`;
  }
  const config = join(dir, "config.yml");
  await Deno.writeTextFile(
    config,
    `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
http:
  addr: ${host}
${authConf}`,
  );
  const child = new Deno.Command("docker-registry", {
    args: ["serve", config],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const errText = new Response(child.stderr).text().catch(() => "");
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await errText;
    await Deno.remove(dir, { recursive: true });
  };
  let up = false;
  for (let i = 0; i < 100 && !up; i++) {
    try {
      const res = await fetch(`http://${host}/v2/`);
      await res.body?.cancel();
      up = res.status === 200 || res.status === 401;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (!up) {
    await stop();
    throw new Error(`docker-registry did not come up on ${host}: ${(await errText).slice(-1000)}`);
  }
  return { host, dir, stop, log: () => errText };
}

/** Run `fn` with a fresh registry; with `auth`, only that user gets in. */
export async function withRegistry(
  fn: (r: TestRegistry) => Promise<void>,
  auth?: { username: string; password: string },
): Promise<void> {
  const reg = await startRegistry(auth);
  try {
    await fn(reg);
  } catch (e) {
    await reg.stop();
    const err = await reg.log();
    throw err.trim()
      ? new Error(`${(e as Error).message}\nregistry log: ${err.slice(-2000)}`, { cause: e })
      : e;
  } finally {
    await reg.stop();
  }
}
