/**
 * Hostile archives: the seed's TestApplyLayerInvalidFilenames /
 * InvalidHardlink / InvalidSymlink (§8.3), every case of containerd's
 * TestBreakouts (archive/tar_test.go), and malformed input. Each runs under
 * both resolvers, and asserts that nothing outside the destination changed
 * and that the destination can be removed by a plain recursive remove.
 *
 * The cases aim at host paths (`/etc`, `/`), so they run guarded: this
 * module, run directly, registers one test that reruns it in a private mount
 * namespace over a scratch overlay of `/` (tests/support/host_guard.ts); an
 * escape then fails the case ("escaped to /etc/unbroken") instead of
 * writing to the host.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { AT, Errno, errnoOf, O, RESOLVE, type Stat, systemLibc } from "../ffi/libc.ts";
import { applyLayer } from "../lib/archive/apply_layer.ts";
import { ExtractError, InvalidArchiveError } from "../lib/archive/extract.ts";
import { untar } from "../lib/archive/untar.ts";
import { TarFormatError } from "../lib/archive/tar_reader.ts";
import {
  checksum,
  dir,
  type EntrySpec,
  file,
  filesWithContent,
  link,
  makeSandbox,
  RESOLVERS,
  type Sandbox,
  streamOf,
  symlink,
  tarOf,
  TarType,
} from "./support/extract_fixtures.ts";
import { hostGuard } from "./support/host_guard.ts";

/** Every case goes through the guard (never plain `Deno.test`). */
const test = hostGuard(import.meta.url);

const libc = systemLibc();

type Extract = (
  tar: ReadableStream<Uint8Array>,
  dest: string,
  forceFallback: boolean,
) => Promise<unknown>;

const EXTRACTORS: { name: string; run: Extract }[] = [
  { name: "untar", run: (t, d, f) => untar(t, d, { forceFallback: f }) },
  { name: "applyLayer", run: (t, d, f) => applyLayer(t, d, { forceFallback: f }) },
];

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/** Run one extraction; returns the error (an ExtractError) or null. */
async function attempt(run: () => Promise<unknown>): Promise<ExtractError | null> {
  try {
    await run();
    return null;
  } catch (e) {
    if (!(e instanceof ExtractError)) throw e;
    return e;
  }
}

async function finish(sb: Sandbox): Promise<void> {
  try {
    sb.assertOutsideUnchanged();
    await Deno.remove(sb.dest, { recursive: true });
  } finally {
    await sb.cleanup();
  }
}

// ---- the seed's §8.3 cases ---------------------------------------------------

const SEED_CASES: Record<string, EntrySpec[][]> = {
  InvalidFilenames: [
    [file("../victim/dotdot")],
    [file("/../victim/slash-dotdot")],
  ],
  InvalidHardlink: [
    [link("../victim/hello", "dotdot")],
    [link("/../victim/hello", "slash-dotdot")],
    [link("../victim", "loophole-victim", 0o755), file("loophole-victim/file")],
    [link("../victim", "loophole-victim", 0o755), symlink("loophole-victim/hello", "symlink")],
    [link("../victim", "loophole-victim", 0o755), link("loophole-victim/hello", "hardlink")],
    [link("../victim", "loophole-victim", 0o755), file("loophole-victim")],
  ],
  InvalidSymlink: [
    [symlink("../victim/hello", "dotdot")],
    [symlink("/../victim/hello", "slash-dotdot")],
    [symlink("../victim", "loophole-victim"), file("loophole-victim/file")],
    [symlink("../victim", "loophole-victim"), symlink("loophole-victim/hello", "symlink")],
    [symlink("../victim", "loophole-victim"), link("loophole-victim/hello", "hardlink")],
    [symlink("../victim", "loophole-victim"), file("loophole-victim")],
  ],
};

