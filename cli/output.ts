/**
 * What `strata` prints: a command's result as text lines or one JSON document
 * on stdout, confirmations (silenced by `-q`), and the one-line error on
 * stderr.
 *
 * @module
 */

const encoder = new TextEncoder();

/**
 * Something bytes can be written to synchronously (Deno.stdout, a test buffer).
 *
 * @example
 * ```ts
 * import type { SyncWriter } from "../cli.ts";
 * const chunks: Uint8Array[] = [];
 * const collect: SyncWriter = { writeSync: (p) => chunks.push(p.slice()) && p.length };
 * const stdout: SyncWriter = Deno.stdout;
 * console.log(collect.writeSync(new Uint8Array(3)), typeof stdout); // 3 object
 * ```
 */
export interface SyncWriter {
  /** Write some of `p`; returns how many bytes were written. */
  writeSync(p: Uint8Array): number;
}

/** Write all of `data` to `w`. */
export function writeAllSync(w: SyncWriter, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += w.writeSync(data.subarray(off));
}

/** How a command's result looks in each mode. */
export interface Result {
  /** The value printed (as one JSON document) with `--json`. */
  json: unknown;
  /** Lines printed without `--json` (the command's data). */
  text: string[];
  /** Confirmation lines, printed without `--json` unless `-q`. */
  note?: string[];
  /** Exit status (default 0). */
  exitCode?: number;
  /** Print nothing at all (stdout already carried the command's data, e.g. a tar). */
  silent?: boolean;
}

/**
 * Prints results and errors in the mode the flags chose.
 *
 * @example
 * ```ts
 * import { Output } from "./output.ts";
 * const out = new Output({ json: false, quiet: false });
 * out.result({ json: { id: "a" }, text: ["a"] }); // prints "a"
 * ```
 */
export class Output {
  readonly json: boolean;
  readonly quiet: boolean;
  readonly #stdout: SyncWriter;
  readonly #stderr: SyncWriter;

  /** Defaults write to the process's stdout and stderr. */
  constructor(
    opts: { json: boolean; quiet: boolean; stdout?: SyncWriter; stderr?: SyncWriter },
  ) {
    this.json = opts.json;
    this.quiet = opts.quiet;
    this.#stdout = opts.stdout ?? Deno.stdout;
    this.#stderr = opts.stderr ?? Deno.stderr;
  }

  /** Print a command's result. */
  result(r: Result): void {
    if (r.silent) return;
    if (this.json) {
      this.#line(this.#stdout, JSON.stringify(r.json));
      return;
    }
    for (const line of r.text) this.#line(this.#stdout, escapeControls(line));
    if (!this.quiet) {
      for (const line of r.note ?? []) this.#line(this.#stdout, escapeControls(line));
    }
  }

  /** Print plain text (help, version) on stdout. */
  text(s: string): void {
    writeAllSync(this.#stdout, encoder.encode(s.endsWith("\n") ? s : s + "\n"));
  }

  /** Print a warning line on stderr (not with `-q`). */
  warn(message: string): void {
    if (!this.quiet) {
      this.#line(this.#stderr, `strata: warning: ${escapeControls(oneLine(message))}`);
    }
  }

  /**
   * Print an error as ONE line on stderr: plain `strata: <message>`, or with
   * `--json` a JSON object `{error, kind, exitCode}`.
   */
  error(message: string, kind: string, exitCode: number): void {
    const text = oneLine(message);
    if (this.json) {
      this.#line(this.#stderr, JSON.stringify({ error: text, kind, exitCode }));
    } else {
      this.#line(this.#stderr, `strata: ${escapeControls(text)}`);
    }
  }

  #line(w: SyncWriter, s: string): void {
    writeAllSync(w, encoder.encode(s + "\n"));
  }
}

/** Collapse whitespace runs with newlines so a message stays on one line. */
export function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, "; ").trim();
}

/**
 * Show control characters (C0, DEL, C1) as escapes (`\n`, `\t`, `\x1b`,
 * `\u0085`), so a name or a file's content that holds them can neither
 * break a line nor drive the terminal (colours, titles, cursor moves).
 * JSON output needs no such help: JSON escapes them itself.
 *
 * @example
 * ```ts
 * import { escapeControls } from "./output.ts";
 * console.log(escapeControls("a\x1b[31mb\n")); // a\x1b[31mb\n
 * ```
 */
export function escapeControls(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => {
    const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
    const n = c.charCodeAt(0);
    return named[c] ??
      (n < 0x80 ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u00${n.toString(16)}`);
  });
}

/**
 * A number of bytes for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
 *
 * @example
 * ```ts
 * import { humanBytes } from "./output.ts";
 * console.log(humanBytes(1536)); // 1.5 KiB
 * ```
 */
export function humanBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/**
 * Lay out rows as columns separated by two spaces (the last column unpadded).
 *
 * @example
 * ```ts
 * import { table } from "./output.ts";
 * console.log(table([["ID", "PARENT"], ["a", "-"]]).join("\n"));
 * ```
 */
export function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, cell.length));
  }
  return rows.map((row) =>
    row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ")
  );
}
