/**
 * `ErrnoError`: a failed system call, with its errno, its name and the path it
 * was given. Instances are also `instanceof` the matching `Deno.errors` class
 * (EBUSY → `Deno.errors.Busy`, ENOENT → `Deno.errors.NotFound`, ...), so code
 * that already handles Deno's own errors keeps working.
 *
 * @module
 */

/** Linux errno numbers (identical on x86_64 and aarch64) and their names. */
export const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  26: "ETXTBSY",
  27: "EFBIG",
  28: "ENOSPC",
  29: "ESPIPE",
  30: "EROFS",
  31: "EMLINK",
  32: "EPIPE",
  33: "EDOM",
  34: "ERANGE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  61: "ENODATA",
  75: "EOVERFLOW",
  95: "EOPNOTSUPP",
  116: "ESTALE",
  122: "EDQUOT",
};

/** Lower-case error texts, as Go's syscall package prints them. */
const ERRNO_TEXT: Readonly<Record<number, string>> = {
  1: "operation not permitted",
  2: "no such file or directory",
  3: "no such process",
  4: "interrupted system call",
  5: "input/output error",
  6: "no such device or address",
  7: "argument list too long",
  9: "bad file descriptor",
  11: "resource temporarily unavailable",
  12: "cannot allocate memory",
  13: "permission denied",
  14: "bad address",
  16: "device or resource busy",
  17: "file exists",
  18: "invalid cross-device link",
  19: "no such device",
  20: "not a directory",
  21: "is a directory",
  22: "invalid argument",
  23: "too many open files in system",
  24: "too many open files",
  25: "inappropriate ioctl for device",
  26: "text file busy",
  27: "file too large",
  28: "no space left on device",
  29: "illegal seek",
  30: "read-only file system",
  31: "too many links",
  32: "broken pipe",
  33: "numerical argument out of domain",
  34: "numerical result out of range",
  36: "file name too long",
  38: "function not implemented",
  39: "directory not empty",
  40: "too many levels of symbolic links",
  61: "no data available",
  75: "value too large for defined data type",
  95: "operation not supported",
  116: "stale NFS file handle",
  122: "disk quota exceeded",
};

/**
 * errno constants used across the code base.
 *
 * @example
 * ```ts
 * import { Errno, isErrno, systemLibc } from "../mod.ts";
 * try {
 *   systemLibc().umount2("/not-mounted", 0);
 * } catch (e) {
 *   if (!isErrno(e, Errno.EINVAL) && !isErrno(e, Errno.ENOENT)) throw e;
 * }
 * ```
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  EMLINK: 31,
  EDOM: 33,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EOPNOTSUPP: 95,
  EDQUOT: 122,
} as const;

const BRAND = Symbol.for("strata.ErrnoError");

/**
 * The fields every errno error carries.
 *
 * @example
 * ```ts
 * import type { ErrnoFields } from "../mod.ts";
 * const where = (e: ErrnoFields) => `${e.syscall} ${e.path}: ${e.code}`;
 * console.log(where({ errno: 16, code: "EBUSY", syscall: "umount2", path: "/mnt" }));
 * ```
 */
export interface ErrnoFields {
  /** The errno number, e.g. 16. */
  readonly errno: number;
  /** The errno name, e.g. `"EBUSY"` (`"E<n>"` when unknown). */
  readonly code: string;
  /** The failing call, e.g. `"mount"`. */
  readonly syscall: string;
  /** The path the call was given (empty when it took none). */
  readonly path: string;
}

/**
 * The text of an errno, lower case, e.g. `"device or resource busy"`.
 *
 * @example
 * ```ts
 * import { Errno, errnoText } from "../mod.ts";
 * console.log(errnoText(Errno.EBUSY)); // device or resource busy
 * ```
 */
export function errnoText(errno: number): string {
  return ERRNO_TEXT[errno] ?? `errno ${errno}`;
}

