/**
 * A seeded generator of adversarial layer tars, and a runner that extracts
 * them next to a victim tree and checks the extraction's promises: nothing
 * outside the destination changes, every failure is a typed
 * `ExtractError` (with an errno, tar-format, invalid-archive or id-map
 * cause), no descriptor leaks, and the destination is removable by a plain
 * recursive remove. Used by tests/fuzz_untar_test.ts (hundreds of cases)
 * and bench/fuzz_untar.ts (100k).
 *
 * Escapes are aimed at the victim (relative climbs of at most one level
 * above the destination, absolute paths under the sandbox), so a broken
 * confinement would damage only the sandbox.
 *
 * @module
 */

import { mulberry32 } from "./rng.ts";
import { join } from "node:path";
import { AT, ErrnoError, O, S, systemLibc } from "../../ffi/libc.ts";
import { applyLayer } from "../../lib/archive/apply_layer.ts";
import { ExtractError, InvalidArchiveError } from "../../lib/archive/extract.ts";
import { IdMapError } from "../../lib/archive/idmap.ts";
import { TarFormatError } from "../../lib/archive/tar_reader.ts";
import { TarType } from "../../lib/archive/tar_header.ts";
import { untar } from "../../lib/archive/untar.ts";
import { END_OF_ARCHIVE } from "../../lib/archive/tar_writer.ts";
import {
  checksum,
  concat,
  diffSnapshots,
  entryBytes,
  type EntrySpec,
  snapshot,
  streamOf,
} from "./extract_fixtures.ts";

/** mulberry32: a small seeded PRNG. */
export const prng: (seed: number) => () => number = mulberry32;

const COMPONENTS = [
  "a",
  "b",
  "c",
  "..",
  ".",
  "",
  "etc",
  "victim",
  "hello",
  ".wh.a",
  ".wh.b",
  ".wh.hello",
  ".wh.victim",
  ".wh..wh..opq",
  ".wh..wh.plnk",
  ".wh..wh.aufs",
  "..gitme",
  "x y",
  "ü",
  "L".repeat(200),
];

/** Components that make most archives fail early: rarer. */
const RARE_COMPONENTS = [".wh.", ".wh..", ".wh..."];

/** One generated case: the archive and how to extract it. */
export interface FuzzCase {
  bytes: Uint8Array;
  apply: boolean;
  overlay: boolean;
  forceFallback: boolean;
  chunk: number;
  /** A byte stream (read with BYOB) or a plain one. */
  byteStream: boolean;
  maps: boolean;
  /** A readable list of the entries, for failure reports. */
  summary: string;
}

