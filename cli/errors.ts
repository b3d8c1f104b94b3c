/**
 * Turns any error a command raised into the one line strata prints and the
 * exit status: 2 for usage mistakes (with a hint), 1 for everything else,
 * with distinct wording for the causes a user can fix (not root, no backend
 * in this kernel, missing `--allow-ffi`).
 *
 * @module
 */

import { FfiPermissionError, InvalidLayerIdError, NotSupportedError } from "../mod.ts";
import { UsageError } from "./args.ts";
import { FfiNotAllowedError, NotRootError, PermissionMissingError } from "./preflight.ts";

/**
 * An error with a note for the user appended to its message (e.g. what state
 * a layer was left in); classified as the error it wraps.
 */
export class NotedError extends Error {
  /** The error being reported. */
  readonly inner: unknown;
  /** What to add after its message. */
  readonly note: string;
  /** Wrap `inner`, adding `note`. */
  constructor(inner: unknown, note: string) {
    super(`${inner instanceof Error ? inner.message : String(inner)} (${note})`, { cause: inner });
    this.name = "NotedError";
    this.inner = inner;
    this.note = note;
  }
}

/** What to print for an error and how to exit. */
export interface ErrorReport {
  /** The one-line message (without the `strata: ` prefix). */
  message: string;
  /** A stable kind for `--json` consumers, e.g. `"usage"`, `"not-root"`. */
  kind: string;
  /** 1 (runtime) or 2 (usage). */
  exitCode: number;
}

/** Where the error happened, to name it in the message. */
export interface ErrorContext {
  /** The command being run, if known. */
  command?: string;
  /** The layer it worked on, if any. */
  id?: string;
  /** The `--driver` value. */
  driver?: string;
}

function prefix(ctx: ErrorContext, message: string): string {
  if (!ctx.command) return message;
  const mentionsLayer = ctx.id !== undefined && message.includes(JSON.stringify(ctx.id));
  const who = ctx.id !== undefined && !mentionsLayer ? `${ctx.command} ${ctx.id}` : ctx.command;
  return `${who}: ${message}`;
}

/**
 * Classify `e` for printing.
 *
 * @example
 * ```ts
 * import { describeError } from "./errors.ts";
 * import { UsageError } from "./args.ts";
 * console.log(describeError(new UsageError("missing ID", "strata rm --help"), {}));
 * // { message: "missing ID (see: strata rm --help)", kind: "usage", exitCode: 2 }
 * ```
 */
export function describeError(e: unknown, ctx: ErrorContext): ErrorReport {
  if (e instanceof NotedError) {
    const inner = describeError(e.inner, ctx);
    return { ...inner, message: `${inner.message} (${e.note})` };
  }
  if (e instanceof UsageError) {
    return { message: `${e.message} (see: ${e.hint})`, kind: "usage", exitCode: 2 };
  }
  if (e instanceof InvalidLayerIdError) {
    const hint = ctx.command ? `strata ${ctx.command} --help` : "strata --help";
    return { message: prefix(ctx, `${e.message} (see: ${hint})`), kind: "usage", exitCode: 2 };
  }
  if (e instanceof NotRootError) return { message: e.message, kind: "not-root", exitCode: 1 };
  if (e instanceof FfiNotAllowedError || e instanceof FfiPermissionError) {
    const msg = e instanceof FfiNotAllowedError ? e.message : `missing --allow-ffi: ${e.message}`;
    return { message: msg, kind: "no-ffi", exitCode: 1 };
  }
  if (e instanceof NotSupportedError) {
    const msg = ctx.driver === "auto" || ctx.driver === undefined
      ? `kernel lacks aufs and overlay, strata cannot run here: ${e.message}`
      : `kernel or filesystem cannot run the ${ctx.driver} backend: ${e.message}`;
    return { message: msg, kind: "not-supported", exitCode: 1 };
  }
  if (e instanceof PermissionMissingError) {
    return { message: e.message, kind: "permission", exitCode: 1 };
  }
  if (e instanceof Deno.errors.NotCapable) {
    return {
      message: prefix(ctx, `missing permission: ${e.message}`),
      kind: "permission",
      exitCode: 1,
    };
  }
  const err = e instanceof Error ? e : new Error(String(e));
  return { message: prefix(ctx, err.message), kind: kindOf(err), exitCode: 1 };
}

function kindOf(e: Error): string {
  // "LayerNotFoundError" -> "layer-not-found"
  return e.name.replace(/Error$/, "").replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase() ||
    "error";
}
