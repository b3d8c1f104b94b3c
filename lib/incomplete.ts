/**
 * Why a layer is marked incomplete, and what its owner can do about it. The
 * marker file `incomplete/<id>` holds one of the reasons below (older roots
 * may hold `"apply"`); every message about an incomplete layer takes its
 * advice from {@linkcode incompleteRemedy}, so none promises what strata
 * then refuses.
 *
 * @module
 */

/** A create cut short: the layer's dirs or chain are not all in place. */
export const CREATING = "create";
/** A layer created empty for an import, whose tar was not applied yet. */
export const IMPORTING = "import";
/** A tar being applied into a layer that was empty: re-applying starts over from empty. */
export const APPLY_EMPTY = "apply into an empty layer";
/** A tar being applied over earlier content, now partly overwritten. */
export const APPLY_POPULATED = "apply into a populated layer";
/** What older roots wrote for any apply: whether the layer was empty is not known. */
const LEGACY_APPLY = "apply";

/**
 * Whether `applyDiff` may run on a layer marked with `reason`: yes when the
 * layer was empty before (the partial content is thrown away first).
 *
 * @example
 * ```ts
 * import { APPLY_EMPTY, APPLY_POPULATED, canReapply } from "./incomplete.ts";
 * console.log(canReapply(APPLY_EMPTY), canReapply(APPLY_POPULATED)); // true false
 * ```
 */
export function canReapply(reason: string): boolean {
  // CREATING: half-made; APPLY_POPULATED and an older root's "apply": earlier content
  // partly overwritten. Anything else was set by a create that left the layer empty
  // for its tar (an import), or by an apply into an empty layer.
  return reason !== CREATING && reason !== APPLY_POPULATED && reason !== LEGACY_APPLY;
}

/**
 * What the owner of a layer marked `reason` can do, in words that hold for
 * the library and the CLI alike.
 *
 * @example
 * ```ts
 * import { APPLY_POPULATED, incompleteRemedy } from "./incomplete.ts";
 * console.log(incompleteRemedy(APPLY_POPULATED));
 * ```
 */
export function incompleteRemedy(reason: string): string {
  switch (reason) {
    case APPLY_EMPTY:
    case IMPORTING:
      return "apply its tar again (that starts over from the empty layer), or remove the layer";
    case APPLY_POPULATED:
      return "its earlier content was partly overwritten and cannot be restored: " +
        "remove the layer and create it again";
    case CREATING:
      return "remove the layer (opening the driver again also does) and create it again";
    case LEGACY_APPLY:
      return "its content may be partial: remove the layer and create it again";
    default:
      // Set by a create for a layer to be filled (e.g. an import): it was empty.
      return "apply its tar again, or remove the layer";
  }
}

/**
 * One line for an incomplete layer: what was interrupted, then the remedy.
 *
 * @example
 * ```ts
 * import { APPLY_EMPTY, describeIncomplete } from "./incomplete.ts";
 * console.log(describeIncomplete(APPLY_EMPTY));
 * // the layer is incomplete (apply into an empty layer did not finish): apply its tar again ...
 * ```
 */
export function describeIncomplete(reason: string): string {
  // A marker is a file anyone with access to the root can write: quote odd text.
  // deno-lint-ignore no-control-regex
  const what = /[\x00-\x1f\x7f-\x9f"]/.test(reason) ? JSON.stringify(reason) : reason;
  return `the layer is incomplete (${what || "an operation"} did not finish): ${
    incompleteRemedy(reason)
  }`;
}
