/**
 * Runs one `strata` command line (the arguments) with the fault seam
 * installed, for tests that need the process to die: the plan comes as JSON
 * in `STRATA_FAULT_PLAN` (`{ root, plan, trace? }`); with `trace`, the
 * counted calls are written there as JSON when the command finishes.
 *
 * @module
 */

import { systemLibc } from "../../ffi/libc.ts";
import { main } from "../../cli/main.ts";
import { type FaultPlan, installFaultSeam } from "./fault_seam.ts";

const spec = JSON.parse(Deno.env.get("STRATA_FAULT_PLAN") ?? "{}") as {
  root: string;
  plan: FaultPlan;
  trace?: string;
};
const seam = installFaultSeam(systemLibc(), spec.root, spec.plan);
const code = await main(Deno.args);
seam.uninstall();
if (spec.trace) Deno.writeTextFileSync(spec.trace, JSON.stringify(seam.calls));
Deno.exit(code);
