/**
 * User and group names for tar headers: uid → user name from `/etc/passwd`,
 * gid → group name from `/etc/group`, the way Go's `archive/tar` fills
 * `Uname`/`Gname` (first entry with that id wins; comment lines, blank lines
 * and NIS `+`/`-` entries are ignored; an id without an entry has no name).
 *
 * Each file is parsed once into a map and re-read only when it changed
 * (size, mtime or inode differ), which {@linkcode IdNames.refresh} checks.
 *
 * @module
 */

interface Db {
  names: Map<number, string>;
  /** `size:mtime:ino` of the file when it was read ("" when it is missing). */
  stamp: string;
}

const decoder = new TextDecoder();

function stampOf(path: string): string {
  try {
    const st = Deno.statSync(path);
    return `${st.size}:${st.mtime?.getTime()}:${st.ino}`;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  }
}

/**
 * Parses a passwd- or group-format file: `name:x:id:...`, at least
 * `minFields` colon-separated fields, id in the third.
 */
function parseColonFile(text: string, minFields: number): Map<number, string> {
  const names = new Map<number, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line[0] === "#") continue;
    const parts = line.split(":");
    if (parts.length < minFields) continue;
    const [name, , id] = parts;
    if (name === "" || name[0] === "+" || name[0] === "-") continue;
    if (!/^[0-9]+$/.test(id)) continue;
    const n = Number(id);
    if (!names.has(n)) names.set(n, name);
  }
  return names;
}

/**
 * Name lookups backed by a passwd and a group file.
 *
 * @example
 * ```ts
 * import { IdNames } from "./users.ts";
 * const names = new IdNames();
 * console.log(names.userName(0), names.groupName(0)); // root root
 * ```
 */
export class IdNames {
  readonly #passwdPath: string;
  readonly #groupPath: string;
  #users?: Db;
  #groups?: Db;

  /** Defaults: the host's `/etc/passwd` and `/etc/group`. */
  constructor(opts: { passwdPath?: string; groupPath?: string } = {}) {
    this.#passwdPath = opts.passwdPath ?? "/etc/passwd";
    this.#groupPath = opts.groupPath ?? "/etc/group";
  }

  #load(path: string, minFields: number): Db {
    const stamp = stampOf(path);
    const text = stamp === "" ? "" : decoder.decode(Deno.readFileSync(path));
    return { names: parseColonFile(text, minFields), stamp };
  }

  /** Re-reads a database whose file changed since it was read. Cheap: two stats. */
  refresh(): void {
    if (this.#users && this.#users.stamp !== stampOf(this.#passwdPath)) this.#users = undefined;
    if (this.#groups && this.#groups.stamp !== stampOf(this.#groupPath)) this.#groups = undefined;
  }

  /** The user name of `uid`, or "" when the passwd file has no entry. */
  userName(uid: number): string {
    this.#users ??= this.#load(this.#passwdPath, 7);
    return this.#users.names.get(uid) ?? "";
  }

  /** The group name of `gid`, or "" when the group file has no entry. */
  groupName(gid: number): string {
    this.#groups ??= this.#load(this.#groupPath, 4);
    return this.#groups.names.get(gid) ?? "";
  }
}

let host: IdNames | undefined;

/**
 * The process-wide lookups of the host's `/etc/passwd` and `/etc/group`,
 * refreshed when the files changed.
 *
 * @example
 * ```ts
 * import { hostIdNames } from "./users.ts";
 * console.log(hostIdNames().userName(0)); // root
 * ```
 */
export function hostIdNames(): IdNames {
  host ??= new IdNames();
  host.refresh();
  return host;
}