for (const [group, cases] of Object.entries(SEED_CASES)) {
  for (const ex of EXTRACTORS) {
    for (const r of RESOLVERS) {
      test(`seed TestApplyLayer${group} (${ex.name}, ${r.name}): victim untouched`, async () => {
        for (const [i, headers] of cases.entries()) {
          const sb = await makeSandbox();
          try {
            const err = await attempt(() =>
              ex.run(streamOf(tarOf(headers)), sb.dest, r.forceFallback)
            );
            // A typed error is acceptable (a hard link to a missing in-root name).
            if (err) assert.ok(err.cause instanceof Error, `case ${i}: ${err.message}`);
            assert.deepEqual(filesWithContent(sb.dest, sb.hello), [], `case ${i}`);
          } finally {
            await finish(sb);
          }
        }
      });
    }
  }
}

test("seed cases: ../victim/x lands inside dest, as in the chroot", async () => {
  for (const r of RESOLVERS) {
    const sb = await makeSandbox();
    try {
      await untar(streamOf(tarOf([file("../victim/dotdot", "x")])), sb.dest, r);
      assert.equal(Deno.readTextFileSync(join(sb.dest, "victim", "dotdot")), "x");
    } finally {
      await finish(sb);
    }
  }
});

// ---- containerd TestBreakouts --------------------------------------------------

/** stat of `p` resolved inside `root` (symlinks followed, in the root). */
function rootStat(root: string, p: string): Stat {
  const rfd = libc.openat(AT.FDCWD, root, O.PATH | O.DIRECTORY);
  try {
    const fd = libc.openat2(rfd, p, O.PATH, 0, RESOLVE.IN_ROOT);
    try {
      return libc.fstat(fd);
    } finally {
      libc.close(fd);
    }
  } finally {
    libc.close(rfd);
  }
}

type Validator = (root: string) => void;

const EXPECTED = "unbroken";
const unbrokenCheck: Validator = (root) =>
  assert.equal(Deno.readTextFileSync(join(root, "etc", "unbroken")), EXPECTED);
const sameFile = (a: string, b: string): Validator => (root) => {
  const sa = rootStat(root, a), sb = rootStat(root, b);
  assert.ok(sa.ino === sb.ino && sa.devMajor === sb.devMajor, `${a} and ${b} differ`);
};
const notSameFile = (a: string, b: string): Validator => (root) => {
  assert.notEqual(rootStat(root, a).ino, rootStat(root, b).ino, `${a} and ${b} are the same`);
};
const isSymlink = (p: string, root: string) =>
  assert.ok(Deno.lstatSync(join(root, p)).isSymlink, `${p} should be a symlink`);
const sameSymlinkFile = (a: string, b: string): Validator => (root) => {
  isSymlink(a, root);
  isSymlink(b, root);
  assert.equal(Deno.readLinkSync(join(root, a)), Deno.readLinkSync(join(root, b)));
};
const fileValue = (p: string, content: string): Validator => (root) =>
  assert.equal(Deno.readTextFileSync(join(root, p)), content);
const fileNotExists = (p: string): Validator => (root) =>
  assert.throws(() => Deno.lstatSync(join(root, p)), Deno.errors.NotFound);
const all = (...vs: Validator[]): Validator => (root) => vs.forEach((v) => v(root));

interface Breakout {
  name: string;
  /** Prepares dest before extraction (containerd's fstest appliers). */
  apply?: (root: string, sb: Sandbox) => void;
  /** The archive (may depend on the sandbox's paths). */
  w: (sb: Sandbox) => EntrySpec[];
  validator?: Validator | ((root: string, sb: Sandbox) => void);
  /** The extraction must fail with this cause type (applyLayer). */
  err?: typeof InvalidArchiveError;
  /**
   * The extraction must fail with this errno: where containerd's lexical
   * resolver succeeds but the kernel (like the seed's chroot) cannot resolve.
   */
  errno?: number;
  /** Has whiteout semantics: only applyLayer validates it. */
  whiteout?: boolean;
}

