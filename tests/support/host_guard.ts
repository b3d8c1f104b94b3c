/**
 * A guard for test modules that aim hostile archives at host paths (`/etc`,
 * `/`, ...): if the extraction's confinement ever regressed, their cases
 * would write into the machine's real files. With the guard, the module's
 * cases run in a child `deno test` inside a private mount namespace whose
 * root is an overlay of the host root on a scratch tmpfs, so every write
 * outside the test's own temp dirs lands in the overlay's upper layer, not
 * on the host. After each case, the upper layer must hold what it held
 * before the case; anything new fails the case and names the path
 * ("escaped to /etc/unbroken").
 *
 * The child's temp dirs (`TMPDIR`) and Deno cache (`DENO_DIR`) live on a
 * second tmpfs, so they are not counted as escapes. `/proc`, `/dev` and
 * `/sys` are the host's (bind mounts): no case aims at them.
 *
 * ```ts
 * import { hostGuard } from "./support/host_guard.ts";
 * const test = hostGuard(import.meta.url);
 * test("a hostile tar stays inside dest", async () => {});
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type EntryInfo, snapshot } from "./extract_fixtures.ts";

/** Set (to "1") in the child: the module is inside the guard. */
export const GUARD_ENV = "STRATA_BREAKOUT_GUARDED";
/** In the child: where the overlay's upper layer is visible (read-only). */
export const GUARD_UPPER_ENV = "STRATA_GUARD_UPPER";

/** Where the scratch tmpfs is mounted inside the guard's root. */
const SCRATCH = "/.strata-guard";
/** The source name of the guard's overlay mount (checked in the child). */
const OVERLAY_SOURCE = "strata-guard";
/** Printed by the setup script just before it starts the child. */
const READY = "strata-guard: ready";

/**
 * Runs in the new mount namespace (`unshare --mount --propagation private`).
 * $1: an empty host dir (the test's own temp dir) that becomes the guard's
 * tmpfs; $2: the working dir; the rest: the command to run in the guard.
 */
const SETUP = `set -eu
g=$1 cwd=$2
shift 2
mount -t tmpfs -o mode=0700 ${OVERLAY_SOURCE} "$g"
mkdir "$g/upper" "$g/work" "$g/root"
mount -t overlay ${OVERLAY_SOURCE} -o "lowerdir=/,upperdir=$g/upper,workdir=$g/work" "$g/root"
for d in proc dev sys; do mount --rbind "/$d" "$g/root/$d"; done
s="$g/root${SCRATCH}"
mkdir "$s"
mount -t tmpfs -o mode=0755 ${OVERLAY_SOURCE}-scratch "$s"
mkdir "$s/upper" "$s/deno" "$s/tmp"
chmod 1777 "$s/tmp"
mount --bind "$g/upper" "$s/upper"
mount -o remount,bind,ro "$s/upper"
echo "${READY}" >&2
exec chroot "$g/root" env -C "$cwd" "$@"
`;

/** A test body, as `Deno.test` takes it. */
export type TestFn = () => void | Promise<void>;

/** Registers one case (like `Deno.test(name, fn)`), guarded. */
export type GuardedTest = (name: string, fn: TestFn) => void;

/**
 * Use in place of `Deno.test` in a module whose cases could write to host
 * paths if confinement broke. Outside the guard, registers one test that
 * reruns `moduleUrl` guarded (and checks that the child passed exactly the
 * cases this module registers); the returned function only counts. Inside
 * (the child), the returned function registers each case with the
 * upper-layer check around it.
 *
 * ```ts
 * import { hostGuard } from "./support/host_guard.ts";
 * const test = hostGuard(import.meta.url);
 * test("symlink to /etc stays inside", () => {});
 * ```
 */
export function hostGuard(moduleUrl: string): GuardedTest {
  if (Deno.env.get(GUARD_ENV) === "1") return insideGuard();
  const names: string[] = [];
  const file = fileURLToPath(moduleUrl);
  const short = file.slice(file.lastIndexOf("/") + 1);
  const name = `guarded run: every case of ${short} in a private overlay of / (host untouched)`;
  const missing = missingTools();
  if (missing.length > 0 && Deno.env.get("CI") !== "true") {
    // One line for the whole run, however many files use the guard.
    if (!toldMissing) {
      console.log(
        `skipping the guarded cases: ${missing.join(" and ")} not found on PATH ` +
          "(util-linux / coreutils; with CI=true this is a failure)",
      );
      toldMissing = true;
    }
    Deno.test({ name, ignore: true, fn: () => {} });
  } else Deno.test(name, () => runGuarded(file, names.length));
  return (name) => {
    names.push(name);
  };
}

// ---- outside: spawn the child ------------------------------------------------

function onPath(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return true;
    } catch {
      // not in this dir
    }
  }
  return false;
}

