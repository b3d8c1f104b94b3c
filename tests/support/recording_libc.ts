/**
 * A recording {@linkcode Libc} double for tests on a kernel without aufs.
 *
 * Every call is recorded with its arguments and outcome. A test can script
 * results or errors per call ("mount fails EBUSY twice"); everything not
 * scripted goes to the real libc, so directories, files and bind mounts are
 * real. Mounts of a faked filesystem type (aufs by default) are simulated:
 * after a successful fake mount of target T, `statfs(T)` and `statfs` of paths
 * under T report that filesystem's magic until `umount2(T)`.
 *
 * @module
 */

import {
  type DirEntry,
  Errno,
  ErrnoError,
  type Libc,
  MS,
  type PathLike,
  type Stat,
  type StatFs,
  systemLibc,
} from "../../ffi/libc.ts";
import { normalize } from "node:path";

/** Names of the {@linkcode Libc} methods. */
export type LibcName = keyof Libc;

/** One recorded call. */
export interface LibcCall {
  /** The method called. */
  name: LibcName;
  /** Its arguments, as given. */
  args: unknown[];
  /** The error it threw, if any. */
  error?: unknown;
  /** True when the double answered (scripted or simulated) instead of the real libc. */
  faked: boolean;
}

/** When a scripted rule applies. */
export interface RuleOptions {
  /** How many matching calls the rule answers (default: every call). */
  times?: number;
  /** Only calls whose arguments satisfy this predicate. */
  when?: (...args: unknown[]) => boolean;
}

/** One simulated mount. */
export interface FakeMount {
  /** The mount target. */
  target: string;
  /** The filesystem type. */
  fstype: string;
  /** Branch directories in stack order (for aufs: from `br:` and every `append:`). */
  branches: string[];
  /** Data of the first mount(2). */
  data: string;
}

/** Options of {@linkcode RecordingLibc}. */
export interface RecordingLibcOptions {
  /** The libc unscripted calls go to (default: the real one). */
  real?: Libc;
  /** What `getpagesize()` reports (default: the real page size). */
  pageSize?: number;
  /** Filesystem types whose mounts are simulated, with the magic statfs then reports. */
  fakeFs?: Record<string, number>;
  /** Play a kernel with SELinux: aufs mount data may carry `context="<label>"` (default false, like the aufs guest). */
  selinux?: boolean;
  /** The kernel's aufs branch maximum (default 127, `CONFIG_AUFS_BRANCH_MAX_127`). */
  branchMax?: number;
  /**
   * File every accepted aufs mount, remount and unmount is appended to as a
   * JSON line (default: `$STRATA_AUFS_DATA_LOG` when set); the aufs guest
   * replays them on the real kernel (tests/aufs_kernel_test.ts).
   */
  dataLog?: string;
}

interface Rule {
  name: LibcName;
  left: number;
  when?: (...args: unknown[]) => boolean;
  answer: (...args: unknown[]) => unknown;
}

const decoder = new TextDecoder();
const text = (p: PathLike): string => typeof p === "string" ? p : decoder.decode(p);

/** Index of the argument naming the path of each call, for error messages. */
const PATH_ARG: Partial<Record<LibcName, number>> = {
  mount: 1,
  umount2: 0,
  statfs: 0,
  rename: 0,
  openat: 1,
  openat2: 1,
  fstatat: 1,
  mkdirat: 1,
  mknodat: 1,
  symlinkat: 2,
  linkat: 3,
  unlinkat: 1,
  renameat: 1,
  fchownat: 1,
  fchmodat: 1,
  utimensat: 1,
  readlinkat: 1,
  lsetxattr: 0,
  lgetxattr: 0,
  llistxattr: 0,
  lremovexattr: 0,
};

/** Branch permissions the double accepts (what strata writes, and `rr`). */
const AUFS_PERMS = new Set(["rw", "ro", "rr", "ro+wh", "rr+wh"]);

/** Split mount data at commas outside double quotes (a `context="a,b"` label stays whole). */
export function splitOptions(data: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (const ch of data) {
    if (ch === '"') quoted = !quoted;
    if (ch === "," && !quoted) {
      if (cur) out.push(cur);
      cur = "";
    } else cur += ch;
  }
  if (cur) out.push(cur);
  return out;
}

function errnoOfError(e: unknown): number | undefined {
  return e instanceof ErrnoError ? e.errno : undefined;
}

