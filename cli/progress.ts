/**
 * The progress line long commands (diff, apply, import, check) draw on stderr
 * when it is a terminal: bytes, entries, rate and elapsed time, and, when the
 * size of the input is known (a file), the percent done and the time left;
 * redrawn at most every 100 ms and erased when the work ends. Disabled (a no-op) when
 * stderr is not a terminal or `-q` was given.
 *
 * @module
 */

import { humanBytes, type SyncWriter, writeAllSync } from "./output.ts";
import { TarEntryCounter } from "./tar_count.ts";

const encoder = new TextEncoder();
const REDRAW_MS = 100;

/** Options of {@linkcode Progress}. */
export interface ProgressOptions {
  /** Draw at all (false: every method is a no-op). */
  enabled: boolean;
  /** Where to draw (default stderr). */
  writer?: SyncWriter;
  /** Clock in ms (tests pass a fake). */
  now?: () => number;
}

/**
 * A progress line for one piece of work.
 *
 * @example
 * ```ts
 * import { Progress } from "./progress.ts";
 * const p = new Progress("apply abc", { enabled: Deno.stderr.isTerminal() });
 * p.add(4096, 1);
 * p.done();
 * ```
 */
export class Progress {
  /** Bytes so far. */
  bytes = 0;
  /** Entries (files, layers) so far. */
  entries = 0;
  /** Bytes of the input file read so far (compressed, as on disk). */
  inputBytes = 0;
  /** Size of the input file when known: then the line shows percent and time left. */
  inputTotal: number | undefined;
  #inputStart = 0;
  #label: string;
  #enabled: boolean;
  #writer: SyncWriter;
  #now: () => number;
  #start: number;
  #lastDraw = -Infinity;
  #drawn = false;

  /** `label` starts the line, e.g. `"diff abc"`. */
  constructor(label: string, opts: ProgressOptions) {
    this.#label = label;
    this.#enabled = opts.enabled;
    this.#writer = opts.writer ?? Deno.stderr;
    this.#now = opts.now ?? (() => performance.now());
    this.#start = this.#now();
  }

  /** Change what the line says it works on (e.g. the next file of an import). */
  relabel(label: string): void {
    this.#label = label;
  }

  /** A new input of `total` bytes (undefined: unknown, e.g. a pipe) begins. */
  startInput(total: number | undefined): void {
    this.inputTotal = total;
    this.inputBytes = 0;
    this.#inputStart = this.#now();
  }

  /** Count bytes read from the input file. */
  addInput(bytes: number): void {
    this.inputBytes += bytes;
    this.#maybeDraw();
  }

  /** Count more work, redrawing if the last draw is old enough. */
  add(bytes: number, entries = 0): void {
    this.bytes += bytes;
    this.entries += entries;
    this.#maybeDraw();
  }

  /** Milliseconds since the work began. */
  elapsedMs(): number {
    return this.#now() - this.#start;
  }

  /** The text of the line as it would be drawn now. */
  line(): string {
    const ms = this.elapsedMs();
    const secs = ms / 1000;
    const rate = secs > 0 ? this.bytes / secs : 0;
    const done = `${humanBytes(this.bytes)}, ${this.entries} entries, ` +
      `${humanBytes(Math.round(rate))}/s`;
    const total = this.inputTotal;
    if (!total || total <= 0) return `${this.#label}: ${done}, ${secs.toFixed(1)}s`;
    const fraction = Math.min(1, this.inputBytes / total);
    const inputSecs = (this.#now() - this.#inputStart) / 1000;
    const left = fraction > 0 && inputSecs > 0
      ? `${formatDuration(inputSecs * (1 - fraction) / fraction)} left`
      : "time left unknown";
    return `${this.#label}: ${(fraction * 100).toFixed(0)}% of ${humanBytes(total)}, ${done}, ` +
      left;
  }

  /** Erase the line (call when the work ends, also on failure). */
  done(): void {
    if (this.#enabled && this.#drawn) writeAllSync(this.#writer, encoder.encode("\r\x1b[K"));
    this.#drawn = false;
  }

  #maybeDraw(): void {
    if (!this.#enabled) return;
    const now = this.#now();
    if (now - this.#lastDraw < REDRAW_MS) return;
    this.#lastDraw = now;
    writeAllSync(this.#writer, encoder.encode(`\r\x1b[K${this.line()}`));
    this.#drawn = true;
  }
}

/** `75s` → `1m15s`; `3700s` → `1h01m`. */
function formatDuration(secs: number): string {
  const s = Math.round(secs);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

/**
 * A pass-through stream that counts the bytes read from an input file into
 * `progress` (for the percent done: they are compared with the file's size).
 *
 * @example
 * ```ts
 * import { inputProgress, Progress } from "./progress.ts";
 * const p = new Progress("apply", { enabled: false });
 * p.startInput(1024);
 * await new Response(new Blob([new Uint8Array(1024)]).stream().pipeThrough(inputProgress(p)))
 *   .arrayBuffer();
 * console.log(p.inputBytes); // 1024
 * ```
 */
export function inputProgress(progress: Progress): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      progress.addInput(chunk.length);
      controller.enqueue(chunk);
    },
  });
}

/**
 * A pass-through stream that reports the tar bytes and entries flowing
 * through it to `progress`.
 *
 * @example
 * ```ts
 * import { Progress, tarProgress } from "./progress.ts";
 * const p = new Progress("diff", { enabled: false });
 * const counted = new Blob([new Uint8Array(1024)]).stream().pipeThrough(tarProgress(p));
 * await new Response(counted).arrayBuffer();
 * console.log(p.bytes); // 1024
 * ```
 */
export function tarProgress(progress: Progress): TransformStream<Uint8Array, Uint8Array> {
  const counter = new TarEntryCounter();
  const base = progress.entries;
  return new TransformStream({
    transform(chunk, controller) {
      counter.push(chunk);
      progress.entries = base + counter.entries;
      progress.add(chunk.length);
      controller.enqueue(chunk);
    },
  });
}

/** Whether to draw progress: stderr is a terminal and `-q` was not given. */
export function progressWanted(quiet: boolean): boolean {
  if (quiet) return false;
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}
