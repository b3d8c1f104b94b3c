/**
 * The `strata` command: layered container filesystems from the shell.
 *
 * ```sh
 * strata --root /var/lib/strata create base
 * strata --root /var/lib/strata apply base layer.tar.gz
 * strata --root /var/lib/strata create app --parent base
 * strata --root /var/lib/strata mount app
 * ```
 *
 * Run `strata --help` for every command. As a library entry point it exports
 * {@linkcode main}, which runs a command line and resolves to its exit status.
 *
 * @module
 */

import { main } from "./cli/main.ts";

export { main };
export type { MainIO } from "./cli/main.ts";
export type { SyncWriter } from "./cli/output.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));
