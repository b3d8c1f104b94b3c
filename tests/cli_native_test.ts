/**
 * The CLI's manners: per-command help, errors in strata's words, `--json`
 * output checked against docs/schemas/, quiet ends on a closed pipe, sizes
 * with units; and the package around it: the non-root test run, the publish
 * file list.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { COMMANDS, helpText, parseCommandLine, UsageError } from "../cli/args.ts";
import { main } from "../cli/main.ts";
import type { SyncWriter } from "../cli/output.ts";
import { type Schema, schemaProblems } from "./support/json_schema.ts";
import { AS_NOBODY, runCommand, unprivilegedDeno } from "./support/run.ts";
import { unmountAllBelow } from "./support/overlay_harness.ts";
import { systemLibc } from "../ffi/libc.ts";

const REPO = new URL("..", import.meta.url).pathname;
const CLI = join(REPO, "cli.ts");
const decoder = new TextDecoder();

function schema(name: string): Schema {
  return JSON.parse(Deno.readTextFileSync(join(REPO, "docs/schemas", `${name}.schema.json`)));
}

/** A writer collecting what is written. */
class Sink implements SyncWriter {
  chunks: Uint8Array[] = [];
  writeSync(p: Uint8Array): number {
    this.chunks.push(p.slice());
    return p.length;
  }
  get text(): string {
    return this.chunks.map((c) => decoder.decode(c)).join("");
  }
}

/** Run `strata args` in this process; its stdout and stderr as text. */
async function strata(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new Sink();
  const stderr = new Sink();
  const code = await main(args, { stdout, stderr });
  return { code, out: stdout.text, err: stderr.text };
}

Deno.test("every command's --help explains each of its flags, has examples, exit codes and its schema", () => {
  for (const c of COMMANDS) {
    const text = helpText(c);
    for (const [flag, spec] of Object.entries(c.options)) {
      const names = [`--${flag}`, ...(spec.short ? [`-${spec.short}`] : [])];
      const row = (c.details ?? []).find(([k]) => names.some((n) => k.split(/[ ,]+/).includes(n)));
      assert.ok(row, `${c.name} --help does not explain --${flag}`);
      assert.ok(text.includes(row[1]), `${c.name} --help lacks the text of --${flag}`);
    }
    for (const op of c.operands) {
      assert.ok(
        (c.details ?? []).some(([k]) => k.startsWith(op)),
        `${c.name} --help does not explain ${op}`,
      );
    }
    assert.match(text, /\nexamples:\n {2}.*strata /, `${c.name} --help has no example`);
    assert.match(text, /\nexit status:\n {2}0 {2}success\n/, `${c.name} --help lacks exit codes`);
    assert.match(text, /\n {2}2 {2}usage error/);
    assert.ok(c.schema, `${c.name} names no --json schema`);
    assert.ok(text.includes(`docs/schemas/${c.schema}.schema.json`));
    assert.equal(schema(c.schema).type, "object");
  }
});

Deno.test("usage errors are in strata's words, not parseArgs'", () => {
  const cases: [string[], RegExp][] = [
    [["layers", "--bogus"], /^unknown flag --bogus$/],
    [["diff", "a", "-o"], /^--output needs a value$/],
    [["create", "a", "--parent"], /^--parent needs a value$/],
    [["layers", "--size=yes"], /^--size is a switch and takes no value$/],
    [["-x"], /^unknown flag -x$/],
  ];
  for (const [args, re] of cases) {
    assert.throws(() => parseCommandLine(args), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, re);
      assert.doesNotMatch(e.message, /Unknown option|positional|argument missing|'/);
      return true;
    });
  }
});

