/**
 * `strata check [--repair]`: report (and fix what is safe of) crash
 * leftovers; exit 1 while problems remain.
 *
 * @module
 */

import { checkRoot, UnionDriver } from "../mod.ts";
import { type Handler, progressFor } from "./context.ts";

/** `strata check [--repair]`. */
export const check: Handler = async (ctx) => {
  const driver = ctx.driver;
  if (!(driver instanceof UnionDriver)) {
    throw new Error(`check: the ${driver.name} driver keeps no state strata can check`);
  }
  const repair = ctx.flags.repair === true;
  const progress = progressFor(ctx, repair ? "check --repair" : "check");
  let report;
  try {
    report = await checkRoot(driver, {
      repair,
      onLayer: (n) => progress.add(0, n - progress.entries),
    });
  } finally {
    progress.done();
  }
  const text = report.findings.map((f) =>
    `${f.state.toUpperCase().padEnd(8)} ${f.kind}${f.id ? ` ${f.id}` : ""}: ${f.path}: ${f.detail}`
  );
  const summary = report.findings.length === 0
    ? `${report.root}: ${report.layers} layer(s), no problems`
    : `${report.root}: ${report.layers} layer(s), ${report.findings.length} problem(s)` +
      (report.clean
        ? ", all repaired"
        : repair
        ? ", some left"
        : " (strata check --repair fixes what is safe)");
  return {
    json: report,
    text: [...text, summary],
    exitCode: report.clean ? 0 : 1,
  };
};
