/**
 * Where the Go reference peer (containers/storage's archive code as
 * `storagepeer`) and its tree generator live, for the differential tests.
 * `.ci/run` builds the peer; on a newcomer's machine it may be absent, and the
 * tests that need it then say so in one line and are ignored.
 *
 * @module
 */

/** The peer binary (`STRATA_PEER` overrides, e.g. to check the skip path). */
export const PEER: string = Deno.env.get("STRATA_PEER") ?? "/tmp/peers/bin/storagepeer";

/** mktree.sh from shared/, which sits beside the repository. */
export const MKTREE: string =
  new URL("../../../shared/peers/go-storage/mktree.sh", import.meta.url).pathname;

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Whether the peer binary and mktree.sh are both there. */
export function peerAvailable(): boolean {
  return isFile(PEER) && isFile(MKTREE);
}
