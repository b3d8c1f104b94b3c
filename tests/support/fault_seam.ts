/**
 * The fault-injection seam: every file and mount operation strata makes on a
 * driver root goes through either the {@linkcode Libc} object (FFI) or Deno's
 * file system API. {@linkcode installFaultSeam} wraps both in place — the
 * methods of one `Libc` instance (normally `systemLibc()`, which every driver
 * uses unless told otherwise) and the `Deno.*` file functions plus
 * `Deno.FsFile.prototype` — and numbers each call whose path (or whose file
 * descriptor's path) lies inside the root. At call number `at` it either
 * kills the process with SIGKILL before the call runs (a crash at that
 * point) or makes the call fail the way the kernel would: ENOSPC for a call
 * that changes something, EIO for one that only reads.
 *
 * Calls outside the root (the tar being read, `/proc/self/mountinfo`) are not
 * counted, so the numbering depends only on what the command does to the
 * store. With `{ kind: "count" }` nothing is injected and the calls are
 * recorded, which tells a test how many points an operation has and which of
 * them change something.
 *
 * @module
 */

import { resolve } from "node:path";
import { AT, Errno, ErrnoError, type Libc, O } from "../../ffi/libc.ts";

/** What the seam does. */
export type FaultPlan =
  /** Record the calls, inject nothing. */
  | { kind: "count" }
  /** SIGKILL this process just before root call number `at` (1-based) runs. */
  | { kind: "kill"; at: number }
  /** Make root call number `at` fail: ENOSPC if it changes something, else EIO. */
  | { kind: "fail"; at: number };

/** One counted call. */
export interface SeamCall {
  /** 1-based number among the counted calls. */
  n: number;
  /** `Deno.mkdir`, `libc.mount`, `FsFile.write`, … */
  op: string;
  /** The path inside the root the call concerns (`fd N` when only an fd is known). */
  path: string;
  /** Whether the call changes the file system (else it only reads). */
  mutates: boolean;
}

/** An installed seam. */
export interface FaultSeam {
  /** Every counted call so far. */
  readonly calls: SeamCall[];
  /** The call that was made to fail, if any. */
  readonly injected: SeamCall | undefined;
  /** Libc fds opened inside the root and not closed yet. */
  openFds(): number[];
  /** Put the original functions back. */
  uninstall(): void;
}

const decoder = new TextDecoder();
type Fn = (...args: unknown[]) => unknown;

/** The path text of a `PathLike`/`URL` argument, or undefined. */
function pathText(p: unknown): string | undefined {
  if (typeof p === "string") return p;
  if (p instanceof Uint8Array) return decoder.decode(p);
  if (p instanceof URL) return p.pathname;
  return undefined;
}

/** The kernel's messages for the two errnos the seam raises (as Deno words them). */
const MESSAGES: Record<number, string> = {
  [Errno.ENOSPC]: "No space left on device (os error 28)",
  [Errno.EIO]: "Input/output error (os error 5)",
};

/** How Deno reports an OS error it has no class for: an `Error` with `code`. */
function denoError(errno: number, op: string, path: string): Error {
  const code = errno === Errno.ENOSPC ? "ENOSPC" : "EIO";
  return Object.assign(new Error(`${MESSAGES[errno]}: ${op} '${path}'`), { code });
}

/** Whether `Deno.open` options ask for write access. */
function openWrites(opts: unknown): boolean {
  if (typeof opts !== "object" || opts === null) return false;
  const o = opts as Deno.OpenOptions;
  return !!(o.write || o.append || o.create || o.createNew || o.truncate);
}

/** Whether open(2) flags ask for write access or creation. */
function flagsWrite(flags: unknown): boolean {
  const f = Number(flags);
  return (f & (O.WRONLY | O.RDWR | O.CREAT | O.TRUNC)) !== 0;
}

/**
 * Which arguments of each wrapped Deno function are paths, and whether the
 * call changes something (a function of its arguments for `open`).
 */
const DENO_FUNCS: Record<
  string,
  { paths: number[]; mutates: boolean | ((a: unknown[]) => boolean) }
> = {
  mkdir: { paths: [0], mutates: true },
  writeFile: { paths: [0], mutates: true },
  writeTextFile: { paths: [0], mutates: true },
  remove: { paths: [0], mutates: true },
  rename: { paths: [0, 1], mutates: true },
  open: { paths: [0], mutates: (a) => openWrites(a[1]) },
  create: { paths: [0], mutates: true },
  link: { paths: [0, 1], mutates: true },
  symlink: { paths: [1], mutates: true },
  chmod: { paths: [0], mutates: true },
  chown: { paths: [0], mutates: true },
  truncate: { paths: [0], mutates: true },
  utime: { paths: [0], mutates: true },
  copyFile: { paths: [1], mutates: true },
  readFile: { paths: [0], mutates: false },
  readTextFile: { paths: [0], mutates: false },
  readDir: { paths: [0], mutates: false },
  lstat: { paths: [0], mutates: false },
  stat: { paths: [0], mutates: false },
  realPath: { paths: [0], mutates: false },
  readLink: { paths: [0], mutates: false },
};