Deno.test("--json output of every command matches its schema in docs/schemas", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-json-" });
  const root = join(dir, "root");
  const g = ["--root", root, "--json"];
  const check = (name: string, out: string) => {
    const value = JSON.parse(out);
    assert.deepEqual(schemaProblems(value, schema(name)), [], `${name}: ${out}`);
    return value;
  };
  try {
    const tar = join(dir, "base.tar");
    const runs: [string, string[]][] = [
      ["create", ["create", "base"]],
      ["create", ["create", "app", "--parent", "base"]],
      ["mount", ["mount", "app"]],
      ["umount", ["umount", "app"]],
      ["exists", ["exists", "app"]],
      ["status", ["status"]],
      ["layers", ["layers", "--size"]],
      ["changes", ["changes", "app"]],
      ["diff-size", ["diff-size", "app"]],
      ["diff", ["diff", "app", "-o", tar]],
      ["create", ["create", "copy"]],
      ["apply", ["apply", "copy", tar]],
      ["import", ["import", tar, "--prefix", "imp"]],
      ["check", ["check"]],
      ["rm", ["rm", "copy"]],
      ["cleanup", ["cleanup"]],
    ];
    for (const [name, args] of runs) {
      const r = await strata([...g, ...args]);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.err}`);
      check(name, r.out);
    }
    const missing = await strata([...g, "mount", "nope"]);
    assert.equal(missing.code, 1);
    assert.equal(missing.out, "");
    assert.equal(missing.err.trim().split("\n").length, 1);
    check("error", missing.err);
    const usage = await strata(["--json", "frobnicate"]);
    assert.equal(check("error", usage.err).exitCode, 2);
    check("version", (await strata(["--json", "--version"])).out);
  } finally {
    await strata(["--root", root, "cleanup"]).catch(() => {});
    unmountAllBelow(dir);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sizes are printed with a unit, as a plain number with -q", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-size-" });
  const root = join(dir, "root");
  try {
    const tar = join(dir, "l.tar");
    assert.equal((await strata(["--root", root, "create", "base"])).code, 0);
    const path = (await strata(["--root", root, "mount", "base"])).out.trim();
    await Deno.writeFile(join(path, "f"), new Uint8Array(3000));
    assert.equal((await strata(["--root", root, "diff", "base", "-o", tar])).code, 0);
    await strata(["--root", root, "create", "a"]);
    await strata(["--root", root, "create", "b"]);
    const human = await strata(["--root", root, "apply", "a", tar]);
    assert.equal(human.code, 0, human.err);
    assert.equal(human.out.trim(), "2.9 KiB (3000 bytes)");
    const quiet = await strata(["--root", root, "-q", "apply", "b", tar]);
    assert.equal(quiet.out.trim(), "3000");
    assert.equal(
      (await strata(["--root", root, "diff-size", "a"])).out.trim(),
      "2.9 KiB (3000 bytes)",
    );
    assert.equal((await strata(["--root", root, "-q", "diff-size", "a"])).out.trim(), "3000");
  } finally {
    await strata(["--root", root, "cleanup"]).catch(() => {});
    unmountAllBelow(dir);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("strata layers | head -1 exits 0 with nothing on stderr", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-pipe-" });
  const root = join(dir, "root");
  try {
    // More than a pipe buffer (64 KiB) of output, so that strata is still
    // writing when head has gone.
    systemLibc().mount("tmpfs", dir, "tmpfs", 0n, "mode=0700"); // no fsync per create
    const { OverlayDriver } = await import("../lib/overlay/driver.ts");
    const driver = await OverlayDriver.init(root, { loadModule: () => Promise.resolve() });
    for (let i = 0; i < 300; i++) {
      await driver.create(`${String(i).padStart(3, "0")}-${"x".repeat(240)}`);
    }
    const errFile = join(dir, "err");
    const script = `"$0" run --allow-all "$1" --root "$2" layers 2>"$3" | head -1; ` +
      `echo "status=\${PIPESTATUS[0]}"`;
    const r = await runCommand("bash", ["-c", script, Deno.execPath(), CLI, root, errFile]);
    const lines = r.out.trim().split("\n");
    assert.equal(lines.length, 2, r.out);
    assert.match(lines[0], /^ID +PARENT/);
    assert.equal(lines[1], "status=0");
    assert.equal(await Deno.readTextFile(errFile), "");
    await driver.cleanup();
  } finally {
    unmountAllBelow(dir);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task test as a non-root user prints one line and exits non-zero, leaving nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-nonroot-" });
  try {
    const { deno, env, tmp } = await unprivilegedDeno(dir);
    const r = await runCommand("setpriv", [...AS_NOBODY, deno, "task", "test"], {
      cwd: REPO,
      env: { ...env, PATH: "/usr/bin:/bin", NO_COLOR: "1" },
    });
    assert.notEqual(r.code, 0);
    assert.equal(r.out, "");
    // Deno's own "Task test ..." echo aside, one line.
    const lines = r.err.trim().split("\n").filter((l) => !l.startsWith("Task "));
    assert.deepEqual(lines.length, 1, r.err);
    assert.match(lines[0], /must run as root/);
    assert.deepEqual([...Deno.readDirSync(tmp)], [], "temp dirs left behind");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno publish --dry-run lists what a user needs and nothing else", async () => {
  const r = await runCommand(Deno.execPath(), [
    "publish",
    "--dry-run",
    "--allow-dirty",
    "--no-check",
  ], {
    cwd: REPO,
    env: { NO_COLOR: "1" },
  });
  assert.equal(r.code, 0, r.err);
  const files = (r.out + r.err).split("\n").map((l) => l.match(/file:\/\/\S+/)?.[0])
    .filter((f): f is string => f !== undefined)
    .map((f) => f.slice(`file://${REPO}`.length));
  for (const needed of ["LICENSE", "NOTICE", "README.md", "mod.ts", "cli.ts", "deno.json"]) {
    assert.ok(files.includes(needed), `${needed} is not published: ${files.join(" ")}`);
  }
  assert.ok(files.some((f) => f.startsWith("docs/schemas/")));
  const unwanted = files.filter((f) =>
    /^(demo\.ts|deno\.lock|scripts\/|tests\/|bench\/|\.ci\/|\.git)/.test(f)
  );
  assert.deepEqual(unwanted, []);
});

Deno.test("the progress line shows percent and time left when the input size is known", async () => {
  const { Progress } = await import("../cli/progress.ts");
  let now = 0;
  const sink = new Sink();
  const p = new Progress("apply base", { enabled: true, writer: sink, now: () => now });
  p.startInput(4 * 1024 * 1024);
  now = 2000;
  p.addInput(1024 * 1024);
  p.add(3 * 1024 * 1024, 120);
  assert.equal(
    p.line(),
    "apply base: 25% of 4.0 MiB, 3.0 MiB, 120 entries, 1.5 MiB/s, 6s left",
  );
  assert.ok(sink.text.startsWith("\r\x1b[K") && sink.text.includes("25% of 4.0 MiB"), sink.text);
  p.startInput(undefined); // a pipe: no percent, bytes/s, entries and time
  assert.equal(p.line(), "apply base: 3.0 MiB, 120 entries, 1.5 MiB/s, 2.0s");
  p.done();
  assert.ok(sink.text.endsWith("\r\x1b[K"), "the line is erased at the end");
});
