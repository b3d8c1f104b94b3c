/**
 * Short names for layers: `<root>/l/<name>` symlinks to `../diff/<id>`, so a
 * deep chain's `lowerdir` fits one page when mounted from the root
 * (containers/storage keeps the same `l/` dir, with 26-character names).
 *
 * Names are a bijective base-62 count (`0`…`Z`, then `00`…`ZZ`, …); the
 * smallest free one is taken, so names stay one or two characters for the
 * first 3906 layers present at once. A name is claimed by symlink(2) itself
 * (EEXIST means another process took it: try the next), and every name is
 * checked against its link's target before it is used, so the links are a
 * cache that can always be rebuilt: a crash leaves at most a missing link
 * (made again on the next use) or a dangling one (swept at Init).
 *
 * @module
 */

import { join } from "node:path";
import { AT, Errno, errnoOf, type Libc, O } from "../../ffi/libc.ts";
import { layerIdProblem } from "../ids.ts";

/** Name of the short-link directory under the driver root. */
export const LINK_DIR = "l";

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const TARGET_PREFIX = "../diff/";
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
/** Invalid bytes become U+FFFD, which no valid id's target contains. */
const lenient = new TextDecoder();

/**
 * The `n`-th short name (n ≥ 0) in bijective base 62: `0`…`Z` are 0–61,
 * `00` is 62, `ZZ` is 3905, `000` is 3906.
 *
 * @example
 * ```ts
 * import { shortName } from "./links.ts";
 * console.log(shortName(0), shortName(61), shortName(62), shortName(3906)); // 0 Z 00 000
 * ```
 */