/** The `Deno.FsFile` methods counted for files opened inside the root. */
const FILE_METHODS: Record<string, boolean> = {
  write: true,
  writeSync: true,
  sync: true,
  syncSync: true,
  syncData: true,
  syncDataSync: true,
  truncate: true,
  truncateSync: true,
  read: false,
  readSync: false,
  lock: false,
  lockSync: false,
  stat: false,
  statSync: false,
};

/**
 * Libc methods: which arguments are dirfds and paths (`[dirfdIndex, pathIndex]`
 * pairs; a dirfd index of -1 means the path is absolute or relative to the
 * cwd), which are bare fds, and whether they change something.
 */
const LIBC_METHODS: Record<
  string,
  { at?: [number, number][]; fd?: number; mutates: boolean | ((a: unknown[]) => boolean) }
> = {
  mount: { at: [[-1, 1]], mutates: true },
  umount2: { at: [[-1, 0]], mutates: true },
  statfs: { at: [[-1, 0]], mutates: false },
  rename: { at: [[-1, 0], [-1, 1]], mutates: true },
  openat: { at: [[0, 1]], mutates: (a) => flagsWrite(a[2]) },
  openat2: { at: [[0, 1]], mutates: (a) => flagsWrite(a[2]) },
  read: { fd: 0, mutates: false },
  writeAll: { fd: 0, mutates: true },
  fstatat: { at: [[0, 1]], mutates: false },
  fstat: { fd: 0, mutates: false },
  mkdirat: { at: [[0, 1]], mutates: true },
  mknodat: { at: [[0, 1]], mutates: true },
  symlinkat: { at: [[1, 2]], mutates: true },
  linkat: { at: [[0, 1], [2, 3]], mutates: true },
  unlinkat: { at: [[0, 1]], mutates: true },
  renameat: { at: [[0, 1], [2, 3]], mutates: true },
  fchownat: { at: [[0, 1]], mutates: true },
  fchmodat: { at: [[0, 1]], mutates: true },
  fchmod: { fd: 0, mutates: true },
  fchown: { fd: 0, mutates: true },
  futimens: { fd: 0, mutates: true },
  utimensat: { at: [[0, 1]], mutates: true },
  readlinkat: { at: [[0, 1]], mutates: false },
  lsetxattr: { at: [[-1, 0]], mutates: true },
  fsetxattr: { fd: 0, mutates: true },
  lgetxattr: { at: [[-1, 0]], mutates: false },
  fgetxattr: { fd: 0, mutates: false },
  llistxattr: { at: [[-1, 0]], mutates: false },
  flistxattr: { fd: 0, mutates: false },
  lremovexattr: { at: [[-1, 0]], mutates: true },
  readdir: { fd: 0, mutates: false },
  fsync: { fd: 0, mutates: true },
  syncfs: { fd: 0, mutates: true },
  ftruncate: { fd: 0, mutates: true },
};

/**
 * Wrap `libc` and Deno's file API so that calls inside `root` are counted
 * and, per `plan`, one of them kills the process or fails. Uninstall before
 * installing another; one seam at a time.
 *
 * @example
 * ```ts
 * import { systemLibc } from "../../ffi/libc.ts";
 * import { installFaultSeam } from "./fault_seam.ts";
 * const seam = installFaultSeam(systemLibc(), "/tmp/root", { kind: "fail", at: 3 });
 * try {
 *   // ... run a strata command on /tmp/root ...
 * } finally {
 *   seam.uninstall();
 * }
 * ```
 */