const w = (...e: EntrySpec[]) => (_sb: Sandbox) => e;
const etcPasswd = (root: string, content = "inside") => {
  Deno.mkdirSync(join(root, "etc"), { mode: 0o755 });
  Deno.writeTextFileSync(join(root, "etc", "passwd"), content);
};

const BREAKOUTS: Breakout[] = [
  {
    name: "SymlinkAbsolute",
    w: w(dir("etc"), symlink("/etc", "localetc"), file("/localetc/unbroken", EXPECTED)),
    validator: unbrokenCheck,
  },
  {
    name: "SymlinkUpAndOut",
    w: w(
      dir("etc"),
      dir("dummy"),
      symlink("/dummy/../etc", "localetc"),
      file("/localetc/unbroken", EXPECTED),
    ),
    validator: unbrokenCheck,
  },
  {
    name: "SymlinkMultipleAbsolute",
    w: w(
      dir("etc"),
      dir("dummy"),
      symlink("/etc", "/dummy/etc"),
      symlink("/dummy/etc", "localetc"),
      file("/dummy/etc/unbroken", EXPECTED),
    ),
    validator: unbrokenCheck,
  },
  {
    name: "SymlinkMultipleRelative",
    w: w(
      dir("etc"),
      dir("dummy"),
      symlink("/etc", "/dummy/etc"),
      symlink("./dummy/etc", "localetc"),
      file("/dummy/etc/unbroken", EXPECTED),
    ),
    validator: unbrokenCheck,
  },
  {
    name: "SymlinkEmptyFile",
    w: w(
      dir("etc"),
      file("etc/emptied", "notempty"),
      symlink("/etc", "localetc"),
      file("/localetc/emptied", ""),
    ),
    validator: fileValue("etc/emptied", ""),
  },
  {
    name: "HardlinkRelative",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      dir("breakouts"),
      symlink("../../etc", "breakouts/d1"),
      link("/breakouts/d1/passwd", "breakouts/mypasswd"),
    ),
    validator: sameFile("/breakouts/mypasswd", "/etc/passwd"),
  },
  {
    name: "HardlinkDownAndOut",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      dir("breakouts"),
      dir("downandout"),
      symlink("../downandout/../../etc", "breakouts/d1"),
      link("/breakouts/d1/passwd", "breakouts/mypasswd"),
    ),
    validator: sameFile("/breakouts/mypasswd", "/etc/passwd"),
  },
  {
    name: "HardlinkAbsolute",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("/etc", "localetc"),
      link("/localetc/passwd", "localpasswd"),
    ),
    validator: sameFile("localpasswd", "/etc/passwd"),
  },
  {
    name: "HardlinkRelativeLong",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("../../../../../../../etc", "localetc"),
      link("/localetc/passwd", "localpasswd"),
    ),
    validator: sameFile("localpasswd", "/etc/passwd"),
  },
  {
    // containerd cleans "upandout/../../../etc" lexically and links /etc/passwd;
    // the kernel (as the seed's chroot) cannot go through the missing
    // "upandout": ENOENT, a typed error, nothing outside touched.
    name: "HardlinkRelativeUpAndOut",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("upandout/../../../etc", "localetc"),
      link("/localetc/passwd", "localpasswd"),
    ),
    errno: Errno.ENOENT,
  },
  {
    name: "HardlinkDirectRelative",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      link("../../../../../etc/passwd", "localpasswd"),
    ),
    validator: sameFile("localpasswd", "/etc/passwd"),
  },
  {
    name: "HardlinkDirectAbsolute",
    w: w(dir("etc", 0o770), file("/etc/passwd", "inside"), link("/etc/passwd", "localpasswd")),
    validator: sameFile("localpasswd", "/etc/passwd"),
  },
  {
    name: "SymlinkParentDirectory",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("/etc/", ".."),
      link("/etc/passwd", "localpasswd"),
    ),
    validator: sameFile("/localpasswd", "/etc/passwd"),
  },
  {
    name: "SymlinkEmptyFilename",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("/etc/", ""),
      link("/etc/passwd", "localpasswd"),
    ),
    validator: sameFile("/localpasswd", "/etc/passwd"),
  },
  {
    name: "SymlinkParentRelative",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("/etc/", "localetc/sub/.."),
      link("/etc/passwd", "/localetc/localpasswd"),
    ),
    validator: sameFile("/localetc/localpasswd", "/etc/passwd"),
  },
  {
    name: "SymlinkSlashEnded",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      dir("localetc/", 0o770),
      link("/etc/passwd", "/localetc/localpasswd"),
    ),
    validator: sameFile("/localetc/localpasswd", "/etc/passwd"),
  },
  {
    name: "SymlinkOverrideDirectory",
    apply: (root) => {
      etcPasswd(root);
      Deno.mkdirSync(join(root, "localetc"));
    },
    w: w(symlink("/etc", "localetc"), link("/etc/passwd", "/localetc/localpasswd")),
    validator: sameFile("/localetc/localpasswd", "/etc/passwd"),
  },
  {
    name: "SymlinkOverrideDirectoryRelative",
    apply: (root) => {
      etcPasswd(root);
      Deno.mkdirSync(join(root, "localetc"));
    },
    w: w(symlink("../../etc", "localetc"), link("/etc/passwd", "/localetc/localpasswd")),
    validator: sameFile("/localetc/localpasswd", "/etc/passwd"),
  },
  {
    name: "DirectoryOverrideSymlink",
    apply: (root) => {
      etcPasswd(root);
      Deno.symlinkSync("/etc", join(root, "localetc"));
    },
    w: w(dir("/localetc/"), link("/etc/passwd", "/localetc/localpasswd")),
    validator: sameFile("/localetc/localpasswd", "/etc/passwd"),
  },
  {
    name: "DirectoryOverrideSymlinkAndHardlink",
    apply: (root) => {
      etcPasswd(root);
      Deno.symlinkSync("etc", join(root, "localetc"));
      Deno.linkSync(join(root, "etc", "passwd"), join(root, "etc", "localpasswd"));
    },
    w: w(dir("/localetc/"), file("/localetc/localpasswd", "different")),
    validator: notSameFile("/localetc/localpasswd", "/etc/passwd"),
  },
  {
    name: "WhiteoutRootParent",
    apply: (root) => etcPasswd(root),
    w: w(file(".wh...")),
    err: InvalidArchiveError,
    whiteout: true,
  },
  {
    name: "WhiteoutParent",
    apply: (root) => etcPasswd(root),
    w: w(file("etc/.wh...")),
    err: InvalidArchiveError,
    whiteout: true,
  },
  {
    name: "WhiteoutRoot",
    apply: (root) => etcPasswd(root),
    w: w(file(".wh..")),
    err: InvalidArchiveError,
    whiteout: true,
  },
  {
    name: "WhiteoutCurrentDirectory",
    apply: (root) => etcPasswd(root),
    w: w(file("etc/.wh..")),
    err: InvalidArchiveError,
    whiteout: true,
  },
  {
    name: "WhiteoutSymlink",
    apply: (root) => {
      etcPasswd(root, "all users");
      Deno.symlinkSync("/etc", join(root, "localetc"));
    },
    w: w(file(".wh.localetc")),
    validator: all(fileValue("etc/passwd", "all users"), fileNotExists("localetc")),
    whiteout: true,
  },
  {
    name: "WhiteoutSymlinkPath",
    apply: (root) => {
      etcPasswd(root, "all users");
      Deno.writeTextFileSync(join(root, "etc", "whitedout"), "ahhhh whiteout");
      Deno.symlinkSync("/etc", join(root, "localetc"));
    },
    w: w(file("localetc/.wh.whitedout")),
    validator: all(fileValue("etc/passwd", "all users"), fileNotExists("etc/whitedout")),
    whiteout: true,
  },
  {
    name: "WhiteoutDirectoryName",
    apply: (root) => {
      etcPasswd(root, "all users");
      Deno.writeTextFileSync(join(root, "etc", "whitedout"), "ahhhh whiteout");
      Deno.symlinkSync("/etc", join(root, "localetc"));
    },
    w: w(file(".wh.etc/somefile", "non-empty")),
    validator: all(
      fileValue("etc/passwd", "all users"),
      fileValue(".wh.etc/somefile", "non-empty"),
    ),
    whiteout: true,
  },
  {
    name: "WhiteoutDeadSymlinkParent",
    apply: (root) => {
      etcPasswd(root, "all users");
      Deno.symlinkSync("/dne", join(root, "localetc"));
    },
    w: w(file("localetc/.wh.etc")),
    validator: fileValue("etc/passwd", "all users"),
    whiteout: true,
  },
  {
    name: "WhiteoutRelativePath",
    apply: (root) => {
      etcPasswd(root, "all users");
      Deno.symlinkSync("/dne", join(root, "localetc"));
    },
    w: w(file("dne/../.wh.etc")),
    validator: fileNotExists("etc/passwd"),
    whiteout: true,
  },
  {
    name: "HardlinkSymlinkBeforeCreateTarget",
    w: w(
      dir("etc", 0o770),
      symlink("/etc/passwd", "localpasswd"),
      link("localpasswd", "localpasswd-dup"),
      file("/etc/passwd", "after"),
    ),
    validator: sameFile("localpasswd-dup", "/etc/passwd"),
  },
  {
    name: "HardlinkSymlinkRelative",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("../../../../../etc/passwd", "passwdlink"),
      link("/passwdlink", "localpasswd"),
    ),
    validator: all(
      sameSymlinkFile("/localpasswd", "/passwdlink"),
      sameFile("/localpasswd", "/etc/passwd"),
    ),
  },
  {
    name: "HardlinkSymlinkAbsolute",
    w: w(
      dir("etc", 0o770),
      file("/etc/passwd", "inside"),
      symlink("/etc/passwd", "passwdlink"),
      link("/passwdlink", "localpasswd"),
    ),
    validator: all(
      sameSymlinkFile("/localpasswd", "/passwdlink"),
      sameFile("/localpasswd", "/etc/passwd"),
    ),
  },
  {
    name: "HardlinkSymlinkChmod",
    w: (sb) => {
      // perm400 and also-exists-outside-root live outside dest (in the victim dir).
      const p = join(sb.victim, "perm400");
      const ep = join(sb.victim, "also-exists-outside-root");
      return [symlink(p, ep), link(ep, "sketchylink")];
    },
    validator: (_root, sb) => {
      const st = Deno.lstatSync(join(sb.victim, "perm400"));
      assert.equal(st.mode! & 0o777, 0o400);
    },
  },
];

