/**
 * The recording double against the real aufs kernel (run in the aufs guest by
 * `deno task test:aufs`): every aufs mount, remount and unmount the double
 * accepted in the host's aufs tests (logged to `$STRATA_AUFS_DATA_LOG`) is
 * replayed on real aufs and must succeed, and what the double refuses the
 * kernel refuses with the same errno, so the double cannot drift from the
 * kernel.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { Errno, ErrnoError, MS, systemLibc } from "../ffi/libc.ts";
import { readMountinfo } from "../lib/mounts.ts";
import { HAS_AUFS, IS_ROOT } from "./support/backends.ts";
import { RecordingLibc, splitOptions } from "./support/recording_libc.ts";

const libc = systemLibc();
const LOG = Deno.env.get("STRATA_AUFS_DATA_LOG");
const inCI = Deno.env.get("CI") === "true";

function guestTest(name: string, fn: () => Promise<void> | void, extraIgnore?: string): void {
  const why = !IS_ROOT ? "needs root" : !HAS_AUFS ? "this kernel has no aufs" : extraIgnore;
  Deno.test({ name: `${name}${why ? ` [ignored: ${why}]` : ""}`, ignore: why !== undefined, fn });
}

/** One logged call of the double. */
interface Logged {
  op: "mount" | "remount" | "umount";
  target: string;
  data?: string;
  pageSize: number;
  selinux: boolean;
}

/** Branch paths named by aufs mount data (`br:`, `append:`, `del:`). */
function branchPaths(data: string): string[] {
  const out: string[] = [];
  for (const opt of splitOptions(data)) {
    const m = /^(br|append|del)[:=](.*)$/s.exec(opt);
    if (!m) continue;
    const specs = m[1] === "br" ? m[2].split(":") : [m[2]];
    for (const s of specs) out.push(s.includes("=") ? s.slice(0, s.indexOf("=")) : s);
  }
  return out;
}

function errnoOf(fn: () => void): number | "ok" {
  try {
    fn();
    return "ok";
  } catch (e) {
    if (e instanceof ErrnoError) return e.errno;
    throw e;
  }
}

/** Dirs made for a replay, removed (deepest first) at the end. */
class MadeDirs {
  readonly made: string[] = [];
  ensure(path: string): void {
    const missing: string[] = [];
    for (let p = path; p !== "/"; p = dirname(p)) {
      try {
        Deno.lstatSync(p);
        break;
      } catch {
        missing.unshift(p);
      }
    }
    for (const p of missing) {
      Deno.mkdirSync(p);
      this.made.push(p);
    }
  }
  removeAll(): void {
    for (const p of this.made.reverse()) Deno.removeSync(p, { recursive: true });
  }
}

const logMissing = !LOG ? "no $STRATA_AUFS_DATA_LOG: run through deno task test:aufs" : undefined;
if (logMissing && inCI && HAS_AUFS) throw new Error(`aufs_kernel_test: ${logMissing} (CI=true)`);

/** One mount with its remounts, as the double saw them. */
interface Sequence {
  target: string;
  calls: Logged[];
}

/** Group the log into mount sequences (mount, remounts, until its unmount). */
function sequences(entries: Logged[]): Sequence[] {
  const open = new Map<string, Sequence[]>();
  const all: Sequence[] = [];
  for (const e of entries) {
    const stack = open.get(e.target) ?? [];
    if (e.op === "mount") {
      const seq = { target: e.target, calls: [e] };
      stack.push(seq);
      all.push(seq);
      open.set(e.target, stack);
    } else if (e.op === "remount") {
      stack.at(-1)?.calls.push(e);
    } else {
      stack.pop();
    }
  }
  return all;
}

/**
 * The structure of a sequence: its calls and options in order, branch paths
 * reduced to whether they repeat an earlier one, runs of like branches and of
 * like remounts collapsed. Sequences of one structure differ only in how
 * many branches they stack and how long the paths are; of those the one with
 * the most mount data is replayed (the host suite mounts many like unions:
 * 126-layer chains layer by layer, the same test shape with other ids).
 */