export function installFaultSeam(libc: Libc, root: string, plan: FaultPlan): FaultSeam {
  const rootAbs = resolve(root);
  const inRoot = (p: string) => p === rootAbs || p.startsWith(rootAbs + "/");
  const calls: SeamCall[] = [];
  let injected: SeamCall | undefined;
  const fds = new Set<number>();
  const files = new WeakSet<Deno.FsFile>();
  const undo: (() => void)[] = [];

  /** Count a call inside the root; returns the error to raise, if this is the one. */
  const hit = (
    op: string,
    path: string,
    mutates: boolean,
    libcCall: boolean,
  ): Error | undefined => {
    const call: SeamCall = { n: calls.length + 1, op, path, mutates };
    calls.push(call);
    if (plan.kind === "count" || call.n !== plan.at) return undefined;
    if (plan.kind === "kill") {
      Deno.kill(Deno.pid, "SIGKILL");
      for (;;) { /* SIGKILL is delivered before the kill call returns; never reached */ }
    }
    injected = call;
    const errno = mutates ? Errno.ENOSPC : Errno.EIO;
    const syscall = op.replace(/^.*\./, "");
    return libcCall ? new ErrnoError(errno, syscall, path) : denoError(errno, syscall, path);
  };

  const absolute = (p: string) => resolve(Deno.cwd(), p);

  // --- Deno's file functions -------------------------------------------------
  const deno = Deno as unknown as Record<string, Fn>;
  for (const [base, spec] of Object.entries(DENO_FUNCS)) {
    for (const name of [base, base + "Sync"]) {
      const orig = deno[name];
      if (typeof orig !== "function") continue;
      const sync = name.endsWith("Sync");
      deno[name] = function (this: unknown, ...args: unknown[]) {
        const path = spec.paths.map((i) => pathText(args[i])).map((p) => p && absolute(p))
          .find((p) => p !== undefined && inRoot(p));
        if (path === undefined) return orig.apply(this, args);
        const mutates = typeof spec.mutates === "function" ? spec.mutates(args) : spec.mutates;
        const err = hit(`Deno.${name}`, path, mutates, false);
        if (err) {
          if (sync) throw err;
          if (base === "readDir") {
            return (async function* () {
              yield* [];
              throw err;
            })();
          }
          return Promise.reject(err);
        }
        const result = orig.apply(this, args);
        if (base === "open" || base === "create") {
          if (result instanceof Promise) {
            return result.then((f: Deno.FsFile) => {
              files.add(f);
              return f;
            });
          }
          files.add(result as Deno.FsFile);
        }
        return result;
      };
      undo.push(() => deno[name] = orig);
    }
  }

  // --- Deno.FsFile methods ---------------------------------------------------
  const proto = Deno.FsFile.prototype as unknown as Record<string, Fn>;
  for (const [name, mutates] of Object.entries(FILE_METHODS)) {
    const orig = proto[name];
    if (typeof orig !== "function") continue;
    proto[name] = function (this: Deno.FsFile, ...args: unknown[]) {
      if (!files.has(this)) return orig.apply(this, args);
      const err = hit(`FsFile.${name}`, `fd of a file in ${rootAbs}`, mutates, false);
      if (err) {
        if (name.endsWith("Sync")) throw err;
        return Promise.reject(err);
      }
      return orig.apply(this, args);
    };
    undo.push(() => proto[name] = orig);
  }

  // --- Libc ------------------------------------------------------------------
  const lib = libc as unknown as Record<string, Fn>;
  const wrapLibc = (name: string, fn: Fn) => {
    const had = Object.prototype.hasOwnProperty.call(lib, name);
    const before = lib[name];
    lib[name] = fn;
    undo.push(() => {
      if (had) lib[name] = before;
      else delete lib[name];
    });
  };
  for (const [name, spec] of Object.entries(LIBC_METHODS)) {
    const orig = lib[name];
    if (typeof orig !== "function") continue;
    wrapLibc(name, function (this: unknown, ...args: unknown[]) {
      let path: string | undefined;
      if (spec.fd !== undefined) {
        const fd = Number(args[spec.fd]);
        if (fds.has(fd)) path = `fd ${fd}`;
      }
      for (const [dirIdx, pathIdx] of spec.at ?? []) {
        if (path !== undefined) break;
        const p = pathText(args[pathIdx]);
        if (p === undefined) continue;
        const dirfd = dirIdx < 0 ? AT.FDCWD : Number(args[dirIdx]);
        if (p.startsWith("/") || dirfd === AT.FDCWD) {
          const abs = absolute(p);
          if (inRoot(abs)) path = abs;
        } else if (fds.has(dirfd)) path = `fd ${dirfd}/${p}`;
      }
      if (path === undefined) return orig.apply(libc, args);
      const mutates = typeof spec.mutates === "function" ? spec.mutates(args) : spec.mutates;
      const err = hit(`libc.${name}`, path, mutates, true);
      if (err) throw err;
      const result = orig.apply(libc, args);
      if (name === "openat" || name === "openat2") fds.add(result as number);
      return result;
    });
  }
  const origClose = lib.close;
  wrapLibc("close", function (...args: unknown[]) {
    fds.delete(Number(args[0]));
    return origClose.apply(libc, args);
  });

  return {
    calls,
    get injected() {
      return injected;
    },
    openFds: () => [...fds],
    uninstall() {
      for (const u of undo.reverse()) u();
    },
  };
}
