/**
 * The demo, run as a subprocess: to completion, interrupted, and as a
 * non-root user. Each run must leave no temp root and no mount behind.
 */

import { AS_NOBODY, runCommand, unprivilegedDeno } from "./support/run.ts";
import assert from "node:assert/strict";
import { join } from "node:path";

const DEMO = new URL("../demo.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

function demoMounts(): string[] {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((mp) => mp.includes("/strata-demo-"));
}

/** The temp root the demo announced, e.g. `/tmp/strata-demo-abc/root`. */
function announcedRoot(out: string): string {
  const m = /backend (\w+), root (\S+)/.exec(out);
  assert.ok(m, `no root announced in:\n${out}`);
  return m[2];
}

Deno.test("the demo (deno task demo) runs to completion, proves the trees identical and leaves nothing", async () => {
  const before = demoMounts();
  // As README says to run it: the task, with its narrow permissions.
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "demo"],
    cwd: new URL("..", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = decoder.decode(r.stdout);
  const err = decoder.decode(r.stderr);
  assert.equal(r.code, 0, `${out}\n${err}`);
  assert.match(out.split("\n")[0], /^strata demo: /, "the header comes first");
  assert.doesNotMatch(err, /Failed to resolve/);
  assert.equal(err, "", "nothing on stderr");
  assert.match(out, /backend overlay/);
  assert.match(out, /merged trees identical: \d+ entries/);
  for (const line of ["C /etc/config", "D /tmp/delete-me", "A /home/user/notes.txt"]) {
    assert.ok(out.includes(line), `changes list ${line}`);
  }
  assert.match(out, /-> usr\/bin/, "merged view shows the symlink");
  assert.match(out, /\/usr\/bin\/tool \(hard link: \/usr\/bin\/tool-alias\)/);
  assert.match(out, /\/usr\/bin\/tool-alias \(hard link: \/usr\/bin\/tool\)/);
  assert.match(out, /export diff middle +\d+\.\d ms/);
  const root = announcedRoot(out);
  await assert.rejects(Deno.lstat(join(root, "..")), Deno.errors.NotFound, "temp root deleted");
  assert.deepEqual(demoMounts(), before);
});

Deno.test("an interrupted demo (SIGINT) cleans up and exits 130", async () => {
  const before = demoMounts();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DEMO],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  while (!out.includes("top (read-write)")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  child.kill("SIGINT");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const err = decoder.decode(await new Response(child.stderr).arrayBuffer());
  const status = await child.status;
  assert.equal(status.code, 130, `${out}\n${err}`);
  assert.match(err, /SIGINT: cleaning up/);
  assert.match(err, /demo: cleaned up/);
  await assert.rejects(Deno.lstat(join(announcedRoot(out), "..")), Deno.errors.NotFound);
  assert.deepEqual(demoMounts(), before);
});

Deno.test("the demo as a non-root user says so and touches nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-demo-test-" });
  try {
    const { deno, env, tmp } = await unprivilegedDeno(dir);
    const r = await runCommand("setpriv", [...AS_NOBODY, deno, "run", "-A", DEMO], { env });
    const err = r.err;
    assert.equal(r.code, 1, err);
    assert.match(err, /must run as root \(effective uid 65534\).*Nothing was touched/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(tmp)), [], "no temp dir made");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
