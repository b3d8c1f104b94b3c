/**
 * What only a real aufs kernel can show (run in the aufs guest by `deno task
 * test:aufs`; ignored, with the reason in the name, on a kernel without
 * aufs): deep chains up to the branch maximum and one past it, the mount
 * data packed into a page plus batched `append:` remounts as aufs takes
 * them, the kernel's answers to the probes, aufs's own files kept out of
 * layers, pseudo-links, copy-up, auplink, cleanup and the SELinux label.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { systemLibc } from "../ffi/libc.ts";
import { AufsBranchLimitError, LayerError } from "../lib/errors.ts";
import { packAufsBranches } from "../lib/aufs/branches.ts";
import { probeBranchMax, probeDirperm1 } from "../lib/aufs/probe.ts";
import { readMountinfo } from "../lib/mounts.ts";
import type { UnionDriver } from "../lib/union.ts";
import { backendTest, fsTypeAt, snapshotTree, withBackend } from "./support/backends.ts";
import { readEntries } from "./support/tar_entries.ts";
import { TarType } from "../lib/archive/tar_header.ts";

const AUFS_META = [".wh..wh.aufs", ".wh..wh.orph", ".wh..wh.plnk"];

/** The branches of the aufs mount at `target` as aufs lists them in sysfs (`path=perm`). */
function sysfsBranches(target: string): string[] {
  const dir = sysfsDir(target);
  const out: string[] = [];
  for (let i = 0;; i++) {
    try {
      out.push(Deno.readTextFileSync(join(dir, `br${i}`)).trim());
    } catch {
      return out;
    }
  }
}

function sysfsDir(target: string): string {
  const m = readMountinfo().findLast((x) => x.mountPoint === target && x.fsType === "aufs");
  assert.ok(m, `no aufs mount at ${target}`);
  const si = m.superOptions.split(",").find((o) => o.startsWith("si="))!.slice(3);
  return `/sys/fs/aufs/si_${si}`;
}

async function inLayer<T>(d: UnionDriver, id: string, fn: (root: string) => T): Promise<T> {
  const root = await d.get(id);
  try {
    return await fn(root);
  } finally {
    await d.put(id);
  }
}

function aufsMountsUnder(dir: string): string[] {
  return readMountinfo().filter((m) => m.fsType === "aufs" && m.mountPoint.startsWith(dir + "/"))
    .map((m) => m.mountPoint);
}