/** Generate case number `i` of the run seeded `seed`, aimed at `sandbox/victim`. */
export function generateCase(seed: number, i: number, sandbox: string): FuzzCase {
  const rnd = prng(seed * 1000003 + i);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
  const chance = (p: number) => rnd() < p;
  const victimAbs = join(sandbox, "victim");
  const destAbs = join(sandbox, "dest");

  const names: string[] = [];
  /** Names of the symlinks and hard links made so far: later entries go through them. */
  const links: string[] = [];
  const name = (): string => {
    if (links.length > 0 && chance(0.3)) return pick(links) + "/" + pick(COMPONENTS);
    if (names.length > 0 && chance(0.25)) return pick(names);
    // Below an earlier entry: through the symlinks the archive made.
    if (names.length > 0 && chance(0.4)) return pick(names) + "/" + pick(COMPONENTS);
    const depth = 1 + Math.floor(rnd() * 4);
    const parts: string[] = [];
    for (let k = 0; k < depth; k++) {
      parts.push(chance(0.02) ? pick(RARE_COMPONENTS) : pick(COMPONENTS));
    }
    let n = parts.join("/");
    if (chance(0.15)) n = "/" + n;
    if (chance(0.1)) n = "../" + n;
    if (chance(0.05)) n += "/";
    return n;
  };
  const depthOf = (n: string) => n.split("/").filter((c) => c && c !== ".").length;
  const target = (at: string): string => {
    const up = "../".repeat(Math.max(0, depthOf(at) - 1) + 1); // at most one level above dest
    if (chance(0.5)) {
      // Aimed out of dest: the case a broken confinement would act on.
      return pick([up + "victim", up + "victim/sub", victimAbs, victimAbs + "/sub"]);
    }
    return pick([
      () => pick(names.length ? names : ["a"]),
      () => up + "victim",
      () => up + "victim/hello",
      () => up + "victim/sub",
      () => victimAbs,
      () => victimAbs + "/hello",
      () => destAbs + "/a",
      () => destAbs + "/" + pick(names.length ? names : ["a"]),
      () => at, // a loop onto itself
      () => "..",
      () => ".",
      () => "a/../../victim",
      () => "",
    ])();
  };

  const specs: EntrySpec[] = [];
  const count = 1 + Math.floor(rnd() * 12);
  for (let k = 0; k < count; k++) {
    const n = name();
    names.push(n);
    const type = chance(0.01) ? 0x5a /* unknown */ : pick([
      TarType.REG,
      TarType.REG,
      TarType.REG,
      TarType.DIR,
      TarType.DIR,
      TarType.SYMLINK,
      TarType.SYMLINK,
      TarType.LINK,
      TarType.LINK,
      TarType.FIFO,
      TarType.CHR,
      TarType.CONT,
    ]);
    const spec: EntrySpec = {
      name: n,
      type,
      mode: chance(0.2) ? Math.floor(rnd() * 0o10000) : pick([0o644, 0o755, 0o600, 0o4755]),
      uid: chance(0.8) ? 0 : Math.floor(rnd() * 70000),
      gid: chance(0.8) ? 0 : Math.floor(rnd() * 70000),
      mtimeSec: chance(0.1) ? -Math.floor(rnd() * 1e6) : Math.floor(rnd() * 2e9),
    };
    if (type === TarType.SYMLINK || type === TarType.LINK) {
      spec.linkname = target(n);
      links.push(n);
    }
    if (type === TarType.CHR) Object.assign(spec, { devmajor: 1, devminor: 3 });
    if (type === TarType.REG || type === TarType.CONT) {
      spec.body = chance(0.5) ? "" : "x".repeat(Math.floor(rnd() * 3000));
    }
    if (chance(0.05)) spec.xattrs = new Map([["user.fuzz", new Uint8Array([1, 2])]]);
    if (chance(0.05)) spec.pax = { atime: String(Math.floor(rnd() * 2e9)) };
    specs.push(spec);
  }
  let bytes: Uint8Array;
  try {
    bytes = concat([...specs.map(entryBytes), END_OF_ARCHIVE]);
  } catch {
    // A header the encoder refuses (e.g. a file name ending in "/"): make it a dir.
    bytes = concat([
      ...specs.map((s) => {
        try {
          return entryBytes(s);
        } catch {
          return entryBytes({ name: String(s.name), type: TarType.DIR, mode: 0o755 });
        }
      }),
      END_OF_ARCHIVE,
    ]);
  }
  if (chance(0.05)) bytes = bytes.subarray(0, Math.floor(rnd() * bytes.length));
  else if (chance(0.04)) {
    bytes = bytes.slice();
    bytes[Math.floor(rnd() * bytes.length)] ^= 1 << Math.floor(rnd() * 8);
  } else if (chance(0.02)) {
    // A huge size field with a valid checksum.
    bytes = bytes.slice();
    const size = "77777777777";
    for (let k = 0; k < 11; k++) bytes[124 + k] = size.charCodeAt(k);
    checksum(bytes);
  }
  return {
    bytes,
    apply: chance(0.6),
    overlay: chance(0.15),
    forceFallback: chance(0.5),
    chunk: pick([1 << 20, 512, 100, 4096, 7]),
    maps: chance(0.1),
    byteStream: chance(0.5),
    summary: specs.map((s) =>
      `${String.fromCharCode(s.type ?? 0x30)} ${JSON.stringify(String(s.name))}` +
      (s.linkname !== undefined ? ` -> ${JSON.stringify(String(s.linkname))}` : "")
    ).join("; "),
  };
}

/** What the victim's files hold: no archive body can produce it. */
const VICTIM_CONTENT = "VICTIM";
const VICTIM_BYTES = new TextEncoder().encode(VICTIM_CONTENT);

