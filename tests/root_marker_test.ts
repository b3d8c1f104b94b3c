/**
 * A driver root is recognisably strata's (issue 9 item 1): a directory
 * without `strata.json` is refused and never changed, system directories are
 * refused, a containers/storage root is adopted only on request, and the
 * commands that only read change nothing on disk or in the mount table.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { NotStrataRootError, NotSupportedError, ReadOnlyError } from "../lib/errors.ts";
import { OverlayDriver } from "../lib/overlay/driver.ts";
import { type DriverOptions, openDriver } from "../lib/driver.ts";
import "../lib/aufs/driver.ts";
import { MARKER_NAME, readMarker, systemPathProblem } from "../lib/root_marker.ts";
import { markRoot } from "./support/root.ts";
import { runCommand } from "./support/run.ts";
import { mountsBelow, unmountAllBelow } from "./support/overlay_harness.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const quiet = { loadModule: () => Promise.resolve(), onWarning: () => {} };

function strata(root: string, ...args: string[]) {
  return runCommand(Deno.execPath(), ["run", "--no-prompt", "-A", CLI, "--root", root, ...args]);
}

/** Every entry below `dir`: type, size, mode and mtime (a change to any shows). */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of [...Deno.readDirSync(d)].sort((a, b) => a.name < b.name ? -1 : 1)) {
      const p = join(d, e.name);
      const st = Deno.lstatSync(p);
      out.push(`${p} ${st.isDirectory ? "d" : "f"} ${st.size} ${st.mode} ${st.mtime?.getTime()}`);
      if (st.isDirectory && !mountsBelow(p).includes(p)) walk(p);
    }
  };
  walk(dir);
  return out;
}