function shape(seq: Sequence): string {
  const seen: string[] = [];
  const path = (p: string) => {
    let i = seen.indexOf(p);
    const fresh = i < 0;
    if (fresh) i = seen.push(p) - 1;
    return fresh ? "<new>" : `<#${i}>`;
  };
  const opt = (o: string) => {
    const m = /^(br|append)([:=])(.*)$/s.exec(o);
    if (!m) return /^(del|xino)[:=]/.test(o) ? o.slice(0, 4) + path(o.slice(4)) : o;
    const specs = m[1] === "br" ? m[3].split(":") : [m[3]];
    return m[1] + m[2] + specs.map((sp) => {
      const eq = sp.indexOf("=");
      return eq < 0 ? path(sp) : path(sp.slice(0, eq)) + sp.slice(eq);
    }).join(":");
  };
  const collapse = (xs: string[]) => xs.filter((x, i) => x !== xs[i - 1]);
  return collapse(seq.calls.map((c) => {
    const opts = collapse(splitOptions(c.data ?? "").map(opt));
    return `${c.op} ${collapse(opts.join(",").split(":")).join(":")}`;
  })).join("\n");
}

const dataBytes = (seq: Sequence) => seq.calls.reduce((n, c) => n + (c.data?.length ?? 0), 0);

guestTest(
  "every aufs mount data string the double accepted in the host suite mounts on real aufs",
  () => {
    const entries: Logged[] = Deno.readTextFileSync(LOG!).split("\n").filter(Boolean)
      .map((l) => JSON.parse(l));
    const pageSize = libc.getpagesize();
    const byShape = new Map<string, Sequence>();
    for (const seq of sequences(entries)) {
      const key = `${seq.calls[0].pageSize} ${shape(seq)}`;
      const kept = byShape.get(key);
      if (!kept || dataBytes(seq) > dataBytes(kept)) byShape.set(key, seq);
    }
    const unique = [...byShape.values()];
    assert.ok(
      unique.length > 10,
      `only ${unique.length} mounts logged: the host prelude did not run`,
    );
    let replayed = 0;
    let otherPage = 0;
    let labelled = 0;
    for (const seq of unique) {
      if (seq.calls[0].pageSize !== pageSize) {
        otherPage++; // data sized for another page size; the kernel here would cut it
        continue;
      }
      const dirs = new MadeDirs();
      let mounted = false;
      try {
        dirs.ensure(seq.target);
        for (const c of seq.calls) {
          let data = c.data!;
          const flags = c.op === "remount" ? MS.REMOUNT : 0n;
          for (const b of branchPaths(data)) dirs.ensure(b);
          if (c.selinux && splitOptions(data).some((o) => o.startsWith("context="))) {
            // The guest kernel has no SELinux: the label must be refused, the rest must mount.
            labelled++;
            assert.equal(
              errnoOf(() => libc.mount("none", seq.target, "aufs", flags, data)),
              Errno.EINVAL,
              `context= without SELinux: ${data}`,
            );
            data = splitOptions(data).filter((o) => !o.startsWith("context=")).join(",");
            if (data === "") continue;
          }
          const got = errnoOf(() => libc.mount("none", seq.target, "aufs", flags, data));
          assert.equal(
            got,
            "ok",
            `${c.op} of ${seq.target} with data the double accepted: ${data}`,
          );
          if (c.op === "mount") mounted = true;
          replayed++;
        }
      } finally {
        if (mounted) libc.umount2(seq.target, 0);
        dirs.removeAll();
      }
    }
    console.log(
      `replayed ${replayed} aufs mount(2) calls of ${unique.length} distinct sequences ` +
        `(${entries.length} logged calls; ${otherPage} sized for another page; ` +
        `${labelled} context= labels refused as a kernel without SELinux does)`,
    );
    assert.ok(replayed > 10);
  },
  logMissing,
);