/** HardlinkSymlinkChmod needs two files outside dest (in the victim dir, so snapshotted). */
function sandboxFor(bo: Breakout): Promise<Sandbox> {
  if (bo.name !== "HardlinkSymlinkChmod") return makeSandbox();
  return makeSandbox((victim) => {
    Deno.writeTextFileSync(join(victim, "perm400"), "...");
    Deno.chmodSync(join(victim, "perm400"), 0o400);
    Deno.writeTextFileSync(join(victim, "also-exists-outside-root"), "...");
    Deno.chmodSync(join(victim, "also-exists-outside-root"), 0o640);
  });
}

for (const bo of BREAKOUTS) {
  for (const ex of EXTRACTORS) {
    if (bo.whiteout && ex.name === "untar") continue;
    for (const r of RESOLVERS) {
      test(`containerd TestBreakouts/${bo.name} (${ex.name}, ${r.name})`, async () => {
        const sb = await sandboxFor(bo);
        try {
          bo.apply?.(sb.dest, sb);
          const fds = openFds();
          const err = await attempt(() =>
            ex.run(streamOf(tarOf(bo.w(sb)), 700), sb.dest, r.forceFallback)
          );
          assert.equal(openFds(), fds, "descriptors leaked");
          if (bo.err) {
            assert.ok(err, "expected an error");
            assert.ok(err.cause instanceof bo.err, `cause: ${err.cause}`);
          } else if (bo.errno !== undefined) {
            assert.ok(err, "expected an error");
            assert.equal(errnoOf(err.cause), bo.errno, err.message);
          } else {
            assert.equal(err, null, err?.message);
            bo.validator?.(sb.dest, sb);
          }
        } finally {
          await finish(sb);
        }
      });
    }
  }
}

