/**
 * Checks made before a command opens the driver, each with its own message:
 * FFI permission (libc is how strata reaches the kernel), root (mount(2) and
 * ownership need it), and reading `$STRATA_ROOT`.
 *
 * @module
 */

import { effectiveUid as libcEffectiveUid, PermissionMissingError } from "../mod.ts";
import { granted } from "../lib/permissions.ts";

/** The process is not root; the message says which command needed it. */
export class NotRootError extends Error {
  /** `command` needed root; `uid` is the effective uid found. */
  constructor(command: string, uid: number) {
    super(
      `not root: ${command} must run as root (effective uid is ${uid}); ` +
        "mounts, device nodes and file ownership need CAP_SYS_ADMIN; retry with sudo",
    );
    this.name = "NotRootError";
  }
}

/** FFI is not permitted: libc cannot be opened. */
export class FfiNotAllowedError extends Error {
  /** `command` is the command that needed it. */
  constructor(command: string) {
    super(
      `missing --allow-ffi: ${command} reaches the kernel through libc (mount, statfs, openat2); ` +
        "run `deno run --allow-ffi --allow-read --allow-write --allow-env cli.ts ...`",
    );
    this.name = "FfiNotAllowedError";
  }
}

export { PermissionMissingError };

/**
 * The effective uid of this process: from `/proc/self/status` read through
 * libc (FFI is checked first), else `Deno.uid()` (needs `--allow-sys=uid`);
 * undefined when neither can be read.
 *
 * @example
 * ```ts
 * import { effectiveUid } from "./preflight.ts";
 * console.log(effectiveUid() === 0 ? "root" : "not root");
 * ```
 */
export function effectiveUid(): number | undefined {
  try {
    return libcEffectiveUid();
  } catch {
    // fall through to Deno.uid()
  }
  if (!granted({ name: "sys", kind: "uid" })) return undefined; // never a prompt
  try {
    return Deno.uid() ?? undefined;
  } catch {
    return undefined;
  }
}

/** Throw {@linkcode NotRootError} unless the process runs as uid 0 (unknown uid passes). */
export function requireRoot(command: string, uid: number | undefined = effectiveUid()): void {
  if (uid !== undefined && uid !== 0) throw new NotRootError(command, uid);
}

/** Throw {@linkcode FfiNotAllowedError} unless `--allow-ffi` was granted. */
export function requireFfi(command: string): void {
  let state: Deno.PermissionState;
  try {
    state = Deno.permissions.querySync({ name: "ffi" }).state;
  } catch {
    return; // cannot tell: let opening libc decide
  }
  if (state !== "granted") throw new FfiNotAllowedError(command);
}

/**
 * Throw {@linkcode PermissionMissingError} unless `root` and `/proc` may be
 * read and `root` written (a narrower grant fails later, naming the path).
 */
export function requireFsAccess(command: string, root: string): void {
  const wants: [Deno.PermissionDescriptor, string][] = [
    [{ name: "read", path: root }, `--allow-read (${root})`],
    [{ name: "read", path: "/proc" }, "--allow-read (/proc: mount table, kernel probes)"],
    [{ name: "write", path: root }, `--allow-write (${root})`],
  ];
  const missing: string[] = [];
  for (const [desc, flag] of wants) {
    try {
      if (Deno.permissions.querySync(desc).state !== "granted") missing.push(flag);
    } catch {
      // cannot tell: let the call decide
    }
  }
  if (missing.length > 0) {
    throw new PermissionMissingError(`${command} needs ${missing.join(", ")}: run with them`);
  }
}

/**
 * `$STRATA_ROOT`, or undefined when unset. Throws
 * {@linkcode PermissionMissingError} when the environment may not be read
 * (silently falling back to the default root could act on the wrong tree).
 */
export function strataRootFromEnv(): string | undefined {
  if (!granted({ name: "env", variable: "STRATA_ROOT" })) {
    throw new PermissionMissingError(
      "cannot read $STRATA_ROOT: pass --root DIR or run with --allow-env=STRATA_ROOT",
    );
  }
  try {
    return Deno.env.get("STRATA_ROOT");
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new PermissionMissingError(
        "cannot read $STRATA_ROOT: pass --root DIR or run with --allow-env=STRATA_ROOT",
        { cause: e },
      );
    }
    throw e;
  }
}
