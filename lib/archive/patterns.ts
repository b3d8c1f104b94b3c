/**
 * Exclude patterns for tar creation, with the semantics of containers/storage
 * 1.43's `fileutils.PatternMatcher` (what `TarWithOptions` uses):
 *
 * - patterns are trimmed, empty ones dropped and path-cleaned; a leading `!`
 *   marks an exception (its own leading `/` is dropped; a lone `!` is an error);
 * - each pattern matches a relative path when it matches the whole path or the
 *   path of one of its ancestors (`a/b` matches `a/b` and `a/b/c/d`);
 * - `*` is any run of non-`/` characters, `?` one non-`/` character, `**` any
 *   characters including `/` (`**` followed by `/` eats the slash, a trailing `**` matches
 *   everything), `\x` is the literal `x`, `[...]` a character class;
 * - the last matching pattern wins: a plain one excludes, a `!` one includes.
 *
 * Like Go, the other regular-expression characters of a pattern (`( ) | + {
 * } ^`) keep their regular-expression meaning; here that is JavaScript's.
 * Escapes are always literal (Go's `\d`-style classes are not supported).
 * Paths may be bytes; invalid UTF-8 bytes count as one character each.
 *
 * @module
 */

import { normalize } from "node:path";
import { pathFromBytes } from "./path_bytes.ts";

/** A pattern Go's `filepath.Match` would reject. */
export class PatternSyntaxError extends Error {
  /** The offending pattern as given. */
  readonly pattern: string;
  /** `pattern` is the pattern as given; `reason` says what is wrong with it. */
  constructor(pattern: string, reason: string) {
    super(`invalid exclude pattern ${JSON.stringify(pattern)}: ${reason}`);
    this.name = "PatternSyntaxError";
    this.pattern = pattern;
  }
}

/** One compiled pattern. */
export interface Pattern {
  /** The cleaned pattern, without its `!`. */
  readonly text: string;
  /** Whether this is a `!` (re-include) pattern. */
  readonly exclusion: boolean;
}

interface Compiled extends Pattern {
  readonly re: RegExp;
  /** UTF-8 bytes every matching path starts with (the pattern's literal head). */
  readonly head: Uint8Array;
}

const encoder = new TextEncoder();

/** Go's filepath.Clean for a relative or absolute slash path. */
function cleanPath(p: string): string {
  if (p === "") return ".";
  let c = normalize(p);
  if (c.length > 1 && c.endsWith("/")) c = c.slice(0, -1);
  return c;
}

/**
 * A list of exclude patterns, compiled once.
 *
 * @example
 * ```ts
 * import { PatternMatcher } from "./patterns.ts";
 * const pm = new PatternMatcher([".wh..wh.*", "!.wh..wh..opq"]);
 * console.log(pm.matches(".wh..wh.plnk/1.2"), pm.matches(".wh..wh..opq")); // true false
 * ```
 */
export class PatternMatcher {
  #patterns: Compiled[] = [];
  #exclusions = false;

  /** Compile `patterns`; throws {@linkcode PatternSyntaxError} for a malformed one. */
  constructor(patterns: readonly string[]) {
    for (const raw of patterns) {
      let p = raw.trim();
      if (p === "") continue;
      p = cleanPath(p);
      let exclusion = false;
      if (p[0] === "!") {
        if (p.length === 1) throw new PatternSyntaxError(raw, 'illegal exclusion pattern: "!"');
        exclusion = true;
        p = cleanPath(p.slice(1)).replace(/^\//, "");
        this.#exclusions = true;
      }
      const bad = globSyntaxError(p);
      if (bad) throw new PatternSyntaxError(raw, bad);
      let re: RegExp;
      try {
        re = new RegExp(toRegExpSource(p), "u");
      } catch (e) {
        throw new PatternSyntaxError(raw, (e as Error).message);
      }
      this.#patterns.push({ text: p, exclusion, re, head: encoder.encode(literalHead(p)) });
    }
  }

  /** Whether any pattern is a `!` exception. */
  get exclusions(): boolean {
    return this.#exclusions;
  }

  /** The compiled patterns in order. */
  get patterns(): readonly Pattern[] {
    return this.#patterns.map(({ text, exclusion }) => ({ text, exclusion }));
  }

  /**
   * Whether the relative path `path` (no leading `/`, no trailing `/`) is
   * excluded: the last pattern that matches decides.
   */
  matches(path: string | Uint8Array): boolean {
    let bytes: Uint8Array | undefined;
    let text: string | undefined;
    if (typeof path === "string") text = path;
    else bytes = path;
    let matched = false;
    for (const p of this.#patterns) {
      if (p.head.length > 0) {
        bytes ??= encoder.encode(text!);
        if (!startsWith(bytes, p.head)) continue;
      }
      text ??= pathFromBytes(bytes!);
      if (p.re.test(text)) matched = !p.exclusion;
    }
    return matched;
  }

  /**
   * For an excluded directory `dir`: whether it must still be walked because
   * some `!` pattern names a path at or below it (Go's string-prefix test
   * `pattern + "/"` starts with `dir + "/"`).
   */
  mustEnter(dir: string | Uint8Array): boolean {
    if (!this.#exclusions) return false;
    const d = typeof dir === "string" ? dir : pathFromBytes(dir);
    const prefix = d + "/";
    return this.#patterns.some((p) => p.exclusion && (p.text + "/").startsWith(prefix));
  }
}

function startsWith(b: Uint8Array, prefix: Uint8Array): boolean {
  if (b.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[i] !== prefix[i]) return false;
  return true;
}

/**
 * The leading part of the pattern that every matching path starts with: the
 * text before the first glob character, or nothing when the pattern uses
 * regular-expression syntax that could make that part optional.
 */
function literalHead(p: string): string {
  if (/[(){}|+^]/.test(p)) return "";
  const i = p.search(/[*?\\[\]]/);
  return i < 0 ? p : p.slice(0, i);
}

/** `ch` as a literal, valid inside and outside a class of a `u` expression. */
function escapeLiteral(ch: string): string {
  return /^[\p{L}\p{N}]$/u.test(ch) ? ch : `\\u{${ch.codePointAt(0)!.toString(16)}}`;
}

/** Go's `.*`: without the `s` flag its `.` stops only at `\n` (JavaScript's also at `\r`, U+2028, U+2029). */
const ANY = "[^\\n]*";

/** The anchored regular expression of one cleaned pattern (Go's Pattern.compile). */
function toRegExpSource(p: string): string {
  const chars = [...p];
  let src = "^";
  let inClass = false;
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i];
    if (ch === "*") {
      if (chars[i + 1] === "*") {
        i++;
        if (chars[i + 1] === "/") i++;
        src += i + 1 >= chars.length ? ANY : `(?:${ANY}\\/)?`;
      } else {
        src += "[^/]*";
      }
    } else if (ch === "?") {
      src += "[^/]";
    } else if (ch === "." || ch === "$" || ch === "/") {
      src += "\\" + ch;
    } else if (ch === "\\") {
      if (i + 1 >= chars.length) throw new Error("trailing backslash");
      src += escapeLiteral(chars[++i]);
    } else if (ch === "[" && !inClass) {
      inClass = true;
      src += ch;
    } else if (ch === "]") {
      // Outside a class Go's engine takes `]` literally; JavaScript's `u` mode would refuse it.
      src += inClass ? ch : escapeLiteral(ch);
      inClass = false;
    } else {
      src += ch;
    }
  }
  return src + `(?:\\/${ANY})?$`;
}