function errnoMessage(errno: number, syscall: string, path: string): string {
  const code = ERRNO_NAMES[errno] ?? `E${errno}`;
  const where = path ? `${syscall} ${path}` : syscall;
  return `${where}: ${errnoText(errno)} (${code})`;
}

type ErrorCtor = new (message?: string, options?: ErrorOptions) => Error;

function branded(Base: ErrorCtor): ErrorCtor {
  return class extends Base {
    constructor(message?: string, options?: ErrorOptions) {
      super(message, options);
      Object.defineProperty(this, BRAND, { value: true });
    }
  };
}

const DENO_CLASS: Record<number, ErrorCtor> = {};
function mapDeno(codes: number[], ctor: ErrorCtor | undefined) {
  if (!ctor) return;
  const Cls = branded(ctor);
  for (const c of codes) DENO_CLASS[c] = Cls;
}
const de = Deno.errors;
mapDeno([Errno.EBUSY], de.Busy);
mapDeno([Errno.ENOENT], de.NotFound);
mapDeno([Errno.EEXIST], de.AlreadyExists);
mapDeno([Errno.EPERM, Errno.EACCES], de.PermissionDenied);
mapDeno([Errno.ENOTDIR], de.NotADirectory);
mapDeno([Errno.EISDIR], de.IsADirectory);
mapDeno([Errno.ELOOP], de.FilesystemLoop);
mapDeno([Errno.ENODEV, Errno.ENOSYS, Errno.EOPNOTSUPP], de.NotSupported);

/**
 * A system call failed. Message form: `<syscall> <path>: <text> (<CODE>)`.
 *
 * @example
 * ```ts
 * import { ErrnoError } from "./errno.ts";
 * const err = new ErrnoError(16, "umount2", "/x/mnt/abc");
 * console.log(err.message); // umount2 /x/mnt/abc: device or resource busy (EBUSY)
 * console.log(err instanceof Deno.errors.Busy); // true
 * ```
 */
export class ErrnoError extends Error implements ErrnoFields {
  declare readonly errno: number;
  declare readonly code: string;
  declare readonly syscall: string;
  declare readonly path: string;

  /** Build the error for `errno` raised by `syscall` on `path`. */
  constructor(errno: number, syscall: string, path = "", options?: ErrorOptions) {
    const message = errnoMessage(errno, syscall, path);
    super(message, options);
    const Mapped = DENO_CLASS[errno];
    // deno-lint-ignore no-this-alias
    let self: Error = this;
    if (Mapped) self = new Mapped(message, options);
    Object.defineProperty(self, BRAND, { value: true });
    Object.assign(self, { errno, code: ERRNO_NAMES[errno] ?? `E${errno}`, syscall, path });
    self.name = "ErrnoError";
    if (self !== this) return self as ErrnoError;
  }

  /** True for any errno error, whichever `Deno.errors` class it also belongs to. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null &&
      (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/**
 * The errno of an error: an `ErrnoError`'s own, or the one Deno puts on its
 * own OS errors (`Deno.errors.NotFound` etc.), else `undefined`.
 *
 * @example
 * ```ts
 * import { errnoOf } from "./errno.ts";
 * try { Deno.statSync("/nonexistent") } catch (e) { console.log(errnoOf(e)); } // 2
 * ```
 */
export function errnoOf(err: unknown): number | undefined {
  if (err instanceof ErrnoError) return err.errno;
  if (err instanceof Deno.errors.NotFound) return Errno.ENOENT;
  if (err instanceof Deno.errors.AlreadyExists) return Errno.EEXIST;
  if (err instanceof Deno.errors.Busy) return Errno.EBUSY;
  if (err instanceof Deno.errors.NotADirectory) return Errno.ENOTDIR;
  if (err instanceof Deno.errors.IsADirectory) return Errno.EISDIR;
  if (err instanceof Deno.errors.PermissionDenied) return Errno.EACCES;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string") {
    for (const [n, name] of Object.entries(ERRNO_NAMES)) if (name === code) return Number(n);
  }
  return undefined;
}
