/**
 * The `strata` command against the layer-safety defects of issue 9 (items 3–8,
 * 11 and the messages): each test in its own temp root, everything mounted
 * under it undone in `finally`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Ran, runCommand } from "./support/run.ts";
import { encodeHeader, END_OF_ARCHIVE, padding } from "../lib/archive/tar_writer.ts";
import { makeHeader } from "../lib/archive/tar_header.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

function run(args: string[], stdin?: Uint8Array): Promise<Ran> {
  return runCommand(Deno.execPath(), ["run", "--no-prompt", "-A", CLI, ...args], { stdin });
}

function mountsUnder(dir: string): string[] {
  const real = Deno.realPathSync(dir);
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .map((l) => l.split(" ")[4])
    .filter((mp) => mp && (mp === real || mp.startsWith(real + "/")))
    .reverse();
}

type S = (...args: string[]) => Promise<Ran>;

/** A temp dir with a driver root `<dir>/root`; everything mounted under it is undone after. */
async function withRoot(fn: (s: S, root: string, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-cli-safety-" });
  const root = join(dir, "root");
  const s: S = (...args) => run(["--root", root, ...args]);
  try {
    await fn(s, root, dir);
  } finally {
    await run(["--root", root, "-q", "cleanup"]);
    for (const mp of mountsUnder(dir)) {
      await new Deno.Command("umount", { args: ["-l", mp] }).output();
    }
    assert.deepEqual(mountsUnder(dir), [], "mounts left behind");
    await Deno.remove(dir, { recursive: true });
  }
}

function ok(r: Ran): string {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.err}`);
  return r.out;
}

/** The error of a failed run: exactly one line on stderr, `strata: ...`. */
function failed(r: Ran, code: number, pattern: RegExp): string {
  assert.equal(r.code, code, `expected exit ${code}, got ${r.code}: ${r.err}${r.out}`);
  const lines = r.err.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.err}`);
  assert.match(lines[0], /^strata: /);
  assert.match(lines[0], pattern);
  return lines[0];
}

Deno.test("cli: ids with a newline, an escape or invalid UTF-8 are refused naming the byte", async () => {
  await withRoot(async (s, root) => {
    ok(await s("create", "a"));
    failed(await s("create", "a\nb"), 2, /control character 0x0a at byte 1/);
    failed(await s("create", "k", "--parent", "a\nb"), 2, /control character 0x0a/);
    const esc = failed(await s("create", "x\x1b]0;pwned\x07"), 2, /control character 0x1b/);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x1f\x7f]/.test(esc), "the refused id is printed escaped");
    // Deno hands invalid UTF-8 in argv over as U+FFFD.
    const bad = new TextDecoder().decode(new Uint8Array([0x61, 0xff, 0x62]));
    failed(await s("create", bad), 2, /U\+FFFD at byte 1/);
    assert.deepEqual([...Deno.readDirSync(join(root, "layers"))].map((e) => e.name), ["a"]);
  });
});

Deno.test("cli: rm of a parent racing create of its child never orphans the child (3 tries)", async () => {
  await withRoot(async (s, root) => {
    const lastLine = (r: Ran) => r.err.trimEnd().split("\n").at(-1) ?? "";
    for (let i = 0; i < 3; i++) {
      ok(await s("create", `p${i}`));
      const [c, r] = await Promise.all([
        s("create", `k${i}`, "--parent", `p${i}`),
        s("rm", `p${i}`),
      ]);
      assert.ok(!(c.code === 0 && r.code === 0), `try ${i}: both succeeded`);
      // (Init may warn about the short link of a layer removed meanwhile: look at the last line.)
      if (c.code === 0) assert.match(lastLine(r), /^strata: .*build on it/);
      else assert.match(lastLine(c), /^strata: .*"p\d" \(parent of k\d\) does not exist/);
      const layers = join(root, "layers");
      for (const id of Deno.readDirSync(layers)) {
        const chain = Deno.readTextFileSync(join(layers, id.name)).split("\n").filter(Boolean);
        for (const p of chain) {
          assert.ok(Deno.statSync(join(layers, p)).isFile, `${id.name}'s ${p}`);
        }
      }
    }
  });
});

/** A ustar header for a regular file of `size` bytes. */
function fileHeader(name: string, size: number): Uint8Array {
  return encodeHeader(makeHeader({ name, size, mode: 0o644 }));
}

