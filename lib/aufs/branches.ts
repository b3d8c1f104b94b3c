/**
 * aufs mount data: the branch list of a layer's union, bounded so that no
 * string handed to mount(2) reaches one page (the kernel copies one page of
 * mount data and silently drops the rest).
 *
 * The first mount gets `br:<rw>=rw:<ro1>=ro+wh:...` plus the fixed options;
 * branches that do not fit go to `MS_REMOUNT` calls, several
 * `append:<dir>=ro+wh` per call (moby d58c434bff) instead of containers/storage's one
 * per call.
 *
 * @module
 */

/** The xino file every aufs mount on the host shares. */
export const AUFS_XINO = "/dev/shm/aufs.xino";

/**
 * Bytes of a page kept free for the options that follow the branch list
 * (`,dio,xino=...` and the label wrapper).
 */
export const AUFS_OPTION_RESERVE = 54;

/** The dirperm1 option as appended to the mount data. */
const DIRPERM1 = ",dirperm1";

/**
 * Options of {@linkcode packAufsBranches}.
 *
 * @example
 * ```ts
 * import { type AufsBranchOptions, packAufsBranches } from "../../mod.ts";
 * const opts: AufsBranchOptions = { pageSize: 4096, dirperm1: true };
 * const packed = packAufsBranches("/r/diff/app", ["/r/diff/base"], opts);
 * console.log(packed.data);
 * ```
 */
export interface AufsBranchOptions {
  /** The system page size (`getpagesize()`): 4096 on x86-64, 65536 on some arm64/ppc64. */
  pageSize: number;
  /** SELinux label; added to every call as `,context="<label>"`. */
  mountLabel?: string;
  /** Whether the kernel's aufs accepts `dirperm1` (see `dirperm1Supported`). */
  dirperm1: boolean;
}

/**
 * What {@linkcode packAufsBranches} returns.
 *
 * @example
 * ```ts
 * import { packAufsBranches, type PackedBranches } from "../../mod.ts";
 * const p: PackedBranches = packAufsBranches("/r/diff/app", ["/r/diff/base"], {
 *   pageSize: 4096,
 *   dirperm1: false,
 * });
 * console.log(p.data, p.appends.length); // one mount call, no remounts
 * ```
 */
export interface PackedBranches {
  /** Data of the first mount(2) (flags 0). */
  data: string;
  /** Data of each following mount(2) with `MS_REMOUNT`, in order. */
  appends: string[];
}

/**
 * UTF-8 byte length of `s` (mount data is measured in bytes, as the kernel
 * sees it). Lone surrogates count as U+FFFD, 3 bytes, as the encoder writes them.
 *
 * @example
 * ```ts
 * import { utf8Length } from "./branches.ts";
 * console.log(utf8Length("/r/diff/é")); // 10
 * ```
 */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;
const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  "\x07": "\\a",
  "\b": "\\b",
  "\f": "\\f",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\v": "\\v",
  '"': '\\"',
  "\\": "\\\\",
};

/**
 * Quote `s` the way Go's `%q` (strconv.Quote) does: double quotes; `"` and
 * `\` escaped; printable characters kept; other characters as `\a`-style,
 * `\xNN`, `\uNNNN` or `\UNNNNNNNN` escapes. A lone surrogate is quoted as
 * `\ufffd` (what Go prints for the bytes it would become).
 *
 * @example
 * ```ts
 * import { goQuote } from "./branches.ts";
 * console.log(goQuote("system_u:object_r:container_file_t:s0:c1,c2"));
 * // "system_u:object_r:container_file_t:s0:c1,c2"
 * console.log(goQuote('a"b\n')); // "a\"b\n"
 * ```
 */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) {
      out += short;
      continue;
    }
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xd800 && cp <= 0xdfff) out += "\\ufffd";
    else if (PRINTABLE.test(ch)) out += ch;
    else if (cp < 0x80) out += "\\x" + cp.toString(16).padStart(2, "0");
    else if (cp < 0x10000) out += "\\u" + cp.toString(16).padStart(4, "0");
    else out += "\\U" + cp.toString(16).padStart(8, "0");
  }
  return out + '"';
}