export function shortName(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`short name index ${n}`);
  let len = 1, count = 62;
  while (n >= count) {
    n -= count;
    len++;
    count *= 62;
  }
  let out = "";
  for (let i = 0; i < len; i++) {
    out = ALPHABET[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/** The layer id a link target `../diff/<id>` names, or `undefined` for any other target. */
function idOfTarget(target: Uint8Array): string | undefined {
  let text: string;
  try {
    text = strictUtf8.decode(target);
  } catch {
    return undefined;
  }
  if (!text.startsWith(TARGET_PREFIX)) return undefined;
  const id = text.slice(TARGET_PREFIX.length);
  return layerIdProblem(id) === undefined ? id : undefined;
}

/**
 * The `l/` links of one driver root. Synchronous: within a process no other
 * code runs between reading the directory and claiming a name.
 *
 * @example
 * ```ts
 * import { ShortLinks } from "./links.ts";
 * import { systemLibc } from "../../ffi/libc.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/diff/abc`, { recursive: true });
 * const links = new ShortLinks(systemLibc(), root);
 * console.log(links.ensure("abc")); // l/0
 * console.log(Deno.readLinkSync(`${root}/l/0`)); // ../diff/abc
 * ```
 */
export class ShortLinks {
  /** `<root>/l`. */
  readonly dir: string;
  readonly #root: string;
  readonly #libc: Libc;
  /** id → name, as last seen (verified before use). */
  readonly #byId = new Map<string, string>();
  /** Names seen taken (by any entry), as last seen. */
  readonly #used = new Set<string>();
  /** Whether `l/` was read at least once by this process. */
  #scanned = false;

  /** The links of the driver at `root` (absolute). */
  constructor(libc: Libc, root: string) {
    this.#libc = libc;
    this.#root = root;
    this.dir = join(root, LINK_DIR);
  }

  /** Make `l/` (0700) when it is missing. */
  makeDir(): void {
    try {
      this.#libc.mkdirat(AT.FDCWD, this.dir, 0o700);
    } catch (e) {
      if (errnoOf(e) !== Errno.EEXIST) throw e;
    }
  }

  /**
   * The short name of layer `id` relative to the root (`l/<name>`): its
   * existing link when that still points to `../diff/<id>`, else a new link
   * with the smallest free name.
   */
  ensure(id: string): string {
    return this.resolve([id])[0];
  }

  /**
   * A link for a layer just created (which has none yet): the smallest name
   * not known to be taken. `l/` is read only on the first call in this
   * process (so creating n layers costs O(n), not O(n²) readlinks); a name
   * another process took since is skipped on symlink(2)'s EEXIST, and a name
   * it freed is simply not reused until the next scan.
   */
  claim(id: string): string {
    if (!this.#scanned) this.#scan();
    const known = this.#byId.get(id);
    if (known !== undefined && this.#pointsTo(AT.FDCWD, join(this.dir, known), id)) {
      return LINK_DIR + "/" + known;
    }
    return LINK_DIR + "/" + this.#create(id);
  }

  /**
   * {@linkcode ShortLinks.ensure} for every id, in order, reading the
   * directory at most once. The cached names are checked through one
   * directory fd (a readlink of a one- or two-byte name each).
   */
  resolve(ids: readonly string[]): string[] {
    let dirfd: number;
    try {
      dirfd = this.#libc.openat(AT.FDCWD, this.dir, O.PATH | O.DIRECTORY);
    } catch (e) {
      if (errnoOf(e) !== Errno.ENOENT) throw e;
      this.makeDir();
      dirfd = this.#libc.openat(AT.FDCWD, this.dir, O.PATH | O.DIRECTORY);
    }
    try {
      let scanned = false;
      return ids.map((id) => {
        const got = this.#nameOf(id, scanned, dirfd);
        scanned ||= got.scanned;
        return LINK_DIR + "/" + got.name;
      });
    } finally {
      this.#libc.close(dirfd);
    }
  }

  /** Delete every link to `id`; returns how many were deleted. */
  remove(id: string): number {
    const cached = this.#byId.get(id);
    if (cached !== undefined && this.#pointsTo(AT.FDCWD, join(this.dir, cached), id)) {
      this.#unlink(cached);
      this.#byId.delete(id);
      return 1;
    }
    let removed = 0;
    for (const [name, target] of this.#scan()) {
      if (target === id) {
        this.#unlink(name);
        removed++;
      }
    }
    this.#byId.delete(id);
    return removed;
  }

  /**
   * Delete the links whose layer is gone (`diff/<id>` or `layers/<id>`
   * missing), e.g. after a crash between a layer's removal and its link's.
   * Entries that are not our links are left alone. Returns the names deleted.
   */
  sweep(): string[] {
    const gone: string[] = [];
    for (const [name, id] of this.#scan()) {
      if (id === undefined) continue;
      if (
        this.#exists(join(this.#root, "diff", id)) && this.#exists(join(this.#root, "layers", id))
      ) {
        continue;
      }
      this.#unlink(name);
      gone.push(name);
    }
    return gone;
  }

  /** Every entry of `l/`: name → layer id (`undefined` for entries that are not our links). */
  list(): Map<string, string | undefined> {
    return this.#scan();
  }

  #nameOf(id: string, scanned: boolean, dirfd: number): { name: string; scanned: boolean } {
    const cached = this.#byId.get(id);
    if (cached !== undefined && this.#pointsTo(dirfd, cached, id)) return { name: cached, scanned };
    this.#byId.delete(id);
    if (!scanned) {
      this.#scan();
      const found = this.#byId.get(id);
      if (found !== undefined) return { name: found, scanned: true };
    }
    return { name: this.#create(id), scanned: true };
  }

  /** Read `l/` afresh, rebuilding the caches; name → id. */
  #scan(): Map<string, string | undefined> {
    this.#scanned = true;
    const out = new Map<string, string | undefined>();
    this.#byId.clear();
    this.#used.clear();
    let names: string[];
    try {
      names = [...Deno.readDirSync(this.dir)].map((e) => e.name);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return out;
      throw new Error(`list ${this.dir}: ${(e as Error).message}`, { cause: e });
    }
    for (const name of names) {
      this.#used.add(name);
      let id: string | undefined;
      try {
        id = idOfTarget(this.#libc.readlinkat(AT.FDCWD, join(this.dir, name)));
      } catch (e) {
        const n = errnoOf(e);
        if (n !== Errno.EINVAL && n !== Errno.ENOENT) throw e;
      }
      out.set(name, id);
      if (id === undefined) continue;
      const prev = this.#byId.get(id);
      if (prev === undefined || name.length < prev.length) this.#byId.set(id, name);
    }
    return out;
  }

  #create(id: string): string {
    const target = TARGET_PREFIX + id;
    let madeDir = false;
    for (let n = 0;; n++) {
      const name = shortName(n);
      if (this.#used.has(name)) continue;
      try {
        this.#libc.symlinkat(target, AT.FDCWD, join(this.dir, name));
      } catch (e) {
        const errno = errnoOf(e);
        if (errno === Errno.EEXIST) {
          this.#used.add(name);
          continue;
        }
        if (errno === Errno.ENOENT && !madeDir) {
          this.makeDir();
          madeDir = true;
          n--;
          continue;
        }
        throw new Error(
          `short link ${join(this.dir, name)} -> ${target}: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
      this.#used.add(name);
      this.#byId.set(id, name);
      return name;
    }
  }

  /** Whether the link `path` (relative to `dirfd`) points to `../diff/<id>`. */
  #pointsTo(dirfd: number, path: string, id: string): boolean {
    try {
      return lenient.decode(this.#libc.readlinkat(dirfd, path)) === TARGET_PREFIX + id;
    } catch (e) {
      const n = errnoOf(e);
      if (n === Errno.ENOENT || n === Errno.EINVAL) return false;
      throw e;
    }
  }

  #unlink(name: string): void {
    try {
      this.#libc.unlinkat(AT.FDCWD, join(this.dir, name), 0);
    } catch (e) {
      if (errnoOf(e) !== Errno.ENOENT) {
        throw new Error(`remove short link ${join(this.dir, name)}: ${(e as Error).message}`, {
          cause: e,
        });
      }
    }
    this.#used.delete(name);
  }

  #exists(path: string): boolean {
    try {
      this.#libc.fstatat(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW);
      return true;
    } catch (e) {
      const n = errnoOf(e);
      if (n === Errno.ENOENT || n === Errno.ENOTDIR) return false;
      throw e;
    }
  }
}
