/**
 * End-to-end tests of the `strata` command: every command run as a
 * subprocess (`deno run -A cli.ts --root <tmp> ...`) on this kernel's real
 * backend (overlay), each test in its own temp root, unmounted in `finally`.
 */

import { AS_NOBODY, type Ran, runCommand, unprivilegedDeno } from "./support/run.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import config from "../deno.json" with { type: "json" };

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

type Run = Ran;

interface RunOptions {
  /** Bytes fed to stdin (default: none, stdin closed). */
  stdin?: Uint8Array;
  /** Deno permission flags (default `-A`). */
  perms?: string[];
}

function run(args: string[], opts: RunOptions = {}): Promise<Run> {
  return runCommand(Deno.execPath(), [
    "run",
    "--no-prompt",
    ...(opts.perms ?? ["-A"]),
    CLI,
    ...args,
  ], {
    stdin: opts.stdin,
  });
}

/** A temp dir with a driver root `<dir>/root`; everything mounted under it is undone after. */
async function withRoot(
  fn: (s: (...args: string[]) => Promise<Run>, root: string, dir: string) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "strata-cli-test-" });
  const root = join(dir, "root");
  const s = (...args: string[]) => run(["--root", root, ...args]);
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

function mountsUnder(dir: string): string[] {
  const real = Deno.realPathSync(dir);
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .map((l) => l.split(" ")[4])
    .filter((mp) => mp && (mp === real || mp.startsWith(real + "/")))
    .reverse();
}

function isMounted(path: string): boolean {
  const real = Deno.realPathSync(path);
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").some((l) =>
    l.split(" ")[4] === real
  );
}

function json(r: Run): Record<string, unknown> {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.err}`);
  return JSON.parse(r.out);
}

function ok(r: Run): string {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.err}`);
  return r.out;
}