function envDataLog(): string | undefined {
  try {
    return Deno.env.get("STRATA_AUFS_DATA_LOG") || undefined;
  } catch {
    return undefined; // no env permission: no log
  }
}

/** The aufs magic statfs reports for a simulated aufs mount. */
export const AUFS_MAGIC = 0x61756673;

/**
 * The recording double. Inspect `calls` (or {@linkcode RecordingLibc.callsOf}),
 * script with {@linkcode RecordingLibc.fail} / {@linkcode RecordingLibc.respond}.
 *
 * @example
 * ```ts
 * import { RecordingLibc } from "./recording_libc.ts";
 * import { Errno } from "../../ffi/libc.ts";
 * const libc = new RecordingLibc().fail("umount2", Errno.EBUSY, { times: 2 });
 * ```
 */
export class RecordingLibc implements Libc {
  /** Every call, in order. */
  readonly calls: LibcCall[] = [];
  readonly #real: Libc;
  readonly #pageSize?: number;
  readonly #fakeFs: Record<string, number>;
  readonly #rules: Rule[] = [];
  readonly #selinux: boolean;
  readonly #branchMax: number;
  readonly #dataLog?: string;
  /** target → stack of simulated mounts (the last is on top). */
  readonly #mounts = new Map<string, FakeMount[]>();

  /** A double over the real libc, simulating aufs mounts unless `opts.fakeFs` says otherwise. */
  constructor(opts: RecordingLibcOptions = {}) {
    this.#real = opts.real ?? systemLibc();
    this.#pageSize = opts.pageSize;
    this.#fakeFs = opts.fakeFs ?? { aufs: AUFS_MAGIC };
    this.#selinux = opts.selinux ?? false;
    this.#branchMax = opts.branchMax ?? 127;
    this.#dataLog = opts.dataLog ?? envDataLog();
  }

  /**
   * Make calls of `name` fail with `errno` (the error names the call and its
   * path like the real one). Rules are consulted in the order they were added.
   */
  fail(name: LibcName, errno: number, opts: RuleOptions = {}): this {
    return this.respond(name, (...args) => {
      const i = PATH_ARG[name];
      throw new ErrnoError(errno, name, i === undefined ? "" : text(args[i] as PathLike));
    }, opts);
  }

  /** Answer calls of `name` with `answer(...args)` (its return value or what it throws). */
  respond(name: LibcName, answer: (...args: unknown[]) => unknown, opts: RuleOptions = {}): this {
    this.#rules.push({ name, left: opts.times ?? Infinity, when: opts.when, answer });
    return this;
  }

  /** Drop every scripted rule that has not been used up. */
  clearRules(): void {
    this.#rules.length = 0;
  }

  /** Forget the recorded calls (simulated mounts stay). */
  clearCalls(): void {
    this.calls.length = 0;
  }

  /** The recorded calls of one method. */
  callsOf(name: LibcName): LibcCall[] {
    return this.calls.filter((c) => c.name === name);
  }

  /** The mount(2) and umount2(2) calls, each as its argument list prefixed by its name. */
  mountCalls(): unknown[][] {
    return this.calls
      .filter((c) => c.name === "mount" || c.name === "umount2")
      .map((c) => [c.name, ...c.args]);
  }

  /** The simulated mount on top of `target`, if any. */
  fakeMount(target: string): FakeMount | undefined {
    const stack = this.#mounts.get(normalize(target));
    return stack?.[stack.length - 1];
  }