/** Whether any regular file below `dir` holds exactly `needle` (byte-exact names, no following). */
function holdsContent(dir: string, needle: Uint8Array): boolean {
  const libc = systemLibc();
  let top: number;
  try {
    top = libc.openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
  } catch {
    return false;
  }
  const buf = new Uint8Array(needle.length + 1);
  const visit = (fd: number): boolean => {
    for (const e of libc.readdir(fd)) {
      const st = libc.fstatat(fd, e.name, AT.SYMLINK_NOFOLLOW);
      const type = st.mode & S.IFMT;
      if (type === S.IFREG && st.size === needle.length) {
        const f = libc.openat(fd, e.name, O.RDONLY | O.NOFOLLOW);
        try {
          const n = libc.read(f, buf);
          if (n === needle.length && needle.every((b, i) => buf[i] === b)) return true;
        } finally {
          libc.close(f);
        }
      } else if (type === S.IFDIR) {
        const d = libc.openat(fd, e.name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
        try {
          if (visit(d)) return true;
        } finally {
          libc.close(d);
        }
      }
    }
    return false;
  };
  try {
    return visit(top);
  } finally {
    libc.close(top);
  }
}

const MAPS = {
  uidMaps: [{ containerID: 0, hostID: 100000, size: 65536 }],
  gidMaps: [{ containerID: 0, hostID: 100000, size: 65536 }],
};

/** Outcome counts of a run. */
export interface FuzzStats {
  cases: number;
  ok: number;
  errors: Record<string, number>;
}

function openFds(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

/**
 * Run cases `[from, to)` of seed `seed` in a fresh sandbox; throws on the
 * first broken promise, naming the case so it can be replayed.
 */
export async function runFuzz(
  seed: number,
  from: number,
  to: number,
  onProgress?: (done: number, stats: FuzzStats) => void,
): Promise<FuzzStats> {
  const sandbox = await Deno.makeTempDir({ prefix: "strata-fuzz-" });
  const victim = join(sandbox, "victim");
  const stats: FuzzStats = { cases: 0, ok: 0, errors: {} };
  try {
    Deno.mkdirSync(victim);
    Deno.writeTextFileSync(join(victim, "hello"), VICTIM_CONTENT);
    Deno.mkdirSync(join(victim, "sub"));
    Deno.writeTextFileSync(join(victim, "sub", "file"), VICTIM_CONTENT);
    Deno.symlinkSync("hello", join(victim, "link"));
    const before = snapshot(victim);
    const fds = openFds();
    for (let i = from; i < to; i++) {
      const c = generateCase(seed, i, sandbox);
      const dest = join(sandbox, "dest");
      const where = () =>
        `seed ${seed} case ${i} (${c.apply ? "applyLayer" : "untar"}` +
        `${c.overlay ? "/overlay" : ""}, ${c.forceFallback ? "walk" : "openat2"}): ${c.summary}`;
      const opts = {
        forceFallback: c.forceFallback,
        ...(c.maps ? MAPS : {}),
        ...(c.overlay ? { whiteoutFormat: "overlay" as const } : {}),
      };
      try {
        if (c.apply) await applyLayer(streamOf(c.bytes, c.chunk, c.byteStream), dest, opts);
        else await untar(streamOf(c.bytes, c.chunk, c.byteStream), dest, opts);
        stats.ok++;
      } catch (e) {
        if (!(e instanceof ExtractError)) {
          throw new Error(`untyped failure, ${where()}`, { cause: e });
        }
        const cause = e.cause;
        const kind = cause instanceof ErrnoError
          ? cause.code
          : cause instanceof TarFormatError
          ? "TarFormatError"
          : cause instanceof InvalidArchiveError
          ? "InvalidArchiveError"
          : cause instanceof IdMapError
          ? "IdMapError"
          : null;
        if (kind === null) throw new Error(`unexpected cause, ${where()}`, { cause: e });
        stats.errors[kind] = (stats.errors[kind] ?? 0) + 1;
      }
      stats.cases++;
      const diff = diffSnapshots(before, snapshot(victim));
      if (diff.length > 0) throw new Error(`outside changed, ${where()}:\n${diff.join("\n")}`);
      const names = [...Deno.readDirSync(sandbox)].map((e) => e.name).sort().join(",");
      if (names !== "dest,victim" && names !== "victim") {
        throw new Error(`sandbox changed (${names}), ${where()}`);
      }
      if (holdsContent(dest, VICTIM_BYTES)) throw new Error(`victim content in dest, ${where()}`);
      try {
        Deno.removeSync(dest, { recursive: true });
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          throw new Error(`dest not removable, ${where()}`, { cause: e });
        }
      }
      if (openFds() !== fds) throw new Error(`descriptors leaked, ${where()}`);
      onProgress?.(i - from + 1, stats);
    }
  } finally {
    await Deno.remove(sandbox, { recursive: true });
  }
  return stats;
}
