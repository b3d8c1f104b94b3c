/**
 * strata never shows Deno's permission prompt (issue 9 item 12): on a
 * terminal, with README's flags and no `--allow-run`, a `modprobe` on PATH
 * is skipped instead of prompted for; a library user lacking write access
 * gets a one-line error naming the flag. Runs under `script(1)` for a pty.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { runCommand } from "./support/run.ts";
import { unmountAllBelow } from "./support/overlay_harness.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const OVERLAY = new URL("../lib/overlay/driver.ts", import.meta.url).href;
const README_FLAGS = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env"];

function onPath(cmd: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((d) => {
    try {
      return Deno.statSync(join(d, cmd)).isFile;
    } catch {
      return false;
    }
  });
}

const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** Run `argv` on a pseudo-terminal (stdin closed at once: a prompt would see EOF or hang). */
function onTerminal(argv: string[], path: string) {
  const line = argv.map(shellQuote).join(" ");
  return runCommand("timeout", ["30", "script", "-qec", line, "/dev/null"], {
    env: { PATH: path, NO_COLOR: "1" },
    stdin: new Uint8Array(0),
  });
}

const hasScript = onPath("script") && onPath("timeout");
if (!hasScript) console.log("no_prompt_test: script(1) or timeout(1) not found; ignored");

Deno.test({
  name: "no permission prompt: modprobe is skipped without --allow-run, a missing flag is named",
  ignore: !hasScript,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "strata-noprompt-" });
    try {
      const bin = join(dir, "bin");
      await Deno.mkdir(bin);
      const ran = join(dir, "modprobe-ran");
      await Deno.writeTextFile(join(bin, "modprobe"), `#!/bin/sh\ntouch ${shellQuote(ran)}\n`);
      await Deno.chmod(join(bin, "modprobe"), 0o755);
      const path = `${bin}:${Deno.env.get("PATH")}`;
      const root = join(dir, "root");
      const deno = Deno.execPath();
      for (const args of [["create", "a"], ["layers"], ["check"]]) {
        const r = await onTerminal(
          [deno, "run", ...README_FLAGS, CLI, "--root", root, ...args],
          path,
        );
        assert.doesNotMatch(r.out, /Deno requests|Allow\?/, `${args[0]}: ${r.out}`);
        assert.equal(r.code, 0, `${args[0]}: ${r.out}`);
      }
      assert.throws(() => Deno.statSync(ran), Deno.errors.NotFound, "modprobe never ran");

      // A library user without write access: one line naming the flag, no prompt.
      const script = join(dir, "open.ts");
      await Deno.writeTextFile(
        script,
        `import { OverlayDriver } from ${JSON.stringify(OVERLAY)};\n` +
          `try { await OverlayDriver.init(${JSON.stringify(join(dir, "lib-root"))}); }\n` +
          `catch (e) { console.log("ERR " + e.name + ": " + e.message); }\n`,
      );
      const r = await onTerminal([deno, "run", "--allow-ffi", "--allow-read", script], path);
      assert.doesNotMatch(r.out, /Deno requests/, r.out);
      assert.match(r.out, /ERR PermissionMissingError: .*needs --allow-write=/, r.out);
    } finally {
      unmountAllBelow(dir);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