/** The error of a failed run: exactly one line on stderr, `strata: ...`. */
function failed(r: Run, code: number, pattern: RegExp): string {
  assert.equal(r.code, code, `expected exit ${code}, got ${r.code}: ${r.err}${r.out}`);
  const lines = r.err.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.err}`);
  assert.match(lines[0], /^strata: /);
  assert.match(lines[0], pattern);
  return lines[0];
}

// ---- tars made here, byte by byte (GNU tar cannot make hostile ones) ----

function header(name: string, type: string, size = 0, link = "", mode = 0o644): Uint8Array {
  const h = new Uint8Array(512);
  const put = (off: number, len: number, text: string) =>
    h.set(new TextEncoder().encode(text).subarray(0, len), off);
  const octal = (off: number, len: number, n: number) =>
    put(off, len, n.toString(8).padStart(len - 1, "0") + "\0");
  put(0, 100, name);
  octal(100, 8, mode);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 1700000000);
  put(156, 1, type);
  put(157, 100, link);
  put(257, 6, "ustar\0");
  put(263, 2, "00");
  h.fill(0x20, 148, 156);
  const sum = h.reduce((a, b) => a + b, 0);
  put(148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

type TarEntry = {
  name: string;
  type?: "0" | "2" | "5";
  data?: string;
  link?: string;
  mode?: number;
};

function makeTar(entries: TarEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const body = new TextEncoder().encode(e.data ?? "");
    parts.push(
      header(
        e.name,
        e.type ?? "0",
        body.length,
        e.link ?? "",
        e.mode ?? (e.type === "5" ? 0o755 : 0o644),
      ),
    );
    if (body.length) {
      const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
      padded.set(body);
      parts.push(padded);
    }
  }
  parts.push(new Uint8Array(1024));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

async function gzip(data: Uint8Array, tool = "gzip"): Promise<Uint8Array> {
  const child = new Deno.Command(tool, { args: ["-c"], stdin: "piped", stdout: "piped" }).spawn();
  const w = child.stdin.getWriter();
  await w.write(data);
  await w.close();
  return (await child.output()).stdout;
}

const BASE_TAR = makeTar([
  { name: "etc/", type: "5" },
  { name: "etc/config", data: "v1\n" },
  { name: "etc/old", data: "old\n" },
  { name: "bin/", type: "5" },
  { name: "bin/sh", data: "#!sh\n", mode: 0o755 },
  { name: "link", type: "2", link: "etc/config" },
]);

// ---- tests ----

Deno.test("--help and --version work without --allow-ffi or any other permission", async () => {
  const help = await run(["--help"], { perms: [] });
  assert.equal(help.code, 0, help.err);
  assert.match(help.out, /usage: strata \[global flags\] <command>/);
  assert.match(help.out, /\n {2}import /);
  const version = await run(["--version"], { perms: [] });
  assert.equal(
    version.out.trim(),
    `strata ${config.version} (deno ${Deno.version.deno}, v8 ${Deno.version.v8}, ` +
      `typescript ${Deno.version.typescript})`,
  );
  assert.deepEqual(JSON.parse((await run(["--json", "--version"], { perms: [] })).out), {
    version: config.version,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
  });
  const cmdHelp = await run(["apply", "--help"], { perms: [] });
  assert.match(cmdHelp.out, /apply ID \[--parent P\] \[FILE\|-\]/);
});

Deno.test("without --allow-ffi a command says so; the narrow flags without -A are enough", async () => {
  const dir = await Deno.makeTempDir();
  const root = join(dir, "r");
  try {
    const r = await run(["--root", root, "status"], {
      perms: ["--allow-read", "--allow-write", "--allow-env"],
    });
    failed(r, 1, /missing --allow-ffi/);
    assert.equal((await Array.fromAsync(Deno.readDir(dir))).length, 0, "nothing was created");
    // /proc is read through libc, so --allow-all is not needed.
    const narrow = await run(["--root", root, "--json", "status"], {
      perms: ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env"],
    });
    assert.equal(narrow.code, 0, narrow.err);
    assert.ok(JSON.parse(narrow.out));
  } finally {
    await run(["--root", root, "cleanup"]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("usage errors exit 2 with one line and a hint", async () => {
  failed(await run(["frobnicate"]), 2, /unknown command "frobnicate" \(see: strata --help\)/);
  failed(
    await run(["--root", "/nonexistent-x", "create"]),
    2,
    /create: missing ID \(see: strata create --help\)/,
  );
  failed(
    await run(["--root", "/nonexistent-x", "rm", "a", "--bogus"]),
    2,
    /--bogus.*strata rm --help/,
  );
  failed(
    await run(["--driver", "zfs", "status"]),
    2,
    /--driver must be one of auto, aufs, overlay/,
  );
  const j = await run(["--json", "mount"]);
  assert.equal(j.code, 2);
  assert.equal(JSON.parse(j.err).kind, "usage");
  failed(await run([]), 2, /no command given/);
});

Deno.test("status names the backend; --json gives driver, root and the status pairs", async () => {
  await withRoot(async (s, root) => {
    const st = json(await s("--json", "status"));
    assert.equal(st.driver, "overlay");
    assert.equal(st.root, root);
    assert.equal((st.status as Record<string, string>)["Root Dir"], root);
    assert.match(ok(await s("status")), /^Driver: +overlay$/m);
  });
});

Deno.test("an explicit backend the kernel lacks fails with a message naming it", async () => {
  await withRoot(async (s) => {
    failed(await s("--driver", "aufs", "status"), 1, /cannot run the aufs backend.*aufs/);
  });
});

Deno.test("create, layers, exists: chains, --json shapes and exit codes", async () => {
  await withRoot(async (s) => {
    ok(await s("create", "base"));
    assert.deepEqual(json(await s("--json", "create", "mid", "--parent", "base")), {
      id: "mid",
      parent: "base",
      rw: false,
    });
    ok(await s("-q", "create", "top", "--parent", "mid", "--rw"));
    const { layers } = json(await s("--json", "layers", "--size")) as {
      layers: Record<string, unknown>[];
    };
    assert.deepEqual(layers.map((l) => [l.id, l.parent, l.mounts, l.incomplete, l.size]), [
      ["base", null, 0, false, 0],
      ["mid", "base", 0, false, 0],
      ["top", "mid", 0, false, 0],
    ]);
    const table = ok(await s("layers")).trim().split("\n");
    assert.match(table[0], /^ID +PARENT +MOUNTS +STATE$/);
    assert.match(table[2], /^mid +base +0 +ok$/);
    assert.equal((await s("exists", "mid")).code, 0);
    const missing = await s("--json", "exists", "nope");
    assert.equal(missing.code, 1);
    assert.deepEqual(JSON.parse(missing.out), { id: "nope", exists: false });
  });
});

Deno.test("bad ids exit 2; a missing parent or layer exits 1 naming it", async () => {
  await withRoot(async (s) => {
    failed(await s("create", "../escape"), 2, /invalid layer id "\.\.\/escape"/);
    failed(await s("create", "x-removing"), 2, /invalid layer id/);
    failed(
      await s("create", "child", "--parent", "ghost"),
      1,
      /layer "ghost" \(parent of child\) does not exist/,
    );
    assert.equal((await s("exists", "child")).code, 1, "nothing half-made remains");
    failed(await s("mount", "ghost"), 1, /mount.*"ghost".*does not exist/);
    failed(await s("diff", "ghost", "-o", "/dev/null"), 1, /"ghost"/);
    ok(await s("create", "dup"));
    failed(await s("create", "dup"), 1, /"dup".*already exists/);
  });
});

Deno.test("mount prints the union path, umount releases it; counts survive across processes", async () => {
  await withRoot(async (s, root) => {
    ok(await s("create", "base"));
    ok(await run(["--root", root, "apply", "base"], { stdin: BASE_TAR }));
    ok(await s("create", "top", "--parent", "base"));
    const path = ok(await s("mount", "top")).trim();
    assert.equal(path, join(root, "mnt", "top"));
    assert.ok(isMounted(path));
    assert.deepEqual(json(await s("--json", "mount", "top")), { id: "top", path, mounts: 2 });
    ok(await s("umount", "top"));
    assert.ok(isMounted(path), "one reference left");
    assert.deepEqual(json(await s("--json", "umount", "top")), { id: "top", mounts: 0 });
    assert.ok(!isMounted(path));
    failed(await s("umount", "top"), 1, /"top".*not mounted/);
  });
});

Deno.test("concurrent mount and umount processes keep the count right", async () => {
  await withRoot(async (s, root) => {
    ok(await s("create", "base"));
    ok(await s("create", "top", "--parent", "base"));
    const n = 4;
    const mounts = await Promise.all(Array.from({ length: n }, () => s("mount", "top")));
    for (const m of mounts) assert.equal(ok(m).trim(), join(root, "mnt", "top"));
    const { layers } = json(await s("--json", "layers")) as {
      layers: { id: string; mounts: number }[];
    };
    assert.equal(layers.find((l) => l.id === "top")?.mounts, n);
    assert.equal(mountsUnder(join(root, "mnt")).length, 1, "mounted once");
    const umounts = await Promise.all(Array.from({ length: n }, () => s("umount", "top")));
    for (const u of umounts) ok(u);
    const after = json(await s("--json", "layers")) as { layers: { id: string; mounts: number }[] };
    assert.equal(after.layers.find((l) => l.id === "top")?.mounts, 0);
    assert.ok(!isMounted(join(root, "mnt", "top")));
  });
});

Deno.test("rm refuses a parent and a mounted layer, saying which; --force removes", async () => {
  await withRoot(async (s) => {
    ok(await s("create", "base"));
    ok(await s("create", "child", "--parent", "base"));
    failed(await s("rm", "base"), 1, /"base".*build on it \(child\).*--force/);
    ok(await s("mount", "child"));
    failed(await s("rm", "child"), 1, /"child".*mounted \(1 reference/);
    assert.deepEqual(json(await s("--json", "rm", "child", "--force")), {
      id: "child",
      removed: true,
      orphaned: [],
      unmounted: 1,
    });
    assert.equal((await s("exists", "child")).code, 1);
    ok(await s("rm", "base"));
    failed(await s("rm", "base"), 1, /"base".*does not exist/);
    ok(await s("rm", "base", "--force"));
  });
});

Deno.test("apply (plain, gzip, file or stdin), changes, diff, diff-size", async () => {
  await withRoot(async (s, root, dir) => {
    ok(await s("create", "base"));
    const applied = await run(["--root", root, "--json", "apply", "base", "-"], {
      stdin: BASE_TAR,
    });
    const a = json(applied);
    assert.equal(a.compression, "none");
    assert.equal(a.entries, 6);
    assert.equal(a.bytes, BASE_TAR.length);
    assert.equal(typeof a.size, "number");
    assert.equal(await Deno.readTextFile(join(root, "diff", "base", "etc", "config")), "v1\n");

    ok(await s("create", "mid", "--parent", "base"));
    const midTar = makeTar([
      { name: "etc/", type: "5" },
      { name: "etc/config", data: "v2\n" },
      { name: "etc/.wh.old" },
      { name: "new.txt", data: "added\n" },
    ]);
    await Deno.writeFile(join(dir, "mid.tar.gz"), await gzip(midTar));
    const size = ok(await s("apply", "mid", join(dir, "mid.tar.gz"))).trim();
    assert.match(size, /^\d+ B$|^\d+\.\d [KMGT]iB \(\d+ bytes\)$/);

    assert.deepEqual(ok(await s("changes", "mid")).trim().split("\n"), [
      "C /etc",
      "C /etc/config",
      "D /etc/old",
      "A /new.txt",
    ]);
    const ch = json(await s("--json", "changes", "mid")) as {
      changes: { path: string; kind: string }[];
    };
    assert.deepEqual(ch.changes.find((c) => c.path === "/etc/old"), {
      path: "/etc/old",
      kind: "delete",
    });

    const path = ok(await s("mount", "mid")).trim();
    assert.equal(await Deno.readTextFile(join(path, "etc/config")), "v2\n");
    await assert.rejects(Deno.stat(join(path, "etc/old")), Deno.errors.NotFound);
    assert.equal(await Deno.readLink(join(path, "link")), "etc/config");
    ok(await s("umount", "mid"));

    const out = join(dir, "mid-export.tar");
    const d = json(await s("--json", "diff", "mid", "-o", out));
    assert.equal(d.file, out);
    assert.equal(d.bytes, (await Deno.stat(out)).size);
    const listing = await new Deno.Command("tar", { args: ["-tf", out], stdout: "piped" }).output();
    const names = decoder.decode(listing.stdout).trim().split("\n").sort();
    assert.deepEqual(names, ["etc/", "etc/.wh.old", "etc/config", "new.txt"]);

    const piped = await s("diff", "mid");
    assert.equal(piped.code, 0, piped.err);
    assert.deepEqual(piped.stdout, await Deno.readFile(out), "stdout carries the same tar");

    const ds = json(await s("--json", "diff-size", "mid"));
    assert.equal(ds.size, Number(ok(await s("-q", "diff-size", "mid")).trim()));
    assert.ok((ds.size as number) > 0);
  });
});

Deno.test("gzip and zstd input apply (file and stdin) and give the tree of the plain tar", async () => {
  await withRoot(async (s, root, dir) => {
    const plainId = "plain";
    ok(await s("create", plainId));
    ok(await run(["--root", root, "-q", "apply", plainId, "-"], { stdin: BASE_TAR }));
    const want = ok(await s("changes", plainId));
    assert.ok(want.includes("A /etc/config"), want);
    for (const tool of ["gzip", "zstd"]) {
      const packed = await gzip(BASE_TAR, tool);
      const file = join(dir, `base.tar.${tool}`);
      await Deno.writeFile(file, packed);
      for (
        const [id, args, stdin] of [
          [`${tool}-file`, [file], undefined],
          [`${tool}-stdin`, ["-"], packed],
        ] as const
      ) {
        ok(await s("create", id));
        const r = await run(["--root", root, "--json", "apply", id, ...args], { stdin });
        const a = json(r);
        assert.equal(a.compression, tool);
        assert.equal(a.bytes, BASE_TAR.length, `${id}: uncompressed bytes counted`);
        assert.equal(a.entries, 6, `${id}: entries counted`);
        assert.equal(ok(await s("changes", id)), want, `${id}: same tree as the plain tar`);
        assert.equal(
          await Deno.readTextFile(join(root, "diff", id, "etc", "config")),
          "v1\n",
        );
      }
    }
    // A truncated gzip stream fails naming the input and leaves the layer flagged.
    const truncated = join(dir, "cut.tar.gz");
    const gz = await gzip(BASE_TAR);
    await Deno.writeFile(truncated, gz.subarray(0, gz.length - 20));
    ok(await s("create", "cut"));
    failed(await s("apply", "cut", truncated), 1, /cut\.tar\.gz: gzip decompression failed/);
  });
});

Deno.test("xz and bzip2 input is refused with the format named", async () => {
  await withRoot(async (s, root, dir) => {
    ok(await s("create", "base"));
    for (const tool of ["xz", "bzip2"]) {
      const file = join(dir, `base.tar.${tool}`);
      await Deno.writeFile(file, await gzip(BASE_TAR, tool));
      failed(
        await s("apply", "base", file),
        1,
        new RegExp(`${tool}-compressed.*decompress it first`),
      );
      failed(await s("import", file), 1, new RegExp(`${tool}-compressed`));
    }
    assert.equal((await Array.fromAsync(Deno.readDir(join(root, "diff", "base")))).length, 0);
  });
});

Deno.test("a hostile tar cannot write outside the root", async () => {
  await withRoot(async (s, root, dir) => {
    const victim = join(dir, "victim");
    await Deno.mkdir(victim);
    ok(await s("create", "evil"));
    const hostile = makeTar([
      { name: "../../escape", data: "escaped\n" },
      { name: "../../victim/escape2", data: "escaped\n" },
      { name: "loop", type: "2", link: victim },
      { name: "loop/pwned", data: "pwned\n" },
      { name: "up", type: "2", link: "../../../../../../" + victim.slice(1) },
      { name: "up/pwned2", data: "pwned\n" },
    ]);
    const r = await run(["--root", root, "apply", "evil", "-"], { stdin: hostile });
    if (r.code !== 0) failed(r, 1, /apply.*"evil"|apply evil/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(victim)), [], "victim untouched");
    for (const p of [join(dir, "escape"), join(root, "escape"), join(dir, "..", "escape")]) {
      await assert.rejects(Deno.lstat(p), Deno.errors.NotFound, `${p} must not exist`);
    }
  });
});

Deno.test("an interrupted apply leaves the layer incomplete; check --repair removes it", async () => {
  await withRoot(async (s, root) => {
    ok(await s("create", "slow"));
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "--root", root, "apply", "slow", "-"],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const w = child.stdin.getWriter();
    // A big file announced, only part of it sent: the apply waits for more.
    await w.write(header("big.bin", "0", 10 * 1024 * 1024));
    await w.write(new Uint8Array(64 * 1024));
    const marker = join(root, "incomplete", "slow");
    for (let i = 0; i < 100; i++) {
      if (await Deno.lstat(marker).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGKILL");
    await child.status;
    await w.abort().catch(() => {});

    const check = await s("--json", "check");
    assert.equal(check.code, 1);
    const report = JSON.parse(check.out) as {
      findings: { kind: string; id?: string; state: string }[];
      clean: boolean;
    };
    assert.equal(report.clean, false);
    assert.deepEqual(report.findings.map((f) => [f.kind, f.id, f.state]), [[
      "incomplete",
      "slow",
      "found",
    ]]);
    const layers = json(await s("--json", "layers")) as {
      layers: { id: string; incomplete: boolean }[];
    };
    assert.deepEqual(layers.layers, [{ id: "slow", parent: null, mounts: 0, incomplete: true }]);

    const repaired = await s("--json", "check", "--repair");
    assert.equal(repaired.code, 0, repaired.err);
    assert.equal(JSON.parse(repaired.out).findings[0].state, "repaired");
    assert.equal((await s("exists", "slow")).code, 1);
    assert.match(ok(await s("check")), /no problems/);
  });
});

Deno.test("import chains tars named by sha256 (idempotent) or by --prefix", async () => {
  await withRoot(async (s, _root, dir) => {
    const second = makeTar([{ name: "etc/", type: "5" }, { name: "etc/config", data: "v2\n" }]);
    await Deno.writeFile(join(dir, "1.tar"), BASE_TAR);
    await Deno.writeFile(join(dir, "2.tar.gz"), await gzip(second));
    const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
    const ids = ok(await s("import", join(dir, "1.tar"), join(dir, "2.tar.gz"))).trim().split("\n");
    assert.deepEqual(ids, [sha(BASE_TAR), sha(second)]);
    const { layers } = json(await s("--json", "layers")) as {
      layers: { id: string; parent: string | null }[];
    };
    assert.deepEqual(layers.find((l) => l.id === ids[1])?.parent, ids[0]);

    const again = json(await s("--json", "import", join(dir, "1.tar"), join(dir, "2.tar.gz"))) as {
      layers: { id: string; reused: boolean; digest: string }[];
    };
    assert.deepEqual(again.layers.map((l) => [l.id, l.reused, l.digest]), [
      [ids[0], true, `sha256:${ids[0]}`],
      [ids[1], true, `sha256:${ids[1]}`],
    ]);

    const named = json(
      await s("--json", "import", "--prefix", "app", join(dir, "1.tar"), join(dir, "2.tar.gz")),
    ) as {
      layers: { id: string; parent: string | null; digest: string }[];
    };
    assert.deepEqual(named.layers.map((l) => [l.id, l.parent, l.digest]), [
      ["app-1", null, `sha256:${ids[0]}`],
      ["app-2", "app-1", `sha256:${ids[1]}`],
    ]);
    const path = ok(await s("mount", "app-2")).trim();
    assert.equal(await Deno.readTextFile(join(path, "etc/config")), "v2\n");
    ok(await s("umount", "app-2"));

    failed(await s("import", "--prefix", "app", join(dir, "1.tar")), 1, /"app-1".*already exists/);
    failed(await s("import", join(dir, "missing.tar")), 1, /missing\.tar/);
  });
});

Deno.test("cleanup unmounts every layer", async () => {
  await withRoot(async (s, root) => {
    ok(await s("create", "base"));
    for (const id of ["a", "b"]) {
      ok(await s("create", id, "--parent", "base"));
      ok(await s("mount", id));
    }
    assert.equal(mountsUnder(join(root, "mnt")).length, 2);
    assert.deepEqual(json(await s("--json", "cleanup")), { root, cleaned: true });
    assert.equal(mountsUnder(join(root, "mnt")).length, 0);
    const { layers } = json(await s("--json", "layers")) as { layers: { mounts: number }[] };
    assert.deepEqual(layers.map((l) => l.mounts), [0, 0, 0]);
  });
});

Deno.test("diff refuses to write a tar to a terminal", async () => {
  await withRoot(async (_s, root) => {
    // `script` gives the command a pseudo-terminal as stdout.
    const cmd = [Deno.execPath(), "run", "-A", CLI, "--root", root, "diff", "x"].join(" ");
    const r = await new Deno.Command("script", {
      args: ["-qec", cmd, "/dev/null"],
      stdout: "piped",
    }).output();
    assert.equal(r.code, 2);
    assert.match(decoder.decode(r.stdout), /refusing to write a tar to a terminal/);
  });
});

Deno.test("not root: a command says so and touches nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "strata-cli-test-" });
  try {
    const { deno, env } = await unprivilegedDeno(dir);
    const root = join(dir, "root");
    const r = await runCommand("setpriv", [
      ...AS_NOBODY,
      deno,
      "run",
      "-A",
      CLI,
      "--root",
      root,
      "status",
    ], { env });
    const err = r.err.trim();
    assert.equal(r.code, 1, err);
    assert.match(err, /^strata: not root: status must run as root \(effective uid is 65534\)/);
    await assert.rejects(Deno.lstat(root), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the progress line shows on a terminal only, and never with -q", async () => {
  await withRoot(async (s, root, dir) => {
    ok(await s("create", "p"));
    const file = join(dir, "base.tar");
    await Deno.writeFile(file, BASE_TAR);
    const onTerminal = async (...args: string[]) => {
      const cmd = [Deno.execPath(), "run", "-A", CLI, "--root", root, ...args].join(" ");
      const r = await new Deno.Command("script", {
        args: ["-qec", cmd, "/dev/null"],
        stdout: "piped",
      })
        .output();
      assert.equal(r.code, 0, decoder.decode(r.stdout));
      return decoder.decode(r.stdout);
    };
    const shown = await onTerminal("diff", "p", "-o", join(dir, "out.tar"));
    // deno-lint-ignore no-control-regex -- the progress line really starts with CR + ESC[K
    assert.match(shown, /\r\x1b\[Kdiff p: \d+(\.\d)? \w?i?B, \d+ entries, .*\/s, \d+\.\ds/);
    const quiet = await onTerminal("-q", "diff", "p", "-o", join(dir, "out.tar"));
    assert.doesNotMatch(quiet, /entries/);
    const piped = await s("apply", "p", file);
    assert.equal(piped.err, "", "no progress when stderr is not a terminal");
  });
});
