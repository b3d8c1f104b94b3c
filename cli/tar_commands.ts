/**
 * Commands that move layer content: `diff` (tar out), `apply` (tar in),
 * `changes` and `diff-size`.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { incompleteRemedy, LayerIncompleteError, LayerNotFoundError } from "../mod.ts";
import { UsageError } from "./args.ts";
import { granted } from "../lib/permissions.ts";
import { type Handler, parentOf, progressFor, requireLayer, stringFlag } from "./context.ts";
import { openTarInput } from "./decompress.ts";
import { NotedError } from "./errors.ts";
import { AT, O, systemLibc } from "../ffi/libc.ts";
import { TarStream } from "../lib/archive/tar_appender.ts";
import { humanBytes } from "./output.ts";
import type { Progress } from "./progress.ts";
import { TarEntryCounter } from "./tar_count.ts";

async function isRegularOrMissing(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return true;
    throw e;
  }
}

const STDOUT_FD = 1;

/** Size of the one buffer a tar is copied through. */
const COPY_CHUNK = 1 << 20;

/**
 * Copy `tar` to the descriptor `fd`. A tar made by strata's writer
 * ({@linkcode TarStream}) writes itself: one reused buffer, big bodies sent
 * kernel to kernel. Any other byte stream is read with BYOB reads into one
 * reused buffer, a plain stream (e.g. a tar reassembled from its tar-split
 * record) chunk by chunk; each piece is written synchronously. Bytes and
 * entries go to `progress`.
 */
async function copyTar(
  tar: ReadableStream<Uint8Array>,
  fd: number,
  progress: Progress,
): Promise<void> {
  const libc = systemLibc();
  const base = progress.entries;
  if (tar instanceof TarStream) {
    tar.writeToFd(fd, {
      onProgress: (bytes, entries) => {
        progress.entries = base + entries;
        progress.add(bytes - progress.bytes);
      },
    });
    return;
  }
  const counter = new TarEntryCounter();
  const take = (chunk: Uint8Array) => {
    counter.push(chunk);
    progress.entries = base + counter.entries;
    progress.add(chunk.length);
    libc.writeAll(fd, chunk);
  };
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = tar.getReader({ mode: "byob" });
  } catch {
    // not a byte stream: its own chunks, written as they come
  }
  const reader = byob ?? tar.getReader();
  try {
    if (byob) {
      let buf = new Uint8Array(COPY_CHUNK);
      for (;;) {
        const { done, value } = await byob.read(buf);
        if (done || value === undefined) break;
        take(value);
        buf = new Uint8Array(value.buffer);
      }
    } else {
      const plain = reader as ReadableStreamDefaultReader<Uint8Array>;
      for (;;) {
        const { done, value } = await plain.read();
        if (done) break;
        take(value);
      }
    }
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    throw e;
  } finally {
    reader.releaseLock();
  }
}

/**
 * Write `tar` into `file`: a regular file is written beside it first and
 * renamed into place when complete, so a failure never leaves half a tar
 * under the requested name; a device or fifo is written directly.
 */
async function writeTarFile(
  tar: ReadableStream<Uint8Array>,
  file: string,
  progress: Progress,
): Promise<void> {
  const libc = systemLibc();
  const regular = await isRegularOrMissing(file);
  const base = file.split("/").pop() ?? "";
  const target = regular ? join(dirname(file), `.${base}.strata-${Deno.pid}.partial`) : file;
  if (regular) sweepDeadPartials(dirname(file), base);
  const flags = regular ? O.WRONLY | O.CREAT | O.TRUNC : O.WRONLY;
  // Ctrl-C or a kill(1) must not leave hundreds of MB of half a tar behind
  // (listening before the file exists: no instant where it would be left).
  const onSignal = (signal: Deno.Signal) => () => {
    if (regular) {
      try {
        Deno.removeSync(target);
      } catch {
        // already gone
      }
    }
    Deno.exit(signal === "SIGINT" ? 130 : 143);
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => [sig, onSignal(sig)] as const);
  for (const [sig, handler] of handlers) Deno.addSignalListener(sig, handler);
  try {
    const fd = libc.openat(AT.FDCWD, target, flags, 0o644);
    try {
      await copyTar(tar, fd, progress);
    } finally {
      libc.close(fd);
    }
    if (regular) await Deno.rename(target, file);
  } catch (e) {
    if (regular) await Deno.remove(target).catch(() => {});
    throw new Error(`write ${file}: ${(e as Error).message}`, { cause: e });
  } finally {
    for (const [sig, handler] of handlers) Deno.removeSignalListener(sig, handler);
  }
}

/**
 * Delete `.<base>.strata-<pid>.partial` files in `dir` whose process is gone
 * (a `diff -o` killed with SIGKILL, which no handler sees).
 */
function sweepDeadPartials(dir: string, base: string): void {
  if (!granted({ name: "read", path: "/proc" })) return; // never a permission prompt
  const prefix = `.${base}.strata-`;
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.isFile).map((e) => e.name);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith(".partial")) continue;
    const pid = name.slice(prefix.length, -".partial".length);
    if (!/^\d+$/.test(pid) || Number(pid) === Deno.pid) continue;
    try {
      Deno.lstatSync(`/proc/${pid}`);
      continue; // that process still runs
    } catch {
      // gone: its partial output is garbage
    }
    try {
      Deno.removeSync(join(dir, name));
    } catch {
      // removed meanwhile
    }
  }
}