  /** Targets with at least one simulated mount. */
  fakeTargets(): string[] {
    return [...this.#mounts.keys()];
  }

  #run<T>(name: LibcName, args: unknown[], real: () => T): T {
    const call: LibcCall = { name, args, faked: false };
    this.calls.push(call);
    const rule = this.#rules.find((r) =>
      r.name === name && r.left > 0 && (!r.when || r.when(...args))
    );
    try {
      if (rule) {
        rule.left--;
        call.faked = true;
        return rule.answer(...args) as T;
      }
      return real();
    } catch (e) {
      call.error = e;
      throw e;
    }
  }

  #covering(path: string): FakeMount | undefined {
    const p = normalize(path);
    for (const [target, stack] of this.#mounts) {
      if (p === target || p.startsWith(target === "/" ? "/" : target + "/")) {
        return stack[stack.length - 1];
      }
    }
    return undefined;
  }

  #requireDir(path: string, syscall: string): void {
    let st: Stat;
    try {
      st = this.#real.fstatat(-100, path, 0);
    } catch (e) {
      if (e instanceof ErrnoError) throw new ErrnoError(e.errno, syscall, path);
      throw e;
    }
    if ((st.mode & 0o170000) !== 0o040000) throw new ErrnoError(Errno.ENOTDIR, syscall, path);
  }

  /**
   * Parse aufs mount data strictly, as aufs 6.1 reads it (fs/aufs/fsctx.c):
   * comma-separated options; `br:`/`br=` with `path[=perm]` entries split by
   * `:` (perm `rw`, `ro`, `rr`, `ro+wh`, `rr+wh`); `append:`/`append=` one
   * branch; `add:<i>:` one branch at index i (ENOSPC at or past the branch
   * maximum, EDOM past the end); `del:`/`del=` one branch path; the flags
   * `dio` and `dirperm1`;
   * `xino=<file>` (its dir must exist: ENOENT); `context="<label>"` only when
   * the double plays an SELinux kernel. Anything else, a missing or duplicate
   * branch, a `del:` of a non-branch: EINVAL. Stricter than the kernel in one
   * way: aufs takes an unknown branch permission (it warns and uses `ro`).
   * Returns the branch stack after the call.
   */
  #aufsBranches(target: string, data: string, remount: FakeMount | undefined): string[] {
    const einval = () => new ErrnoError(Errno.EINVAL, "mount", target);
    const branches = remount ? [...remount.branches] : [];
    let brIndex = 0; // a remount's br: entries are inserted from index 0 on (not appended)
    const add = (spec: string, at: number) => {
      const eq = spec.indexOf("=");
      const path = eq < 0 ? spec : spec.slice(0, eq);
      const perm = eq < 0 ? undefined : spec.slice(eq + 1);
      if (!path || (perm !== undefined && !AUFS_PERMS.has(perm))) throw einval();
      try {
        this.#requireDir(path, "mount");
      } catch {
        throw einval(); // aufs: "lookup failed", EINVAL whatever the lookup said
      }
      if (branches.includes(normalize(path))) {
        if (remount) return; // aufs skips a branch it already has on remount
        throw einval(); // at mount: "duplicated"
      }
      if (branches.length >= this.#branchMax) {
        throw new ErrnoError(Errno.ENOSPC, "mount", target);
      }
      branches.splice(at, 0, normalize(path));
    };
    for (const opt of splitOptions(data)) {
      const m = /^(br|append|del|add)[:=](.*)$/s.exec(opt);
      if (m && m[1] === "add") {
        // add:<index>:<branch>; aufs checks the maximum first (ENOSPC), then the index (EDOM)
        const a = /^(-?\d+):(.+)$/s.exec(m[2]);
        if (!a) throw einval();
        const at = Number(a[1]);
        if (at >= this.#branchMax || branches.length >= this.#branchMax) {
          throw new ErrnoError(Errno.ENOSPC, "mount", target);
        }
        if (at < 0 || at > branches.length) throw new ErrnoError(Errno.EDOM, "mount", target);
        add(a[2], at);
      } else if (m && m[1] === "br") {
        const list = m[2].split(":");
        if (list.some((b) => b === "")) throw einval();
        for (const b of list) add(b, remount ? brIndex++ : branches.length);
      } else if (m && m[1] === "append") {
        add(m[2], branches.length);
      } else if (m && m[1] === "del") {
        try {
          this.#requireDir(m[2], "mount");
        } catch (e) {
          throw new ErrnoError(errnoOfError(e) ?? Errno.ENOENT, "mount", target); // lookup failed
        }
        const i = branches.indexOf(normalize(m[2]));
        if (i >= 0) branches.splice(i, 1);
        else if (!remount) throw einval(); // on remount aufs ignores a del: of a non-branch
      } else if (opt === "dio" || opt === "dirperm1") {
        // flags
      } else if (opt.startsWith("xino=")) {
        const file = opt.slice(5);
        if (!file.startsWith("/")) throw einval();
        try {
          this.#requireDir(file.slice(0, file.lastIndexOf("/")) || "/", "mount");
        } catch (e) {
          throw new ErrnoError(errnoOfError(e) ?? Errno.ENOENT, "mount", target);
        }
      } else if (opt.startsWith("context=") && this.#selinux) {
        if (!/^context="[^"]*"$/.test(opt)) throw einval();
      } else {
        throw einval(); // aufs: unknown parameter
      }
    }
    if (branches.length === 0) throw einval();
    return branches;
  }

  #simulateMount(target: string, fstype: string, flags: bigint, data: string): void {
    const t = normalize(target);
    const bytes = new TextEncoder().encode(data).length;
    // The kernel copies one page of mount data; data that long is cut, so refuse it here.
    if (bytes >= this.getpagesize()) throw new ErrnoError(Errno.EINVAL, "mount", target);
    if (flags & MS.REMOUNT) {
      const top = this.fakeMount(t);
      if (!top || top.fstype !== fstype) throw new ErrnoError(Errno.EINVAL, "mount", target);
      if (fstype === "aufs") top.branches = this.#aufsBranches(target, data, top);
      this.#log({ op: "remount", target: t, data });
      return;
    }
    this.#requireDir(t, "mount");
    const branches = fstype === "aufs" ? this.#aufsBranches(target, data, undefined) : [];
    const stack = this.#mounts.get(t) ?? [];
    stack.push({ target: t, fstype, branches, data });
    this.#mounts.set(t, stack);
    this.#log({ op: "mount", target: t, data });
  }

  /** Append an accepted aufs call to the data log (`STRATA_AUFS_DATA_LOG`), for the guest replay. */
  #log(entry: { op: "mount" | "remount" | "umount"; target: string; data?: string }): void {
    if (!this.#dataLog) return;
    const line = JSON.stringify({
      ...entry,
      pageSize: this.getpagesize(),
      selinux: this.#selinux,
    });
    Deno.writeTextFileSync(this.#dataLog, line + "\n", { append: true });
  }

  mount(source: string, target: string, fstype: string, flags: bigint, data: string): void {
    this.#run("mount", [source, target, fstype, flags, data], () => {
      const remountOfFake = (flags & MS.REMOUNT) !== 0n && this.fakeMount(target) !== undefined;
      if (fstype in this.#fakeFs || remountOfFake) {
        this.#simulateMount(target, fstype || this.fakeMount(target)!.fstype, flags, data);
        return;
      }
      this.#real.mount(source, target, fstype, flags, data);
    });
  }

  umount2(target: string, flags: number): void {
    this.#run("umount2", [target, flags], () => {
      const t = normalize(target);
      const stack = this.#mounts.get(t);
      if (stack) {
        const gone = stack.pop()!;
        if (gone.fstype === "aufs") this.#log({ op: "umount", target: t });
        if (stack.length === 0) this.#mounts.delete(t);
        return;
      }
      this.#real.umount2(target, flags);
    });
  }

  statfs(path: PathLike): StatFs {
    return this.#run("statfs", [path], () => {
      const st = this.#real.statfs(path);
      const fake = this.#covering(text(path));
      return fake ? { ...st, type: this.#fakeFs[fake.fstype] } : st;
    });
  }

  getpagesize(): number {
    return this.#run("getpagesize", [], () => this.#pageSize ?? this.#real.getpagesize());
  }

  rename(oldPath: PathLike, newPath: PathLike): void {
    this.#run("rename", [oldPath, newPath], () => {
      for (const p of [oldPath, newPath]) {
        if (this.#mounts.has(normalize(text(p)))) {
          throw new ErrnoError(Errno.EBUSY, "rename", text(p));
        }
      }
      this.#real.rename(oldPath, newPath);
    });
  }

  openat(dirfd: number, path: PathLike, flags: number, mode?: number): number {
    return this.#run(
      "openat",
      [dirfd, path, flags, mode],
      () => this.#real.openat(dirfd, path, flags, mode),
    );
  }

  openat2(dirfd: number, path: PathLike, flags: number, mode: number, resolve: bigint): number {
    return this.#run(
      "openat2",
      [dirfd, path, flags, mode, resolve],
      () => this.#real.openat2(dirfd, path, flags, mode, resolve),
    );
  }

  close(fd: number): void {
    this.#run("close", [fd], () => this.#real.close(fd));
  }

  read(fd: number, buf: Uint8Array, n?: number): number {
    return this.#run("read", [fd, buf, n], () => this.#real.read(fd, buf, n));
  }

  writeAll(fd: number, buf: Uint8Array, n?: number): void {
    this.#run("writeAll", [fd, buf, n], () => this.#real.writeAll(fd, buf, n));
  }

  fstatat(dirfd: number, path: PathLike, flags: number): Stat {
    return this.#run("fstatat", [dirfd, path, flags], () => this.#real.fstatat(dirfd, path, flags));
  }

  fstat(fd: number): Stat {
    return this.#run("fstat", [fd], () => this.#real.fstat(fd));
  }

  mkdirat(dirfd: number, path: PathLike, mode: number): void {
    this.#run("mkdirat", [dirfd, path, mode], () => this.#real.mkdirat(dirfd, path, mode));
  }

  mknodat(dirfd: number, path: PathLike, mode: number, major: number, minor: number): void {
    this.#run(
      "mknodat",
      [dirfd, path, mode, major, minor],
      () => this.#real.mknodat(dirfd, path, mode, major, minor),
    );
  }

  symlinkat(target: PathLike, dirfd: number, path: PathLike): void {
    this.#run("symlinkat", [target, dirfd, path], () => this.#real.symlinkat(target, dirfd, path));
  }

  linkat(
    oldDirfd: number,
    oldPath: PathLike,
    newDirfd: number,
    newPath: PathLike,
    flags: number,
  ): void {
    this.#run(
      "linkat",
      [oldDirfd, oldPath, newDirfd, newPath, flags],
      () => this.#real.linkat(oldDirfd, oldPath, newDirfd, newPath, flags),
    );
  }

  unlinkat(dirfd: number, path: PathLike, flags: number): void {
    this.#run("unlinkat", [dirfd, path, flags], () => this.#real.unlinkat(dirfd, path, flags));
  }

  renameat(oldDirfd: number, oldPath: PathLike, newDirfd: number, newPath: PathLike): void {
    this.#run(
      "renameat",
      [oldDirfd, oldPath, newDirfd, newPath],
      () => this.#real.renameat(oldDirfd, oldPath, newDirfd, newPath),
    );
  }

  fchownat(dirfd: number, path: PathLike, uid: number, gid: number, flags: number): void {
    this.#run(
      "fchownat",
      [dirfd, path, uid, gid, flags],
      () => this.#real.fchownat(dirfd, path, uid, gid, flags),
    );
  }

  fchmodat(dirfd: number, path: PathLike, mode: number, flags: number): void {
    this.#run(
      "fchmodat",
      [dirfd, path, mode, flags],
      () => this.#real.fchmodat(dirfd, path, mode, flags),
    );
  }

  fchmod(fd: number, mode: number): void {
    this.#run("fchmod", [fd, mode], () => this.#real.fchmod(fd, mode));
  }

  utimensat(
    dirfd: number,
    path: PathLike,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
    flags: number,
  ): void {
    this.#run(
      "utimensat",
      [dirfd, path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, flags],
      () => this.#real.utimensat(dirfd, path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, flags),
    );
  }

  readlinkat(dirfd: number, path: PathLike): Uint8Array {
    return this.#run("readlinkat", [dirfd, path], () => this.#real.readlinkat(dirfd, path));
  }

  lsetxattr(path: PathLike, name: string, value: Uint8Array): void {
    this.#run("lsetxattr", [path, name, value], () => this.#real.lsetxattr(path, name, value));
  }

  fsetxattr(fd: number, name: string, value: Uint8Array): void {
    this.#run("fsetxattr", [fd, name, value], () => this.#real.fsetxattr(fd, name, value));
  }

  lgetxattr(path: PathLike, name: string): Uint8Array | null {
    return this.#run("lgetxattr", [path, name], () => this.#real.lgetxattr(path, name));
  }

  fgetxattr(fd: number, name: string): Uint8Array | null {
    return this.#run("fgetxattr", [fd, name], () => this.#real.fgetxattr(fd, name));
  }

  llistxattr(path: PathLike): string[] {
    return this.#run("llistxattr", [path], () => this.#real.llistxattr(path));
  }

  flistxattr(fd: number): string[] {
    return this.#run("flistxattr", [fd], () => this.#real.flistxattr(fd));
  }

  lremovexattr(path: PathLike, name: string): void {
    this.#run("lremovexattr", [path, name], () => this.#real.lremovexattr(path, name));
  }

  readdir(fd: number): DirEntry[] {
    return this.#run("readdir", [fd], () => this.#real.readdir(fd));
  }

  fsync(fd: number): void {
    this.#run("fsync", [fd], () => this.#real.fsync(fd));
  }

  syncfs(fd: number): void {
    this.#run("syncfs", [fd], () => this.#real.syncfs(fd));
  }

  ftruncate(fd: number, length: number): void {
    this.#run("ftruncate", [fd, length], () => this.#real.ftruncate(fd, length));
  }
}