/** A whole tar of small regular files. */
function smallTar(files: Record<string, string>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, text] of Object.entries(files)) {
    const body = new TextEncoder().encode(text);
    parts.push(fileHeader(name, body.length), body, new Uint8Array(padding(body.length)));
  }
  parts.push(END_OF_ARCHIVE);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

Deno.test("cli: a killed apply --parent (naive path) leaves the layer marked; it is re-applied and its mount released", async () => {
  await withRoot(async (s, root) => {
    ok(await s("create", "A"));
    ok(await s("create", "B", "--parent", "A"));
    ok(await s("create", "C", "--parent", "B"));
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "--root", root, "apply", "C", "--parent", "A", "-"],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(fileHeader("big.bin", 8 << 20));
    await w.write(new Uint8Array(64 * 1024));
    const marker = join(root, "incomplete", "C");
    for (let i = 0; i < 200 && !(await Deno.lstat(marker).then(() => true, () => false)); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGKILL");
    await child.status;
    await w.abort().catch(() => {});

    assert.equal(Deno.readTextFileSync(marker), "apply into an empty layer");
    const ex = await s("--json", "exists", "C");
    assert.equal(ex.code, 1);
    assert.deepEqual(JSON.parse(ex.out), {
      id: "C",
      exists: false,
      incomplete: "apply into an empty layer",
    });
    const report = JSON.parse((await s("--json", "check")).out) as {
      findings: { kind: string; id: string; detail: string }[];
    };
    const f = report.findings.find((f) => f.kind === "incomplete" && f.id === "C");
    assert.match(f?.detail ?? "", /apply its tar again .*`check --repair` removes it/);
    const { layers } = JSON.parse(ok(await s("--json", "layers"))) as {
      layers: { id: string; incomplete: boolean }[];
    };
    assert.deepEqual(layers.map((l) => [l.id, l.incomplete]), [
      ["A", false],
      ["B", false],
      ["C", true],
    ]);
    const mount = await s("mount", "C");
    assert.equal(mount.code, 1);
    assert.match(
      mount.err.trimEnd().split("\n").at(-1)!,
      /^strata: .*apply into an empty layer did not finish\): apply its tar again/,
    );
    // What the message promises works: applying again starts over and releases the mount.
    const again = await run(
      ["--root", root, "apply", "C", "--parent", "A", "-"],
      smallTar({ "f.txt": "x" }),
    );
    ok(again);
    assert.deepEqual([...Deno.readDirSync(join(root, "diff", "C"))].map((e) => e.name), ["f.txt"]);
    assert.deepEqual(mountsUnder(join(root, "mnt")), []);
    const after = JSON.parse(ok(await s("--json", "layers"))) as {
      layers: { id: string; mounts: number; incomplete: boolean }[];
    };
    assert.deepEqual(after.layers.find((l) => l.id === "C"), {
      id: "C",
      parent: "B",
      mounts: 0,
      incomplete: false,
    });
  });
});

Deno.test("cli: apply into a layer with children is refused; a garbage marker is shown escaped", async () => {
  await withRoot(async (s, root) => {
    ok(await s("create", "A"));
    ok(await s("create", "B", "--parent", "A"));
    failed(
      await run(["--root", root, "apply", "A", "-"], smallTar({ "x": "x" })),
      1,
      /refusing: 1 layer\(s\) build on it \(B\)/,
    );
    assert.deepEqual([...Deno.readDirSync(join(root, "diff", "A"))], []);
    // A directory given as the tar: the path is named.
    const dir = join(root, "..", "not-a-tar");
    Deno.mkdirSync(dir);
    failed(
      await s("apply", "B", dir),
      1,
      new RegExp(`open ${dir}: is a directory, not a tar file`),
    );
    Deno.writeTextFileSync(join(root, "incomplete", "B"), "evil\x1b]0;title\x07\nline");
    const mount = await s("mount", "B");
    assert.equal(mount.code, 1);
    // Init's warning and the error both name it, escaped.
    for (const line of mount.err.trimEnd().split("\n")) {
      assert.match(line, /incomplete \("evil\\u001b\]0;title\\u0007\\nline" did not finish/);
      // deno-lint-ignore no-control-regex
      assert.ok(!/[\x00-\x1f]/.test(line));
    }
  });
});