// Whiteout cases through untar: literal files, nothing outside touched.
for (const r of RESOLVERS) {
  test(`containerd whiteout breakouts through untar are literal files (${r.name})`, async () => {
    for (const bo of BREAKOUTS.filter((b) => b.whiteout)) {
      const sb = await makeSandbox();
      try {
        bo.apply?.(sb.dest, sb);
        const err = await attempt(() => untar(streamOf(tarOf(bo.w(sb))), sb.dest, r));
        const name = bo.w(sb)[0].name as string;
        if (bo.name === "WhiteoutDeadSymlinkParent") {
          // The parent is a dangling symlink: nothing can be created below it.
          assert.equal(errnoOf(err?.cause), Errno.ENOENT, err?.message);
        } else {
          assert.equal(err, null, err?.message);
          assert.ok(rootStat(sb.dest, join("/", name)), `${bo.name}: ${name} should exist`);
        }
      } finally {
        await finish(sb);
      }
    }
  });
}

// ---- malformed input -----------------------------------------------------------

const good = tarOf([dir("a"), file("a/f", "x".repeat(1000)), file("b", "y")]);

function withChecksumBroken(t: Uint8Array): Uint8Array {
  const out = t.slice();
  out[600] ^= 0x01; // inside the second header block's name: checksum no longer matches
  return out;
}