/**
 * The error Go's `filepath.Match(p, ".")` reports for `p`, or "" when none.
 * Go only inspects the chunks it gets to while matching ".", so a malformed
 * class after a failed literal goes unnoticed there and here alike.
 */
function globSyntaxError(pattern: string): string {
  const BAD = "syntax error in pattern";
  let pat = [...pattern];
  let name = ["."];

  // Runs one chunk against `s`; returns the rest of `s` or null (no match), or throws BAD.
  const matchChunk = (chunk: string[], s: string[]): string[] | null => {
    let failed = false;
    let c = 0;
    const esc = (): string => {
      if (c >= chunk.length || chunk[c] === "-" || chunk[c] === "]") throw BAD;
      if (chunk[c] === "\\") {
        c++;
        if (c >= chunk.length) throw BAD;
      }
      const r = chunk[c++];
      if (c >= chunk.length) throw BAD;
      return r;
    };
    while (c < chunk.length) {
      if (!failed && s.length === 0) failed = true;
      const ch = chunk[c];
      if (ch === "[") {
        let r = "";
        if (!failed) r = s.shift()!;
        c++;
        let negated = false;
        if (chunk[c] === "^") {
          negated = true;
          c++;
        }
        let match = false;
        let nrange = 0;
        for (;;) {
          if (c < chunk.length && chunk[c] === "]" && nrange > 0) {
            c++;
            break;
          }
          const lo = esc();
          let hi = lo;
          if (chunk[c] === "-") {
            c++;
            hi = esc();
          }
          if (lo <= r && r <= hi) match = true;
          nrange++;
        }
        if (match === negated) failed = true;
      } else if (ch === "?") {
        if (!failed) {
          if (s[0] === "/") failed = true;
          s.shift();
        }
        c++;
      } else {
        if (ch === "\\") {
          c++;
          if (c >= chunk.length) throw BAD;
        }
        if (!failed) {
          if (chunk[c] !== s[0]) failed = true;
          s.shift();
        }
        c++;
      }
    }
    return failed ? null : s;
  };

  const scanChunk = (): { star: boolean; chunk: string[] } => {
    let star = false;
    while (pat.length > 0 && pat[0] === "*") {
      pat = pat.slice(1);
      star = true;
    }
    let inRange = false;
    let i = 0;
    for (; i < pat.length; i++) {
      const ch = pat[i];
      if (ch === "\\") {
        if (i + 1 < pat.length) i++;
      } else if (ch === "[") inRange = true;
      else if (ch === "]") inRange = false;
      else if (ch === "*" && !inRange) break;
    }
    const chunk = pat.slice(0, i);
    pat = pat.slice(i);
    return { star, chunk };
  };

  try {
    outer: while (pat.length > 0) {
      const { star, chunk } = scanChunk();
      if (star && chunk.length === 0) return "";
      const t = matchChunk(chunk, [...name]);
      if (t !== null && (t.length === 0 || pat.length > 0)) {
        name = t;
        continue;
      }
      if (star) {
        for (let i = 0; i < name.length && name[i] !== "/"; i++) {
          const t2 = matchChunk(chunk, name.slice(i + 1));
          if (t2 !== null) {
            if (pat.length === 0 && t2.length > 0) continue;
            name = t2;
            continue outer;
          }
        }
      }
      return "";
    }
    return "";
  } catch (e) {
    if (e === BAD) return BAD;
    throw e;
  }
}
