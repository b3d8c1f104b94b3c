/**
 * The driver's error classes. Each carries a `cause` chain; callers test with
 * `instanceof` (the classes nest the way containers/storage's sentinels do: every
 * "this driver cannot run here" error is a {@linkcode NotSupportedError}).
 *
 * @module
 */

import { describeIncomplete } from "./incomplete.ts";

/**
 * The driver cannot run on this kernel or filesystem (containers/storage's
 * `ErrNotSupported`, "driver not supported").
 *
 * @example
 * ```ts
 * import { NotSupportedError } from "./errors.ts";
 * const e = new NotSupportedError("kernel does not support aufs");
 * console.log(e.message); // kernel does not support aufs: driver not supported
 * ```
 */
export class NotSupportedError extends Error {
  /** `reason` is prefixed to containers/storage's text `driver not supported`. */
  constructor(reason?: string, options?: ErrorOptions) {
    super(reason ? `${reason}: driver not supported` : "driver not supported", options);
    this.name = "NotSupportedError";
  }
}

/**
 * The kernel has no aufs (`/proc/filesystems` does not list it).
 *
 * @example
 * ```ts
 * import { AufsNotSupportedError, NotSupportedError } from "./errors.ts";
 * console.log(new AufsNotSupportedError() instanceof NotSupportedError); // true
 * ```
 */
export class AufsNotSupportedError extends NotSupportedError {
  /** Optionally say where aufs was looked for. */
  constructor(detail = "AUFS was not found in /proc/filesystems", options?: ErrorOptions) {
    super(`kernel does not support aufs (${detail})`, options);
    this.name = "AufsNotSupportedError";
  }
}

/**
 * aufs cannot be used inside a user namespace other than the initial one.
 *
 * @example
 * ```ts
 * import { AufsNestedError } from "./errors.ts";
 * console.log(new AufsNestedError().message);
 * ```
 */
export class AufsNestedError extends NotSupportedError {
  /** containers/storage's `ErrAufsNested` text. */
  constructor(options?: ErrorOptions) {
    super("kernel does not support aufs (AUFS cannot be used in non-init user namespace)", options);
    this.name = "AufsNestedError";
  }
}

/**
 * A layer's chain has more branches than the kernel's aufs can stack
 * (`CONFIG_AUFS_BRANCH_MAX_*`: 127 by default). Thrown before any mount is made.
 *
 * @example
 * ```ts
 * import { AufsBranchLimitError } from "./errors.ts";
 * const e = new AufsBranchLimitError("top", 128, 127);
 * console.log(e.message);
 * // layer "top": its aufs union needs 128 branches, the kernel's aufs stacks at most 127
 * ```
 */
export class AufsBranchLimitError extends Error {
  /** The layer whose union was asked for. */
  readonly id: string;
  /** Branches the union needs (the layer and its parents). */
  readonly branches: number;
  /** The kernel's maximum. */
  readonly max: number;
  /** `branches` needed by layer `id`, `max` allowed. */
  constructor(id: string, branches: number, max: number) {
    super(
      `layer "${id}": its aufs union needs ${branches} branches, the kernel's aufs stacks at most ${max}`,
    );
    this.name = "AufsBranchLimitError";
    this.id = id;
    this.branches = branches;
    this.max = max;
  }
}

/**
 * The backing filesystem of the driver root cannot hold this driver's layers.
 *
 * @example
 * ```ts
 * import { IncompatibleFsError } from "./errors.ts";
 * console.log(new IncompatibleFsError("aufs", "btrfs").message);
 * // AUFS is not supported over "btrfs": backing file system is unsupported for this graph driver
 * ```
 */
export class IncompatibleFsError extends NotSupportedError {
  /** Name of the filesystem that was refused. */
  readonly backingFs: string;
  /** `driver` is `"aufs"` or `"overlay"`; `backingFs` the refused filesystem's name. */
  constructor(driver: string, backingFs: string, options?: ErrorOptions) {
    super(undefined, options);
    this.message = `${driver === "aufs" ? "AUFS" : driver} is not supported over "${backingFs}": ` +
      "backing file system is unsupported for this graph driver";
    this.name = "IncompatibleFsError";
    this.backingFs = backingFs;
  }
}

/**
 * A layer id that cannot name a layer (empty, too long, `/`, a control
 * character, invalid UTF-8, `.`, `..`, or ending in `-removing`).
 *
 * @example
 * ```ts
 * import { InvalidLayerIdError } from "./errors.ts";
 * console.log(new InvalidLayerIdError("../x", "contains '/'").message);
 * ```
 */
export class InvalidLayerIdError extends Error {
  /** The refused id. */
  readonly id: string;
  /** `reason` says which rule the id broke. */
  constructor(id: string, reason: string, options?: ErrorOptions) {
    super(`invalid layer id ${JSON.stringify(id)}: ${reason}`, options);
    this.name = "InvalidLayerIdError";
    this.id = id;
  }
}

/**
 * A layer (or a named parent) does not exist.
 *
 * @example
 * ```ts
 * import { LayerNotFoundError } from "./errors.ts";
 * console.log(new LayerNotFoundError("abc", "parent of def").message);
 * // layer "abc" (parent of def) does not exist
 * ```
 */
export class LayerNotFoundError extends Error {
  /** The missing layer's id. */
  readonly id: string;
  /** `role` says how the id was used (e.g. "parent of X"). */
  constructor(id: string, role?: string, options?: ErrorOptions) {
    super(`layer ${JSON.stringify(id)}${role ? ` (${role})` : ""} does not exist`, options);
    this.name = "LayerNotFoundError";
    this.id = id;
  }
}

