/**
 * Defects of issue 9 that other work is fixing at the same time as the
 * fault, disk-full and concurrency tests were written, and how the problems
 * they cause read in those tests. A problem matching one is counted and
 * printed, not failed; every other problem fails. Each entry is deleted when
 * its fix lands (the tests then fail if the problem comes back).
 *
 * @module
 */

/** One known defect. */
export interface KnownDefect {
  /** Where it is tracked and what it is. */
  defect: string;
  /** Only in scenarios whose name matches (default: all). */
  scenario?: RegExp;
  /** The problem texts it explains. */
  problem: RegExp;
}

/** The defects not fixed yet. */
export const KNOWN_DEFECTS: KnownDefect[] = [];

/**
 * Split `problems` into the unexplained ones (returned) and the known ones
 * (counted into `known` by defect).
 *
 * @example
 * ```ts
 * import { triage } from "./known_defects.ts";
 * const known = new Map<string, number>();
 * console.log(triage(["layer X changed"], "rm", known)); // ["layer X changed"]
 * ```
 */
export function triage(problems: string[], scenario: string, known: Map<string, number>): string[] {
  const out: string[] = [];
  for (const p of problems) {
    const k = KNOWN_DEFECTS.find((k) =>
      k.problem.test(p) && (!k.scenario || k.scenario.test(scenario))
    );
    if (k) known.set(k.defect, (known.get(k.defect) ?? 0) + 1);
    else out.push(p);
  }
  return out;
}

/** Print one line per known defect seen. */
export function reportKnown(known: Map<string, number>): void {
  for (const [defect, count] of known) {
    console.log(`known defect, ${count} problem(s) (not failed): ${defect}`);
  }
}
