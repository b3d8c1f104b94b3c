/**
 * The metadata store: one file per layer in `R/layers`, holding the layer's
 * whole ancestor chain, nearest first, one id and `"\n"` a line (an empty file
 * is a base layer). The format is containers/storage's; no valid id holds a
 * control character (`ids.ts`), so no id can split, join or hide a line. What changed is how it is
 * written (temp file, fsync, rename: a crash leaves the old file or the new)
 * and the "incomplete" markers in `R/incomplete` that say a layer's files are
 * not all in place yet.
 *
 * The store does no locking: callers hold the layer's lock.
 *
 * @module
 */

import { join } from "node:path";
import { isTempName, syncDir, writeFileAtomic } from "./atomic_write.ts";
import { LayerError, LayerNotFoundError } from "./errors.ts";
import { describeType, lstatKind, WrongEntryTypeError } from "./entry_type.ts";
import { compareBytewise, layerIdProblem, validateLayerId } from "./ids.ts";

/** Go's `bufio.MaxScanTokenSize`: a line this long (or longer) fails to scan. */
const MAX_LINE = 64 * 1024;

const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Split a layers file like Go's `bufio.Scanner` in line mode: lines end at
 * `"\n"`, one trailing `"\r"` is dropped, a last line without `"\n"` counts,
 * empty lines are skipped, nothing is trimmed. Throws on a line of 64 KiB or
 * more (Go's `token too long`).
 *
 * @example
 * ```ts
 * import { scanLines } from "./store.ts";
 * console.log(scanLines(new TextEncoder().encode("B\r\n\nA"))); // ["B", "A"]
 * ```
 */
export function scanLines(data: Uint8Array): string[] {
  const out: string[] = [];
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0x0a, start);
    const next = end < 0 ? data.length : end + 1;
    if (end < 0) end = data.length;
    if (end - start >= MAX_LINE) {
      throw new Error(`line of ${end - start} bytes: token too long (limit ${MAX_LINE - 1})`);
    }
    const stop = end > start && data[end - 1] === 0x0d ? end - 1 : end;
    if (stop > start) out.push(strictUtf8.decode(data.subarray(start, stop)));
    start = next;
  }
  return out;
}

function isNotFound(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound;
}

/**
 * The layers directory of a driver root, with crash-safe writes.
 *
 * @example
 * ```ts
 * import { LayerStore } from "./store.ts";
 * const store = new LayerStore(await Deno.makeTempDir());
 * await store.write("A", []);
 * await store.write("B", ["A"]);
 * console.log(await store.parents("B")); // ["A"]
 * ```
 */
export class LayerStore {
  /** `R/layers`: one file per layer. */
  readonly layersDir: string;
  /** `R/incomplete`: one marker per layer whose files are not all in place. */
  readonly incompleteDir: string;

  /** `root` is the driver root `R`; nothing is touched until a method runs. */
  constructor(root: string) {
    this.layersDir = join(root, "layers");
    this.incompleteDir = join(root, "incomplete");
  }

  /** Path of the layers file of `id` (validated). */
  fileOf(id: string): string {
    validateLayerId(id);
    return join(this.layersDir, id);
  }

  /**
   * The ancestor chain of `id`, nearest first (`[]` for a base layer).
   * Throws {@linkcode LayerNotFoundError} when the layers file is missing and
   * {@linkcode LayerError} when it is unreadable or names an invalid id (a
   * corrupt file must not steer paths outside the root).
   */
  async parents(id: string): Promise<string[]> {
    const path = this.fileOf(id);
    let data: Uint8Array;
    try {
      // Never read through a link: its target could be anything outside the root.
      if (lstatKind(path, "file") === undefined) throw new Deno.errors.NotFound(`no ${path}`);
      data = await Deno.readFile(path);
    } catch (e) {
      if (isNotFound(e)) throw new LayerNotFoundError(id, `no ${path}`, { cause: e });
      throw new LayerError(id, "read parent chain", path, e);
    }
    let chain: string[];
    try {
      chain = scanLines(data);
    } catch (e) {
      throw new LayerError(id, "parse parent chain", path, e);
    }
    chain.forEach((p, i) => {
      const problem = layerIdProblem(p);
      if (problem !== undefined) {
        const why = new Error(`line ${i + 1}: ${JSON.stringify(p)} ${problem}`);
        throw new LayerError(id, "parse parent chain", path, why);
      }
    });
    return chain;
  }

  /**
   * Write the layers file of `id`: `chain` (nearest first) one id a line,
   * each ending in `"\n"`; `[]` writes an empty file. Atomic and durable.
   */
  async write(id: string, chain: readonly string[]): Promise<void> {
    validateLayerId(id);
    chain.forEach(validateLayerId);
    const text = chain.map((p) => p + "\n").join("");
    try {
      await writeFileAtomic(this.layersDir, id, encoder.encode(text));
    } catch (e) {
      throw new LayerError(id, "write parent chain", join(this.layersDir, id), e);
    }
  }

  /** Delete the layers file of `id`; a missing file is not an error. */
  async remove(id: string): Promise<void> {
    const path = this.fileOf(id);
    try {
      await Deno.remove(path);
    } catch (e) {
      if (isNotFound(e)) return;
      throw new LayerError(id, "remove layers file", path, e);
    }
    await syncDir(this.layersDir);
  }

