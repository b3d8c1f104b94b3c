/**
 * Asking Deno about a permission without ever prompting: strata only calls
 * what is already granted, skips optional steps that are not (loading a
 * kernel module, `auplink`), and names the missing flag in a one-line error
 * where the step is needed. A terminal user never sees a permission prompt.
 *
 * @module
 */

/**
 * Whether `desc` is granted now. Never prompts: `"prompt"` and `"denied"`
 * are both "no", and so is a descriptor this Deno cannot query.
 *
 * @example
 * ```ts
 * import { granted } from "./permissions.ts";
 * if (granted({ name: "run", command: "modprobe" })) {
 *   // safe to spawn modprobe: no prompt can appear
 * }
 * ```
 */
export function granted(desc: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(desc).state === "granted";
  } catch {
    return false;
  }
}