/**
 * Add an SELinux label to mount data as `context="<label>"`:
 * after a comma when `src` is non-empty; `src` unchanged when there is no label.
 *
 * @example
 * ```ts
 * import { formatMountLabel } from "./branches.ts";
 * console.log(formatMountLabel("br:/a=rw", "system_u:object_r:x:s0"));
 * // br:/a=rw,context="system_u:object_r:x:s0"
 * ```
 */
export function formatMountLabel(src: string, label: string | undefined): string {
  if (!label) return src;
  return `${src}${src ? "," : ""}context=${goQuote(label)}`;
}

/**
 * Bytes available for the branch list of one mount(2) call:
 * `pageSize − L − 54 − (9 with dirperm1)`, where `L` is the byte length of
 * the label as it is written between the quotes. For every label that needs
 * no escaping `L` is the label's own length, exactly containers/storage's rule; a label
 * with escapes is charged for its escapes, so its calls still fit the page.
 *
 * @example
 * ```ts
 * import { aufsBranchCapacity } from "./branches.ts";
 * console.log(aufsBranchCapacity({ pageSize: 4096, dirperm1: true })); // 4033
 * ```
 */
export function aufsBranchCapacity(opts: AufsBranchOptions): number {
  const label = opts.mountLabel ? utf8Length(goQuote(opts.mountLabel)) - 2 : 0;
  return opts.pageSize - label - AUFS_OPTION_RESERVE - (opts.dirperm1 ? DIRPERM1.length : 0);
}

/**
 * Pack the branches of a union of `rw` over `ro` (nearest parent first) into
 * mount data that fits the page: `data` for the first mount (flags 0) and
 * `appends` for `MS_REMOUNT` calls carrying the branches that did not fit.
 *
 * Bound: the branch list of each call is at most
 * {@linkcode aufsBranchCapacity} bytes; a branch is left for the next call when
 * adding it would make the list longer than that (an exact fit is kept). Every
 * `ro` branch appears exactly once, in order. Throws `RangeError` when the
 * label leaves no room for even one branch (containers/storage panicked), or when a
 * single branch is longer than a whole call can carry.
 *
 * Paths are used verbatim: aufs has no escaping, so a path containing `:`,
 * `,` or `=` cannot be mounted correctly; callers pass driver paths.
 *
 * @example
 * ```ts
 * import { packAufsBranches } from "./branches.ts";
 * const { data, appends } = packAufsBranches("/r/diff/c", ["/r/diff/b", "/r/diff/a"], {
 *   pageSize: 4096,
 *   dirperm1: false,
 * });
 * console.log(data); // br:/r/diff/c=rw:/r/diff/b=ro+wh:/r/diff/a=ro+wh,dio,xino=/dev/shm/aufs.xino
 * console.log(appends); // []
 * ```
 */
export function packAufsBranches(
  rw: string,
  ro: readonly string[],
  opts: AufsBranchOptions,
): PackedBranches {
  const capacity = aufsBranchCapacity(opts);
  let list = `br:${rw}=rw`;
  let used = utf8Length(list);
  if (used > capacity) {
    throw new RangeError(
      `aufs mount data for ${rw}: the rw branch (${used} bytes) does not fit the ${capacity} ` +
        `bytes left of a ${opts.pageSize}-byte page` +
        (opts.mountLabel ? ` after the mount label (${utf8Length(opts.mountLabel)} bytes)` : ""),
    );
  }
  let i = 0;
  for (; i < ro.length; i++) {
    const branch = `:${ro[i]}=ro+wh`;
    const n = utf8Length(branch);
    if (used + n > capacity) break;
    list += branch;
    used += n;
  }
  const data = formatMountLabel(
    `${list},dio,xino=${AUFS_XINO}${opts.dirperm1 ? DIRPERM1 : ""}`,
    opts.mountLabel,
  );

  const appends: string[] = [];
  while (i < ro.length) {
    let chunk = "";
    let size = 0;
    for (; i < ro.length; i++) {
      const entry = `append:${ro[i]}=ro+wh`;
      const n = utf8Length(entry) + (chunk ? 1 : 0);
      if (size + n > capacity) break;
      chunk += chunk ? "," + entry : entry;
      size += n;
    }
    if (!chunk) {
      throw new RangeError(
        `aufs mount data for ${rw}: branch ${ro[i]} is longer than the ${capacity} bytes ` +
          `one remount can carry (page ${opts.pageSize} bytes)`,
      );
    }
    appends.push(formatMountLabel(chunk, opts.mountLabel));
  }
  return { data, appends };
}