/** The mount table lines at or below `dir`, with their propagation fields. */
function mountLines(dir: string): string[] {
  const real = Deno.realPathSync(dir);
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .filter((l) => {
      const mp = l.split(" ")[4];
      return mp !== undefined && (mp === real || mp.startsWith(real + "/"));
    });
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-marker-" });
  try {
    await fn(dir);
  } finally {
    unmountAllBelow(dir);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a directory with files but no strata.json is refused and left exactly as it was", async () => {
  await withTemp(async (dir) => {
    const h = join(dir, "home");
    await Deno.mkdir(join(h, "work/novel"), { recursive: true });
    await Deno.mkdir(join(h, "diff/patches"), { recursive: true });
    await Deno.mkdir(join(h, "mnt/old-removing"), { recursive: true });
    await Deno.writeTextFile(join(h, "work/novel/ch1.txt"), "x\n");
    const before = tree(dir);
    for (const args of [["check", "--repair"], ["create", "a"], ["layers"], ["rm", "a"]]) {
      const r = await strata(h, ...args);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.err}`);
      assert.match(r.err, /is not a strata root: it holds files but no strata\.json/);
      assert.deepEqual(tree(dir), before, `${args.join(" ")} changed nothing`);
      assert.deepEqual(mountLines(dir), [], `${args.join(" ")} mounted nothing`);
    }
    for (const readOnly of [false, true]) {
      await assert.rejects(OverlayDriver.init(h, { ...quiet, readOnly }), NotStrataRootError);
    }
    assert.deepEqual(tree(dir), before);
  });
});

Deno.test("/ and system directories are never a root, also through a symlink", async () => {
  for (const p of ["/", "/usr", "/var/lib", "/etc", "/tmp", "/proc/self", "/sys/fs", "/dev/shm"]) {
    assert.ok(systemPathProblem(p) !== undefined, p);
  }
  for (const p of ["/var/lib/strata", "/tmp/strata-x", "/srv/strata"]) {
    assert.equal(systemPathProblem(p), undefined, p);
  }
  await withTemp(async (dir) => {
    Deno.symlinkSync("/", join(dir, "to-root"));
    Deno.symlinkSync("/usr", join(dir, "to-usr"));
    assert.match(systemPathProblem(join(dir, "to-root")) ?? "", /^\/ is a system directory/);
    assert.match(systemPathProblem(join(dir, "to-usr", "")) ?? "", /\/usr is a system/);
    // Refused before anything is looked at: the driver never touches /.
    await assert.rejects(OverlayDriver.init(join(dir, "to-root"), quiet), NotStrataRootError);
  });
});

Deno.test("a new root gets a versioned strata.json; a marker of another driver or a newer format is refused", async () => {
  await withTemp(async (dir) => {
    const root = join(dir, "r");
    const d = await OverlayDriver.init(root, quiet);
    await d.cleanup();
    const marker = readMarker(root);
    assert.equal(marker?.format, "strata-root");
    assert.equal(marker?.version, 1);
    assert.equal(marker?.driver, "overlay");
    // The probe results are cached per kernel release.
    const release = Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim();
    assert.equal(marker?.probes?.[release]?.overlay?.results.mount, true);

    const aufsRoot = join(dir, "aufs-root");
    await markRoot(aufsRoot, "aufs");
    await assert.rejects(
      OverlayDriver.init(aufsRoot, quiet),
      (e) => e instanceof NotSupportedError && /holds aufs layers, not overlay/.test(e.message),
    );
    // auto opens the marker's driver (here: aufs, which this kernel lacks).
    await assert.rejects(
      openDriver("auto", aufsRoot, quiet as DriverOptions),
      (e) => e instanceof NotSupportedError && /aufs/.test(e.message),
    );

    const text = Deno.readTextFileSync(join(root, MARKER_NAME));
    Deno.writeTextFileSync(join(root, MARKER_NAME), text.replace('"version": 1', '"version": 2'));
    await assert.rejects(
      OverlayDriver.init(root, quiet),
      (e) => e instanceof NotStrataRootError && /newer strata \(root format 2/.test(e.message),
    );
    Deno.writeTextFileSync(join(root, MARKER_NAME), "not json");
    await assert.rejects(OverlayDriver.init(root, quiet), NotStrataRootError);
  });
});

Deno.test("a containers/storage aufs root is adopted only with adopt", async () => {
  await withTemp(async (dir) => {
    const root = join(dir, "cs");
    for (const d of ["layers", "diff/base", "mnt/base"]) {
      await Deno.mkdir(join(root, d), { recursive: true });
    }
    await Deno.writeTextFile(join(root, "layers/base"), "");
    await Deno.writeTextFile(join(root, "diff/base/f"), "data\n");
    const before = tree(dir);
    const r = await strata(root, "--driver", "overlay", "layers");
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /--adopt/);
    assert.deepEqual(tree(dir), before);

    const adopted = await strata(root, "--driver", "overlay", "--adopt", "check", "--repair");
    assert.equal(adopted.code, 0, adopted.err);
    assert.equal(readMarker(root)?.adopted, true);
    assert.equal(Deno.readTextFileSync(join(root, "diff/base/f")), "data\n");
    const layers = await strata(root, "layers");
    assert.equal(layers.code, 0, layers.err);
    assert.match(layers.out, /base/);
    await strata(root, "cleanup");

    // Not a containers/storage root: refused even with adopt.
    const other = join(dir, "other");
    await Deno.mkdir(join(other, "layers"), { recursive: true });
    await Deno.writeTextFile(join(other, "notes.txt"), "mine\n");
    await assert.rejects(
      OverlayDriver.init(other, { ...quiet, adopt: true }),
      (e) => e instanceof NotStrataRootError && /cannot be adopted/.test(e.message),
    );
    assert.deepEqual([...Deno.readDirSync(other)].map((e) => e.name).sort(), [
      "layers",
      "notes.txt",
    ]);
  });
});

Deno.test("commands that only read create, sweep, mount and re-propagate nothing", async () => {
  await withTemp(async (dir) => {
    const root = join(dir, "r");
    // A missing root: reading it makes nothing.
    for (const args of [["status"], ["layers"], ["exists", "a"], ["check"]]) {
      const r = await strata(root, ...args);
      assert.ok(r.code <= 1, `${args.join(" ")}: ${r.err}`);
      assert.deepEqual([...Deno.readDirSync(dir)], [], `${args.join(" ")} made nothing`);
    }
    for (const args of [["create", "base"], ["create", "child", "--parent", "base"]]) {
      assert.equal((await strata(root, ...args)).code, 0);
    }
    await Deno.writeTextFile(join(root, "diff/child/f"), "x\n");
    // Leftovers a writing Init would sweep, and the root's own bind mount undone.
    await Deno.mkdir(join(root, "diff/gone-removing"));
    assert.equal((await strata(root, "cleanup")).code, 0);
    const before = tree(dir);
    const mountsBefore = mountLines(dir);
    assert.deepEqual(mountsBefore, [], "cleanup undid the root's bind mount");
    const reads = [
      ["status"],
      ["layers"],
      ["exists", "child"],
      ["changes", "child"],
      ["diff-size", "child"],
      ["diff", "child"],
      ["check"],
    ];
    for (const args of reads) {
      const r = await strata(root, ...args);
      assert.ok(r.code <= 1, `${args.join(" ")}: ${r.err}`);
      assert.deepEqual(tree(dir), before, `${args.join(" ")} changed nothing on disk`);
      assert.deepEqual(mountLines(dir), mountsBefore, `${args.join(" ")} mounted nothing`);
    }
    const d = await OverlayDriver.init(root, { ...quiet, readOnly: true });
    await assert.rejects(d.create("x", ""), ReadOnlyError);
    await assert.rejects(d.remove("child"), ReadOnlyError);
    await assert.rejects(d.applyDiff("child", "base", new Blob([]).stream()), ReadOnlyError);
    assert.deepEqual(tree(dir), before);
  });
});