  /**
   * Whether `id` is a complete layer: its layers entry exists (and is not a
   * directory) and no incomplete marker is set. Invalid ids never exist.
   */
  async exists(id: string): Promise<boolean> {
    if (layerIdProblem(id) !== undefined) return false;
    try {
      const st = await Deno.lstat(join(this.layersDir, id));
      if (st.isDirectory) return false;
      if (!st.isFile) {
        const path = join(this.layersDir, id);
        throw new WrongEntryTypeError(path, describeType(st), "file");
      }
    } catch (e) {
      if (isNotFound(e)) return false;
      throw new LayerError(id, "lstat layers file", join(this.layersDir, id), e);
    }
    return !(await this.#isMarked(id));
  }

  /** Ids of complete layers, sorted byte-wise; temp files and incomplete layers left out. */
  async list(): Promise<string[]> {
    const marked = new Set((await this.incomplete()).map((m) => m.id));
    return (await this.#allIds()).filter((id) => !marked.has(id));
  }

  /**
   * Mark `id` incomplete, durably, with a note of why (e.g. `"create"`,
   * `"applyDiff"`). Until {@linkcode LayerStore.clearIncomplete} it is not
   * listed and does not exist.
   */
  async markIncomplete(id: string, why: string): Promise<void> {
    validateLayerId(id);
    try {
      await writeFileAtomic(this.incompleteDir, id, encoder.encode(why));
    } catch (e) {
      throw new LayerError(id, "mark incomplete", join(this.incompleteDir, id), e);
    }
  }

  /** Remove the incomplete marker of `id` (durably); no marker is not an error. */
  async clearIncomplete(id: string): Promise<void> {
    validateLayerId(id);
    const path = join(this.incompleteDir, id);
    try {
      await Deno.remove(path);
    } catch (e) {
      if (isNotFound(e)) return;
      throw new LayerError(id, "clear incomplete marker", path, e);
    }
    await syncDir(this.incompleteDir);
  }

  /** The layers marked incomplete (crash leftovers when no operation runs), sorted by id. */
  async incomplete(): Promise<{ id: string; why: string }[]> {
    const out: { id: string; why: string }[] = [];
    for (const id of await this.#namesIn(this.incompleteDir)) {
      try {
        const path = join(this.incompleteDir, id);
        if (lstatKind(path, "file") === undefined) continue;
        out.push({ id, why: await Deno.readTextFile(path) });
      } catch (e) {
        if (!isNotFound(e)) {
          throw new LayerError(id, "read incomplete marker", this.incompleteDir, e);
        }
      }
    }
    return out;
  }

  /**
   * The text of `id`'s incomplete marker (what was interrupted), or
   * `undefined` when it has none. A marker that is not a regular file is an
   * error naming it.
   */
  async marker(id: string): Promise<string | undefined> {
    validateLayerId(id);
    const path = join(this.incompleteDir, id);
    try {
      if (lstatKind(path, "file") === undefined) return undefined;
      return await Deno.readTextFile(path);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw new LayerError(id, "read incomplete marker", path, e);
    }
  }

  /**
   * Whether a layers file (complete or not) exists for `id`; a file of
   * another type is an error naming it.
   */
  hasChainFile(id: string): Promise<boolean> {
    try {
      const path = this.fileOf(id);
      try {
        return Promise.resolve(lstatKind(path, "file") !== undefined);
      } catch (e) {
        throw new LayerError(id, "lstat layers file", path, e);
      }
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Whether some layer (complete or not) builds on `id`; stops at the first one found. */
  async hasChildren(id: string): Promise<boolean> {
    validateLayerId(id);
    for (const other of await this.#allIds()) {
      if (other === id) continue;
      try {
        if ((await this.parents(other)).includes(id)) return true;
      } catch (e) {
        // Removed meanwhile, or an unreadable chain (`check` reports those).
        if (!(e instanceof LayerError || e instanceof LayerNotFoundError)) throw e;
      }
    }
    return false;
  }

  /**
   * Ids (complete or not) whose ancestor chain names `id` — its children and
   * all their descendants — sorted byte-wise.
   */
  async children(id: string): Promise<string[]> {
    validateLayerId(id);
    const out: string[] = [];
    for (const other of await this.#allIds()) {
      if (other === id) continue;
      let chain: string[];
      try {
        chain = await this.parents(other);
      } catch (e) {
        if (e instanceof LayerNotFoundError) continue; // removed meanwhile
        throw e;
      }
      if (chain.includes(id)) out.push(other);
    }
    return out;
  }

  async #isMarked(id: string): Promise<boolean> {
    try {
      await Deno.lstat(join(this.incompleteDir, id));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw new LayerError(id, "lstat incomplete marker", join(this.incompleteDir, id), e);
    }
  }

  /** Every layers entry that could be a layer (complete or not). */
  #allIds(): Promise<string[]> {
    return this.#namesIn(this.layersDir);
  }

  /** Sorted names of non-directory entries of `dir` that are valid ids; `[]` if `dir` is missing. */
  async #namesIn(dir: string): Promise<string[]> {
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) {
        if (e.isDirectory || isTempName(e.name) || layerIdProblem(e.name) !== undefined) continue;
        names.push(e.name);
      }
    } catch (e) {
      if (isNotFound(e)) return [];
      throw new Error(`list ${dir}: ${(e as Error).message}`, { cause: e });
    }
    return names.sort(compareBytewise);
  }
}