function readOrNull(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

const hex = (i: number) => i.toString(16).padStart(64, "0");

backendTest(
  "aufs",
  "chains of 1, 2, 42, 126 and 127 layers mount and read (base file, whiteout halfway, opaque dir); 128 is refused before any mount",
  () =>
    withBackend("aufs", async (d, h) => {
      const ids = Array.from({ length: 128 }, (_, i) => hex(i));
      for (let i = 0; i < ids.length; i++) await d.create(ids[i], i ? ids[i - 1] : "");
      const base = d.diffDir(ids[0]);
      Deno.writeTextFileSync(join(base, "base"), "from the base");
      Deno.writeTextFileSync(join(base, "gone"), "deleted at layer 21");
      Deno.mkdirSync(join(base, "dir"));
      Deno.writeTextFileSync(join(base, "dir", "old"), "old");
      Deno.writeTextFileSync(join(d.diffDir(ids[20]), ".wh.gone"), ""); // aufs whiteout
      Deno.mkdirSync(join(d.diffDir(ids[30]), "dir"));
      Deno.writeTextFileSync(join(d.diffDir(ids[30]), "dir", ".wh..wh..opq"), ""); // opaque
      Deno.writeTextFileSync(join(d.diffDir(ids[30]), "dir", "new"), "new");

      const status = new Map(await d.status());
      assert.equal(status.get("Max Branches"), "127", "the kernel told its branch maximum");
      const page = systemLibc().getpagesize();
      for (const depth of [1, 2, 42, 126, 127]) {
        const top = ids[depth - 1];
        const chain = ids.slice(0, depth - 1).reverse();
        await inLayer(d, top, (root) => {
          assert.equal(readOrNull(join(root, "base")), "from the base", `depth ${depth}`);
          assert.equal(readOrNull(join(root, "gone")) !== null, depth <= 20, `gone at ${depth}`);
          const dir = [...Deno.readDirSync(join(root, "dir"))].map((e) => e.name).sort();
          assert.deepEqual(dir, depth <= 30 ? ["old"] : ["new"], `dir at depth ${depth}`);
          if (depth === 1) return; // a base layer is its diff dir, never mounted
          assert.equal(fsTypeAt(root), "aufs");
          // Every branch stacked, in order, as aufs itself lists them.
          assert.deepEqual(sysfsBranches(root), [
            `${d.diffDir(top)}=rw`,
            ...chain.map((p) => `${d.diffDir(p)}=ro+wh`),
          ]);
          const packed = packAufsBranches(d.diffDir(top), chain.map((p) => d.diffDir(p)), {
            pageSize: page,
            dirperm1: true,
          });
          for (const s of [packed.data, ...packed.appends]) {
            assert.ok(new TextEncoder().encode(s).length < page);
          }
          if (depth >= 126) {
            // A page of br: data, then batched append: remounts (several branches each).
            assert.ok(packed.appends.length >= 2, `${packed.appends.length} remounts`);
            assert.ok(packed.appends.every((a) => a.split(",append:").length > 5));
          }
        });
      }
      await assert.rejects(d.get(ids[127]), (e) => {
        const cause = (e as Error).cause;
        return e instanceof LayerError && cause instanceof AufsBranchLimitError &&
          cause.branches === 128 && cause.max === 127;
      });
      assert.deepEqual(aufsMountsUnder(h.base), [], "the refused chain left no mount");
      assert.equal(await d.mountCount(ids[127]), 0);
    }, { driver: { tmpDir: "/tmp" } }),
);

backendTest(
  "aufs",
  "the kernel answers the probes: dirperm1 taken, branch maximum 127, xino in /dev/shm",
  () =>
    withBackend("aufs", async (d, h) => {
      const libc = systemLibc();
      assert.equal(await probeDirperm1(libc, { tmpDir: h.base }), true);
      assert.equal(await probeBranchMax(libc, { tmpDir: h.base }), 127);
      assert.deepEqual(
        [...Deno.readDirSync(h.base)].map((e) => e.name),
        ["aufs"],
        "probe dirs removed",
      );
      const status = new Map(await d.status());
      assert.equal(status.get("Dirperm1 Supported"), "true");
      await d.create("a", "");
      await d.create("b", "a");
      await inLayer(d, "b", (root) => {
        assert.equal(
          Deno.readTextFileSync(join(sysfsDir(root), "xi_path")).trim(),
          "/dev/shm/aufs.xino",
        );
        // aufs opens the xino file and unlinks it at once: no name is left in /dev/shm.
      });
    }),
);

backendTest(
  "aufs",
  "aufs's own files (.wh..wh.aufs/orph/plnk) are never in a diff, changes or size",
  () =>
    withBackend("aufs", async (d) => {
      await d.create("a", "");
      Deno.writeTextFileSync(join(d.diffDir("a"), "lower"), "lower");
      Deno.writeTextFileSync(join(d.diffDir("a"), "old"), "old");
      await d.create("b", "a");
      await inLayer(d, "b", (root) => {
        Deno.writeTextFileSync(join(root, "new"), "12345");
        Deno.removeSync(join(root, "old"));
        Deno.linkSync(join(root, "lower"), join(root, "hl")); // a pseudo-link
      });
      const inDiff = [...Deno.readDirSync(d.diffDir("b"))].map((e) => e.name);
      for (const m of AUFS_META) assert.ok(inDiff.includes(m), `aufs made ${m} in the branch`);
      const names = (await readEntries(await d.diff("b", "a"))).map((e) => e.name);
      for (const n of names) assert.ok(!AUFS_META.some((m) => n.startsWith(m)), `diff has ${n}`);
      // The link's source stays in the lower branch (only auplink would copy it up).
      assert.deepEqual(names.sort(), [".wh.old", "hl", "new"]);
      const changes = await d.changes("b", "a");
      assert.deepEqual(changes.map((c) => `${c.kind} ${c.path}`).sort(), [
        "add /hl",
        "add /new",
        "delete /old",
      ]);
      assert.equal(await d.diffSize("b", "a"), "12345".length + "lower".length);
      // The naive path (against no parent) walks the union, where aufs hides its files too.
      const whole = (await readEntries(await d.diff("b", ""))).map((e) => e.name);
      for (const n of whole) assert.ok(!n.startsWith(".wh."), `naive diff has ${n}`);
    }),
);

backendTest(
  "aufs",
  "a hard link made through the mount (plink) exports correctly after put: the new name with its content, no pseudo-link",
  () =>
    withBackend("aufs", async (d) => {
      await d.create("a", "");
      Deno.writeTextFileSync(join(d.diffDir("a"), "f"), "data");
      await d.create("b", "a");
      await inLayer(d, "b", (root) => {
        Deno.linkSync(join(root, "f"), join(root, "hl"));
        assert.equal(Deno.lstatSync(join(root, "f")).ino, Deno.lstatSync(join(root, "hl")).ino);
      });
      // aufs made the link in the rw branch against a pseudo-link it keeps in
      // .wh..wh.plnk/<ino>.<ino> (still there after the unmount, nlink 2); the
      // source name stays in the lower branch (auplink, absent here, would copy it up).
      const hl = Deno.lstatSync(join(d.diffDir("b"), "hl"));
      assert.equal(hl.nlink, 2);
      const plnk = [...Deno.readDirSync(join(d.diffDir("b"), ".wh..wh.plnk"))];
      assert.equal(plnk.length, 1);
      assert.equal(Deno.lstatSync(join(d.diffDir("b"), ".wh..wh.plnk", plnk[0].name)).ino, hl.ino);
      assert.equal(readOrNull(join(d.diffDir("b"), "f")), null);
      // The export: hl as a regular file with the content, never a link into the pseudo-link dir.
      const entries = await readEntries(await d.diff("b", "a"));
      assert.deepEqual(entries.map((e) => [e.name, e.header.type, e.linkname]), [
        ["hl", TarType.REG, ""],
      ]);
      assert.equal(new TextDecoder().decode(entries[0].body), "data");
      await d.create("c", "a");
      await d.applyDiff("c", "a", await d.diff("b", "a"));
      await inLayer(d, "c", (root) => {
        assert.equal(Deno.readTextFileSync(join(root, "hl")), "data");
        assert.equal(Deno.readTextFileSync(join(root, "f")), "data");
      });
      assert.deepEqual(await inLayer(d, "c", snapshotTree), await inLayer(d, "b", snapshotTree));
    }),
);

backendTest(
  "aufs",
  "a write through the union copies up into the layer's diff dir; diff exports exactly that",
  () =>
    withBackend("aufs", async (d) => {
      await d.create("a", "");
      Deno.mkdirSync(join(d.diffDir("a"), "x/y"), { recursive: true });
      Deno.writeTextFileSync(join(d.diffDir("a"), "x/y/f"), "old");
      Deno.writeTextFileSync(join(d.diffDir("a"), "x/other"), "other");
      await d.create("b", "a");
      await inLayer(d, "b", (root) => Deno.writeTextFileSync(join(root, "x/y/f"), "new!"));
      assert.equal(Deno.readTextFileSync(join(d.diffDir("b"), "x/y/f")), "new!");
      assert.equal(readOrNull(join(d.diffDir("b"), "x/other")), null, "only the written file");
      assert.equal(Deno.readTextFileSync(join(d.diffDir("a"), "x/y/f")), "old", "lower untouched");
      const entries = await readEntries(await d.diff("b", "a"));
      assert.deepEqual(entries.map((e) => e.name), ["x/", "x/y/", "x/y/f"]);
      assert.equal(new TextDecoder().decode(entries[2].body), "new!");
      assert.deepEqual(
        (await d.changes("b", "a")).filter((c) => c.path === "/x/y/f"),
        [{ path: "/x/y/f", kind: "modify" }],
      );
      assert.equal(await d.diffSize("b", "a"), 4);
    }),
);

backendTest(
  "aufs",
  "auplink flushes before each unmount when present; missing, or not allowed to run, it is skipped quietly",
  () =>
    withBackend("aufs", async (d, h) => {
      const log = join(h.base, "auplink.log");
      const fake = join(h.base, "auplink");
      Deno.writeTextFileSync(fake, `#!/bin/sh\necho "$@" >> ${log}\n`, { mode: 0o755 });
      await d.create("a", "");
      await d.create("b", "a");
      const withFake = await (await import("../lib/aufs/driver.ts")).AufsDriver.init(h.root, {
        auplink: fake,
        loadModule: async () => {},
      });
      const target = await withFake.get("b");
      await withFake.put("b");
      assert.equal(Deno.readTextFileSync(log).trim(), `${target} flush`);
      assert.equal(fsTypeAt(target), undefined);
      const warnings: string[] = [];
      const missing = await (await import("../lib/aufs/driver.ts")).AufsDriver.init(h.root, {
        auplink: join(h.base, "no-such-auplink"),
        loadModule: async () => {},
        onWarning: (m) => warnings.push(m),
      });
      await missing.get("b");
      await missing.put("b");
      assert.equal(fsTypeAt(target), undefined);
      assert.deepEqual(warnings, []);
      // A process without --allow-run on a terminal: neither modprobe nor auplink may prompt.
      const driverUrl = new URL("../lib/aufs/driver.ts", import.meta.url).href;
      const code = `import { AufsDriver } from ${JSON.stringify(driverUrl)};
const d = await AufsDriver.init(${JSON.stringify(h.root)});
await d.get("b"); await d.put("b"); console.log("done");`;
      const script = join(h.base, "child.ts");
      Deno.writeTextFileSync(script, code);
      const cmd =
        `${Deno.execPath()} run --no-check --allow-read --allow-write --allow-ffi --allow-env ${script}`;
      const out = await new Deno.Command("timeout", {
        args: ["60", "script", "-qec", cmd, "/dev/null"], // a pty: a prompt would wait, then time out
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.ok(out.success, text);
      assert.match(text, /done/);
      assert.doesNotMatch(text, /Allow\?|permission|auplink/i);
    }),
);

backendTest(
  "aufs",
  "cleanup leaves no aufs mount, whatever was held",
  () =>
    withBackend("aufs", async (d, h) => {
      await d.create("a", "");
      await d.create("b", "a");
      await d.create("c", "b");
      await d.get("b");
      await d.get("c");
      await d.get("c");
      assert.equal(aufsMountsUnder(h.base).length, 2);
      await d.cleanup();
      assert.deepEqual(aufsMountsUnder(h.base), []);
    }),
);

backendTest(
  "aufs",
  "a context= label: this kernel (no SELinux) refuses it, the error names the label, nothing stays mounted",
  () =>
    withBackend("aufs", async (d, h) => {
      await d.create("a", "");
      await d.create("b", "a");
      const label = "system_u:object_r:container_file_t:s0:c1,c2";
      await assert.rejects(d.get("b", { mountLabel: label }), (e) => {
        const msg = (e as Error).message;
        return e instanceof LayerError && msg.includes(`context="${label}"`) &&
          msg.includes("SELinux") && msg.includes("EINVAL");
      });
      assert.deepEqual(aufsMountsUnder(h.base), []);
      assert.equal(await d.mountCount("b"), 0);
      // Without the label the same layer mounts.
      await inLayer(d, "b", (root) => assert.equal(fsTypeAt(root), "aufs"));
      assert.deepEqual(snapshotTree(d.diffDir("b")), []);
    }),
);