/** `ok | 12 passed | 0 failed (1s)` → the counts, or null without a summary. */
function parseSummary(out: string): { passed: number; failed: number } | null {
  const m = out.match(/^(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/m);
  return m ? { passed: Number(m[1]), failed: Number(m[2]) } : null;
}

let toldMissing = false;

/** The programs the guard needs that are not on PATH. */
function missingTools(): string[] {
  return ["unshare", "chroot"].filter((c) => !onPath(c));
}

async function runGuarded(file: string, expected: number): Promise<void> {
  const missing = missingTools();
  if (missing.length > 0) {
    throw new Error(
      `the breakout cases need ${missing.join(" and ")} (util-linux / coreutils) to run ` +
        `inside a private mount namespace; not found on PATH, so they did not run`,
    );
  }
  const g = await Deno.makeTempDir({ prefix: "strata-guard-" });
  try {
    assert.doesNotMatch(g, /[,:=\\\s]/, `temp dir ${g} cannot be an overlay option`);
    const out = await new Deno.Command("unshare", {
      args: [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SETUP,
        "strata-guard",
        g,
        Deno.cwd(),
        Deno.execPath(),
        "test",
        "--allow-all",
        "--no-prompt",
        "--no-check", // the parent run already type-checked this module
        file,
      ],
      env: {
        [GUARD_ENV]: "1",
        [GUARD_UPPER_ENV]: `${SCRATCH}/upper`,
        DENO_DIR: `${SCRATCH}/deno`,
        TMPDIR: `${SCRATCH}/tmp`,
        NO_COLOR: "1",
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    // Forward the child's report (which cases ran, and any failure's detail).
    console.log(stdout);
    if (stderr.trim() !== "") console.error(stderr);
    if (!stderr.includes(READY)) {
      throw new Error(`could not set up the mount-namespace guard (exit ${out.code}): ${stderr}`);
    }
    const sum = parseSummary(stdout);
    assert.ok(sum, `the guarded child printed no test summary (exit ${out.code})`);
    const escaped = new Set(stdout.match(/escaped to [^:\n]+/g) ?? []);
    assert.equal(
      sum.failed,
      0,
      `${sum.failed} guarded case(s) failed (see the output above)` +
        (escaped.size > 0 ? `; the guard caught: ${[...escaped].join("; ")}` : ""),
    );
    assert.equal(out.code, 0, `the guarded child exited ${out.code}`);
    assert.equal(
      sum.passed,
      expected,
      `the guarded child ran ${sum.passed} cases, not ${expected}`,
    );
  } finally {
    // Empty on the host: the tmpfs on it lived only in the child's namespace.
    await Deno.remove(g);
  }
}

// ---- inside: check the upper layer around each case ---------------------------

/** Refuse to run hostile cases if the environment says "guarded" but / is not the guard. */
function assertInsideGuard(upper: string): void {
  const root = Deno.readTextFileSync("/proc/self/mountinfo").split("\n").find((l) => {
    const f = l.split(" ");
    const sep = f.indexOf("-");
    return f[4] === "/" && f[sep + 1] === "overlay" && f[sep + 2] === OVERLAY_SOURCE;
  });
  let upperIsDir = false;
  try {
    upperIsDir = upper !== "" && Deno.statSync(upper).isDirectory;
  } catch {
    // missing: not the guard
  }
  if (!root || !upperIsDir) {
    throw new Error(
      `${GUARD_ENV}=1 but / is not the guard's overlay (or ${GUARD_UPPER_ENV}="${upper}" is ` +
        `not a directory): ` +
        `refusing to run the breakout cases unguarded`,
    );
  }
}

/** What changed in the upper layer, as host paths (empty: nothing escaped). */
function escapes(before: Map<string, EntryInfo>, after: Map<string, EntryInfo>): string[] {
  const out: string[] = [];
  const added = [...after.keys()].filter((k) => !before.has(k));
  for (const k of added) {
    const e = after.get(k)!;
    // A copied-up directory on the way to a reported entry adds nothing to the report.
    if (e.type === "dir" && added.some((o) => o.startsWith(`${k}/`))) continue;
    // An overlay whiteout (a 0:0 character device) is a deleted host entry.
    out.push(e.type === "other" ? `/${k} (deleted)` : `/${k} (${e.type})`);
  }
  for (const [k, b] of before) {
    const a = after.get(k);
    if (k === "") continue; // the upper's root: its times follow its entries
    if (!a) out.push(`/${k} (removed)`);
    else if (a.type !== "dir" ? JSON.stringify(a) !== JSON.stringify(b) : a.mode !== b.mode) {
      out.push(`/${k} (changed)`);
    } else if (a.uid !== b.uid || a.gid !== b.gid) out.push(`/${k} (owner changed)`);
  }
  return out;
}

function insideGuard(): GuardedTest {
  const upper = Deno.env.get(GUARD_UPPER_ENV) ?? "";
  assertInsideGuard(upper);
  // Seeded by the setup: only the scratch mount point. Anything else was
  // written before the first case (by module-level code).
  const seeded = new Set(["", SCRATCH.slice(1)]);
  const early = [...snapshot(upper).keys()].filter((k) => !seeded.has(k));
  if (early.length > 0) {
    throw new Error(`escaped to /${early.join(", /")} before the first case (module code?)`);
  }
  return (name, fn) =>
    Deno.test(name, async () => {
      const before = snapshot(upper);
      let failure: unknown = null;
      try {
        await fn();
      } catch (e) {
        failure = e;
      }
      const escaped = escapes(before, snapshot(upper));
      if (escaped.length > 0) {
        throw new Error(
          `escaped to ${escaped.join(", ")}: written outside the test's temp dirs ` +
            `(caught by the guard's overlay; the host is untouched)`,
          { cause: failure ?? undefined },
        );
      }
      if (failure !== null) throw failure;
    });
}