guestTest(
  "what the double refuses aufs refuses with the same errno (and the one place aufs is laxer)",
  async () => {
    const base = await Deno.makeTempDir({ prefix: "strata-aufs-kernel-" });
    const [a, b, t] = ["a", "b", "t"].map((n) => join(base, n));
    for (const p of [a, b, t]) Deno.mkdirSync(p);
    const x = "xino=/dev/shm/aufs.xino";
    const double = new RecordingLibc({ dataLog: "" });
    const both = (flags: bigint, data: string) => {
      const real = errnoOf(() => {
        libc.mount("none", t, "aufs", flags, data);
        if (!(flags & MS.REMOUNT)) libc.umount2(t, 0);
      });
      const fake = errnoOf(() => {
        double.mount("none", t, "aufs", flags, data);
        if (!(flags & MS.REMOUNT)) double.umount2(t, 0);
      });
      return { real, fake };
    };
    try {
      const refused: [string, number][] = [
        [`br:${a}=rw,frobnicate,${x}`, Errno.EINVAL],
        [`br:${a}=rw,context="system_u:object_r:container_file_t:s0",${x}`, Errno.EINVAL],
        [`br:${a}=rw:${join(base, "missing")}=ro+wh,${x}`, Errno.EINVAL],
        [`br:${a}=rw:${a}=ro+wh,${x}`, Errno.EINVAL],
        [`br:${a}=rw,xino=/nonexistent/x`, Errno.ENOENT],
        [`dio,${x}`, Errno.EINVAL],
      ];
      for (const [data, errno] of refused) {
        assert.deepEqual(both(0n, data), { real: errno, fake: errno }, data);
      }
      // Remounts on a live one-branch union.
      libc.mount("none", t, "aufs", 0n, `br:${a}=rw,${x}`);
      double.mount("none", t, "aufs", 0n, `br:${a}=rw,${x}`);
      try {
        for (
          const [data, errno] of [
            [`append:${a}=ro+wh`, "ok"], // a branch it has: skipped on remount (EINVAL at mount)
            [`del:${b}`, "ok"], // not a branch: ignored on remount
            [`append:${join(base, "missing")}=ro+wh`, Errno.EINVAL],
            ["frobnicate", Errno.EINVAL],
          ] as [string, number | "ok"][]
        ) {
          assert.deepEqual(both(MS.REMOUNT, data), { real: errno, fake: errno }, `remount ${data}`);
        }
        // A remount's br: inserts at the front (the double used to record it as an append).
        assert.deepEqual(both(MS.REMOUNT, `br:${b}=ro`), { real: "ok", fake: "ok" });
        assert.deepEqual(sysfsBranches(t), [`${b}=ro`, `${a}=rw`]);
        assert.deepEqual(double.fakeMount(t)?.branches, [b, a]);
        assert.deepEqual(both(MS.REMOUNT, `del:${b}`), { real: "ok", fake: "ok" });
        assert.deepEqual(sysfsBranches(t), [`${a}=rw`]);
        // aufs takes an unknown branch permission with a warning (as ro); the double refuses it.
        assert.deepEqual(both(MS.REMOUNT, `append:${b}=bogus`), { real: "ok", fake: Errno.EINVAL });
        assert.deepEqual(sysfsBranches(t), [`${a}=rw`, `${b}=ro`]);
      } finally {
        libc.umount2(t, 0);
      }
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
);

/** The branches of the aufs mount at `target` as aufs lists them in sysfs (`path=perm`). */
function sysfsBranches(target: string): string[] {
  const m = readMountinfo().findLast((x) => x.mountPoint === target && x.fsType === "aufs");
  assert.ok(m, `no aufs mount at ${target}`);
  const si = m.superOptions.split(",").find((o) => o.startsWith("si="))!.slice(3);
  const dir = `/sys/fs/aufs/si_${si}`;
  const out: string[] = [];
  for (let i = 0;; i++) {
    try {
      out.push(Deno.readTextFileSync(join(dir, `br${i}`)).trim());
    } catch {
      return out;
    }
  }
}
