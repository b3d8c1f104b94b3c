import assert from "node:assert/strict";
import { join } from "node:path";
import { Errno, systemLibc } from "../ffi/libc.ts";
import { AufsNestedError, AufsNotSupportedError, NotSupportedError } from "../lib/errors.ts";
import {
  dirperm1Supported,
  modprobe,
  probeDirperm1,
  runningInUserNs,
  supportsAufs,
} from "../lib/aufs/probe.ts";
import { makeFakeProc } from "./support/fake_proc.ts";
import { RecordingLibc } from "./support/recording_libc.ts";
import { HAS_AUFS } from "./support/backends.ts";

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-probe-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("uid_map of the initial namespace is not a user namespace; anything else is", async () => {
  await withTemp(async (dir) => {
    const cases: [string | null, boolean][] = [
      ["         0          0 4294967295\n", false],
      ["0 0 4294967295", false],
      ["0 100000 65536\n", true],
      ["0 0 65536\n", true],
      ["garbage\n", true],
      ["", true],
      [null, false], // unreadable: treated as the initial namespace
    ];
    for (const [i, [content, nested]] of cases.entries()) {
      const proc = await makeFakeProc({ dir: join(dir, String(i)), uidMap: content });
      assert.equal(runningInUserNs(proc), nested, JSON.stringify(content));
    }
  });
});

Deno.test("supportsAufs: loads the module first, then refuses a user namespace", async () => {
  await withTemp(async (dir) => {
    const proc = await makeFakeProc({ dir, uidMap: "0 100000 65536\n" });
    const loaded: string[] = [];
    await assert.rejects(
      supportsAufs({
        procRoot: proc,
        loadModule: (m) => {
          loaded.push(m);
          return Promise.resolve();
        },
      }),
      (e) => e instanceof AufsNestedError && e instanceof NotSupportedError,
    );
    assert.deepEqual(loaded, ["aufs"]);
  });
});

Deno.test("supportsAufs: any line of filesystems containing aufs means supported", async () => {
  await withTemp(async (dir) => {
    const proc = await makeFakeProc({ dir, filesystems: "nodev\tproc\nnodev\taufs\n" });
    await supportsAufs({ procRoot: proc, loadModule: async () => {} });
  });
});

Deno.test("supportsAufs: no aufs in filesystems, or no filesystems file, is AufsNotSupportedError", async () => {
  await withTemp(async (dir) => {
    const without = await makeFakeProc({
      dir: join(dir, "a"),
      filesystems: "nodev\toverlay\n\text4\n",
    });
    await assert.rejects(
      supportsAufs({ procRoot: without, loadModule: async () => {} }),
      (e) =>
        e instanceof AufsNotSupportedError &&
        (e as Error).message.includes(join(without, "filesystems")),
    );
    const missing = await makeFakeProc({ dir: join(dir, "b"), filesystems: null });
    await assert.rejects(
      supportsAufs({ procRoot: missing, loadModule: async () => {} }),
      (e) => e instanceof AufsNotSupportedError && /cannot read/.test((e as Error).message),
    );
  });
});

Deno.test("supportsAufs on this machine's /proc matches its filesystems list", async () => {
  const hasAufs = Deno.readTextFileSync("/proc/filesystems").includes("aufs");
  const nested = runningInUserNs("/proc");
  const result = supportsAufs({ loadModule: async () => {} });
  if (nested) await assert.rejects(result, AufsNestedError);
  else if (hasAufs) await result;
  else await assert.rejects(result, AufsNotSupportedError);
});

Deno.test("modprobe never throws, whether or not the binary exists", async () => {
  await modprobe("strata-no-such-module");
});

Deno.test("dirperm1 probe: a one-branch aufs mount with dirperm1 in temp dirs, unmounted, dirs removed", async () => {
  await withTemp(async (dir) => {
    const libc = new RecordingLibc();
    assert.equal(await probeDirperm1(libc, { tmpDir: dir }), true);
    const calls = libc.mountCalls();
    assert.equal(calls.length, 2);
    const [, source, target, fstype, flags, data] = calls[0];
    assert.deepEqual([source, fstype, flags], ["none", "aufs", 0n]);
    assert.match(String(target), new RegExp(`^${dir}/storage-aufs-union`));
    assert.match(
      String(data),
      new RegExp(`^br:${dir}/storage-aufs-base[^,=]+,dirperm1,xino=/dev/shm/aufs\\.xino$`),
    );
    assert.deepEqual(calls[1], ["umount2", target, 0]);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("dirperm1 probe: a refused mount means false, nothing to unmount, dirs removed", async () => {
  await withTemp(async (dir) => {
    const libc = new RecordingLibc().fail("mount", Errno.EINVAL);
    assert.equal(await probeDirperm1(libc, { tmpDir: dir }), false);
    assert.equal(libc.callsOf("umount2").length, 0);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("dirperm1 probe: temp dirs that cannot be made mean false, with a warning", async () => {
  const warnings: string[] = [];
  const libc = new RecordingLibc();
  const ok = await probeDirperm1(libc, {
    tmpDir: "/nonexistent/strata",
    warn: (m) => warnings.push(m),
  });
  assert.equal(ok, false);
  assert.equal(libc.callsOf("mount").length, 0);
  assert.equal(warnings.length, 1);
});

Deno.test({
  name: `dirperm1 probe on a kernel without aufs is false${
    HAS_AUFS ? " [ignored: this kernel has aufs]" : ""
  }`,
  ignore: HAS_AUFS,
}, async () => {
  await withTemp(async (dir) => {
    assert.equal(await probeDirperm1(systemLibc(), { tmpDir: dir }), false);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("dirperm1 is probed once per libc, concurrent callers share the probe", async () => {
  await withTemp(async (dir) => {
    const a = new RecordingLibc();
    const answers = await Promise.all([
      dirperm1Supported(a, { tmpDir: dir }),
      dirperm1Supported(a, { tmpDir: dir }),
      dirperm1Supported(a, { tmpDir: dir }),
    ]);
    assert.deepEqual(answers, [true, true, true]);
    assert.equal(await dirperm1Supported(a, { tmpDir: dir }), true);
    assert.equal(a.callsOf("mount").length, 1);

    const b = new RecordingLibc().fail("mount", Errno.EINVAL);
    assert.equal(await dirperm1Supported(b, { tmpDir: dir }), false);
    assert.equal(await dirperm1Supported(b, { tmpDir: dir }), false);
    assert.equal(b.callsOf("mount").length, 1);
  });
});