/** `strata diff ID [--parent P] [-o FILE]`: the layer's changes as a tar. */
export const diff: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  const file = stringFlag(ctx, "output");
  if (file === undefined && Deno.stdout.isTerminal()) {
    throw new UsageError(
      "refusing to write a tar to a terminal",
      `strata diff ${id} -o FILE, or redirect stdout`,
    );
  }
  const want = stringFlag(ctx, "source") ?? "auto";
  if (want !== "auto" && want !== "original" && want !== "rebuilt") {
    throw new UsageError(
      `--source must be auto, original or rebuilt, not ${JSON.stringify(want)}`,
      `strata diff ${id} --source original`,
    );
  }
  await requireLayer(ctx, id);
  const parent = await parentOf(ctx, id);
  const progress = progressFor(ctx, `diff ${id}`);
  let source: string;
  try {
    const tar = await ctx.driver.diff(id, parent, { source: want });
    source = tar.source;
    if (file === undefined) {
      await copyTar(tar, STDOUT_FD, progress);
      return { json: undefined, text: [], silent: true };
    }
    await writeTarFile(tar, file, progress);
  } finally {
    progress.done();
  }
  return {
    json: {
      id,
      parent: parent || null,
      file,
      bytes: progress.bytes,
      entries: progress.entries,
      source,
    },
    text: [],
    note: [
      `wrote ${humanBytes(progress.bytes)} (${progress.entries} entries) to ${file}` +
      (source === "original" ? " (the applied tar, byte for byte)" : " (rebuilt from the files)"),
    ],
  };
};

/** `strata apply ID [--parent P] [FILE|-]`: apply a plain or gzip layer tar; prints the size. */
export const apply: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  const source = ctx.operands[1] ?? "-";
  if (source === "-" && Deno.stdin.isTerminal()) {
    throw new UsageError(
      "refusing to read a tar from a terminal",
      `strata apply ${id} FILE, or redirect stdin`,
    );
  }
  // An incomplete layer is the driver's to judge: one that was empty can be re-applied.
  if (!(await ctx.view.known(id))) throw new LayerNotFoundError(id);
  const parent = await parentOf(ctx, id);
  // A plain file goes on as its own byte stream (the extraction's BYOB fast
  // path); gzip and zstd are inflated by a worker on the second core.
  const { stream, format } = await openTarInput(source);
  const progress = progressFor(ctx, `apply ${id}`);
  // Percent and time left when the input is a plain regular file: its size is
  // the number of tar bytes to read (a compressed file's is not).
  if (format === "none" && source !== "-") {
    const info = await Deno.stat(source);
    if (info.isFile) progress.startInput(info.size);
  }
  let size: number;
  try {
    // The driver marks the layer incomplete while it fills it: a crash or a
    // bad tar leaves it flagged for `strata check`, not silently half-applied.
    // Bytes and entries are counted by the extraction itself.
    size = await ctx.driver.applyDiff(id, parent, stream, {
      onProgress: (bytes, entries) => {
        if (progress.inputTotal !== undefined) progress.inputBytes = bytes;
        progress.add(bytes - progress.bytes, entries - progress.entries);
      },
    });
  } catch (e) {
    if (e instanceof LayerIncompleteError) throw e; // refused before anything changed
    const left = (await ctx.view.incomplete().catch(() => [])).find((m) => m.id === id);
    if (!left) throw e;
    throw new NotedError(
      e,
      `layer ${id} is left marked incomplete (${left.why}): ${incompleteRemedy(left.why)} ` +
        `(\`strata rm ${id}\` removes it)`,
    );
  } finally {
    progress.done();
  }
  return {
    json: {
      id,
      parent: parent || null,
      size,
      compression: format,
      bytes: progress.bytes,
      entries: progress.entries,
    },
    text: [sizeText(size, ctx.globals.quiet)],
  };
};

/** A size for people (`2.9 KiB (3000 bytes)`), or with `-q` the plain number for scripts. */
function sizeText(size: number, quiet: boolean): string {
  if (quiet) return String(size);
  return size < 1024 ? `${size} B` : `${humanBytes(size)} (${size} bytes)`;
}

/** Open a tar file for reading, naming it in the error. */
export async function openInput(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (e) {
    throw new Error(`open ${path}: ${(e as Error).message}`, { cause: e });
  }
}

const KIND_LETTER = { add: "A", modify: "C", delete: "D" } as const;

/** `strata changes ID [--parent P]`: `A /path`, `C /path`, `D /path`, as `docker diff`. */
export const changes: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  await requireLayer(ctx, id);
  const parent = await parentOf(ctx, id);
  const list = await ctx.driver.changes(id, parent);
  return {
    json: { id, parent: parent || null, changes: list },
    text: list.map((c) => `${KIND_LETTER[c.kind]} ${c.path}`),
  };
};

/** `strata diff-size ID [--parent P]`: bytes of the layer's changes. */
export const diffSize: Handler = async (ctx) => {
  const id = ctx.operands[0];
  ctx.setLayer(id);
  await requireLayer(ctx, id);
  const parent = await parentOf(ctx, id);
  const size = await ctx.driver.diffSize(id, parent);
  return { json: { id, parent: parent || null, size }, text: [sizeText(size, ctx.globals.quiet)] };
};