/**
 * A driver operation failed; the message names the layer, the path and the
 * failing call, and `cause` holds the underlying error.
 *
 * @example
 * ```ts
 * import { LayerError } from "./errors.ts";
 * const e = new LayerError("abc", "get", "/r/mnt/abc", new Error("mount: busy"));
 * console.log(e.message); // layer "abc": get /r/mnt/abc: mount: busy
 * ```
 */
export class LayerError extends Error {
  /** The layer id. */
  readonly id: string;
  /** The operation, e.g. `"get"`. */
  readonly op: string;
  /** The path involved. */
  readonly path: string;
  /** Wrap `cause`, raised while doing `op` on layer `id` at `path`. */
  constructor(id: string, op: string, path: string, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`layer ${JSON.stringify(id)}: ${op}${path ? ` ${path}` : ""}: ${why}`, { cause });
    this.name = "LayerError";
    this.id = id;
    this.op = op;
    this.path = path;
  }
}

/**
 * A layer was not removed because it is in use: other layers build on it, or
 * it is mounted. Raised by `remove(id, { ifUnused: true })`, which checks
 * under the layer's lock, so the check and the removal cannot be separated
 * by another process's `get`.
 *
 * @example
 * ```ts
 * import { LayerInUseError } from "./errors.ts";
 * const e = new LayerInUseError("base", ["child"], 0);
 * console.log(e.message); // layer "base": remove: in use: 1 layer(s) build on it (child)
 * ```
 */
export class LayerInUseError extends LayerError {
  /** Layers whose chain names this one. */
  readonly children: string[];
  /** Its mount count. */
  readonly mounts: number;
  /** `children` build on layer `id`, which has `mounts` references. */
  constructor(id: string, children: string[], mounts: number) {
    const why = children.length > 0
      ? `${children.length} layer(s) build on it (${children.slice(0, 5).join(", ")}${
        children.length > 5 ? ", ..." : ""
      })`
      : `it is mounted (${mounts} reference(s))`;
    super(id, "remove", "", new Error(`in use: ${why}`));
    this.name = "LayerInUseError";
    this.children = children;
    this.mounts = mounts;
  }
}

/**
 * `diff(id, parent, { source: "original" })` cannot give the applied tar's
 * own bytes: the layer has no tar-split record (it was not filled by
 * `applyDiff`, or it was held writable by `get`, or a second tar was applied
 * to it), or `parent` is not its direct parent.
 *
 * @example
 * ```ts
 * import { TarSplitUnavailableError } from "./errors.ts";
 * const e = new TarSplitUnavailableError("app", "/r/tar-split/app.tar-split.gz", "no record");
 * console.log(e.message); // layer "app": diff (original bytes) /r/tar-split/app.tar-split.gz: no record
 * ```
 */
export class TarSplitUnavailableError extends LayerError {
  /** Layer `id` has no usable record at `path`, because `why`. */
  constructor(id: string, path: string, why: string) {
    super(id, "diff (original bytes)", path, new Error(why));
    this.name = "TarSplitUnavailableError";
  }
}

/**
 * A layer is marked incomplete (a create, import or apply did not finish),
 * so the operation refuses to use it; the message says what was interrupted
 * and what can be done (re-apply, or remove and create again).
 *
 * @example
 * ```ts
 * import { LayerIncompleteError } from "./errors.ts";
 * const e = new LayerIncompleteError("a", "get", "apply into a populated layer");
 * console.log(e.message);
 * // layer "a": get: the layer is incomplete (apply into a populated layer did not finish): its ...
 * ```
 */
export class LayerIncompleteError extends LayerError {
  /** What was interrupted (the marker's text). */
  readonly reason: string;
  /** `op` on layer `id` refused; `reason` is its marker's text. */
  constructor(id: string, op: string, reason: string) {
    super(id, op, "", new Error(describeIncomplete(reason)));
    this.name = "LayerIncompleteError";
    this.reason = reason;
  }
}

/**
 * A directory is not a strata driver root (no `strata.json` marker, a foreign
 * or newer marker, or a system directory), so strata refuses to change it.
 *
 * @example
 * ```ts
 * import { NotStrataRootError } from "./errors.ts";
 * const e = new NotStrataRootError("/srv/data", "it holds files and has no strata.json");
 * console.log(e.message);
 * // /srv/data is not a strata root: it holds files and has no strata.json; nothing was changed
 * ```
 */
export class NotStrataRootError extends Error {
  /** The directory refused. */
  readonly root: string;
  /** `root` was refused because of `why`. */
  constructor(root: string, why: string, options?: ErrorOptions) {
    super(`${root} is not a strata root: ${why}; nothing was changed`, options);
    this.name = "NotStrataRootError";
    this.root = root;
  }
}

/**
 * A driver opened read-only (`{ readOnly: true }`) was asked to change the
 * store.
 *
 * @example
 * ```ts
 * import { ReadOnlyError } from "./errors.ts";
 * console.log(new ReadOnlyError("/var/lib/strata", "create").message);
 * // create: the driver at /var/lib/strata was opened read-only
 * ```
 */
export class ReadOnlyError extends Error {
  /** `op` was refused on the read-only driver at `root`. */
  constructor(root: string, op: string) {
    super(`${op}: the driver at ${root} was opened read-only`);
    this.name = "ReadOnlyError";
  }
}

/**
 * Deno has not granted a permission strata needs (it never prompts for
 * one); the message names the flag to add.
 *
 * @example
 * ```ts
 * import { PermissionMissingError } from "./errors.ts";
 * console.log(new PermissionMissingError("create needs --allow-write (/var/lib/strata)").message);
 * ```
 */
export class PermissionMissingError extends Error {
  /** `what` names the permission and why it was needed. */
  constructor(what: string, options?: ErrorOptions) {
    super(what, options);
    this.name = "PermissionMissingError";
  }
}