function withHugeSize(): Uint8Array {
  const t = tarOf([file("big", "")]).slice();
  // size field: 11 octal digits of 7s (8 GiB - 1); the archive ends long before.
  const size = "77777777777";
  for (let i = 0; i < 11; i++) t[124 + i] = size.charCodeAt(i);
  checksum(t);
  return t;
}

const MALFORMED: { name: string; bytes: () => Uint8Array }[] = [
  { name: "garbage", bytes: () => crypto.getRandomValues(new Uint8Array(4096)) },
  { name: "text", bytes: () => new TextEncoder().encode("this is not a tar archive\n".repeat(40)) },
  { name: "truncated body", bytes: () => good.subarray(0, 512 + 512 + 700) },
  { name: "truncated header", bytes: () => good.subarray(0, 512 + 300) },
  { name: "bad checksum", bytes: () => withChecksumBroken(good) },
  { name: "huge size", bytes: withHugeSize },
  {
    name: "sparse entry",
    bytes: () => {
      const t = tarOf([{ name: "sparse", type: TarType.REG, mode: 0o644 }]).slice();
      t[156] = TarType.GNU_SPARSE;
      checksum(t);
      return t;
    },
  },
];

for (const m of MALFORMED) {
  for (const ex of EXTRACTORS) {
    for (const r of RESOLVERS) {
      test(`malformed tar (${m.name}) → typed error, dest removable (${ex.name}, ${r.name})`, async () => {
        const sb = await makeSandbox();
        try {
          const fds = openFds();
          const err = await attempt(() =>
            ex.run(streamOf(m.bytes(), 333), sb.dest, r.forceFallback)
          );
          assert.ok(err, "expected an error");
          assert.equal(openFds(), fds, "descriptors leaked");
          assert.ok(err.cause instanceof TarFormatError, `cause: ${err.cause}`);
          assert.match(err.message, new RegExp(`into ${sb.dest}: `));
        } finally {
          await finish(sb);
        }
      });
    }
  }
}
