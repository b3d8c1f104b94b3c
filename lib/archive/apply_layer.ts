/**
 * Whiteout-aware, confined application of a layer tar: containers/storage's
 * `UnpackLayer`, used by the naive `ApplyDiff` path, and, with the
 * overlay whiteout format, what the overlay backend's native `ApplyDiff`
 * does into a fresh diff directory.
 *
 * Per entry, in stream order (names cleaned as if `dest` were `/`):
 * - every header's size is added to the returned total, skipped ones too;
 * - a directory entry naming the root (`./`) applies its owner, mode,
 *   xattrs and times to `dest` (as Go's `UnpackLayer`; `untar` skips it);
 *   other entries naming the root are skipped;
 * - top-level `.wh..wh.*` entries are aufs metadata and skipped, except
 *   `.wh..wh..opq`; regular files under `.wh..wh.plnk/` are remembered (in
 *   memory, or an `O_TMPFILE` file in `dest`'s filesystem when large) so
 *   that hard links to them can be materialised;
 * - `<dir>/.wh..wh..opq` (aufs format) removes from `<dir>` every entry not
 *   extracted from this same layer; `<dir>/.wh.<name>` removes `<dir>/<name>`
 *   (never following a final symlink; the deletion stays in `dest`);
 * - with the overlay format they become `trusted.overlay.opaque=y` on
 *   `<dir>` and a 0/0 character device `<dir>/<name>` instead;
 * - anything else is created as by `untar`, replacing an existing
 *   non-directory; a hard link into `.wh..wh.plnk` becomes a copy of the
 *   remembered file with that file's metadata.
 *
 * A whiteout of `.`, `..` or of an empty name is refused with an
 * {@linkcode InvalidArchiveError} (inside an {@linkcode ExtractError}).
 *
 * @module
 */

import { bytesEqual, joinBytes, startsWithBytes } from "./bytes.ts";
import { AT, Errno, errnoOf, type Libc, O, S, systemLibc } from "../../ffi/libc.ts";
import { nameText, type TarHeader, TarType } from "./tar_header.ts";
import {
  EntryWriter,
  type ExtractSink,
  extractStream,
  InvalidArchiveError,
  type UntarOptions,
} from "./extract.ts";
import { byteKey, cleanInRoot, type Root } from "./root.ts";
import {
  OVERLAY_OPAQUE_XATTR,
  WHITEOUT_LINK_DIR_BYTES,
  WHITEOUT_META_PREFIX_BYTES,
  WHITEOUT_OPAQUE_BYTES,
  WHITEOUT_PREFIX_BYTES,
  type WhiteoutFormat,
} from "./whiteouts.ts";

export {
  ExtractError,
  type IDMap,
  InvalidArchiveError,
  type Libc,
  type UntarOptions,
} from "./extract.ts";
export type { WhiteoutFormat } from "./whiteouts.ts";

/**
 * Options of {@linkcode applyLayer}.
 *
 * @example
 * ```ts
 * import { applyLayer, type ApplyLayerOptions } from "../../mod.ts";
 * const opts: ApplyLayerOptions = { whiteoutFormat: "overlay" };
 * const size = await applyLayer((await Deno.open("layer.tar")).readable, "/tmp/upper", opts);
 * console.log(size);
 * ```
 */
export type ApplyLayerOptions = UntarOptions & {
  /** How deletions are recorded: "aufs" (delete; the default) or "overlay" (convert). */
  whiteoutFormat?: WhiteoutFormat;
};

const SLASH = 0x2f;
/** `O_TMPFILE` (`__O_TMPFILE | O_DIRECTORY`; the same value on x86_64 and aarch64). */
const O_TMPFILE = 0o20000000 | O.DIRECTORY;
/** Pseudo-link payloads up to this size stay in memory. */
const PLNK_MEMORY_MAX = 4 << 20;
const OPAQUE_VALUE = new Uint8Array([0x79]); // "y"

/** One remembered `.wh..wh.plnk/<base>` file: its header and its payload. */
interface PseudoLink {
  header: TarHeader;
  chunks: Uint8Array[] | null;
  fd: number;
}

/**
 * The payloads of the layer's aufs pseudo-links, for the hard links that
 * point into `.wh..wh.plnk`.
 */
class PseudoLinks {
  #libc: Libc;
  #root: Root;
  #links = new Map<string, PseudoLink>();
  #current: PseudoLink | null = null;
  #buf: Uint8Array | null = null;

  constructor(root: Root, libc: Libc) {
    this.#root = root;
    this.#libc = libc;
  }

  /** A new pseudo-link file starts; its body follows through `data`. */
  begin(base: Uint8Array, h: TarHeader): void {
    const key = byteKey(base);
    const old = this.#links.get(key);
    if (old && old.fd >= 0) this.#libc.close(old.fd);
    const link: PseudoLink = { header: h, chunks: [], fd: -1 };
    if (h.size > PLNK_MEMORY_MAX) {
      try {
        link.fd = this.#libc.openat(this.#root.fd, ".", O_TMPFILE | O.RDWR, 0o600);
        link.chunks = null;
      } catch {
        // No O_TMPFILE on this filesystem: keep it in memory.
      }
    }
    this.#links.set(key, link);
    this.#current = link;
  }

  data(chunk: Uint8Array): void {
    const link = this.#current;
    if (!link) return;
    if (link.fd >= 0) this.#libc.writeAll(link.fd, chunk);
    else link.chunks!.push(chunk.slice());
  }

  end(): void {
    this.#current = null;
  }

  get(base: Uint8Array): PseudoLink | undefined {
    return this.#links.get(byteKey(base));
  }

  /** Feed a remembered payload to `sink`, from its start. */
  replay(link: PseudoLink, sink: (chunk: Uint8Array) => void): void {
    if (link.chunks) {
      for (const c of link.chunks) sink(c);
      return;
    }
    const libc = this.#libc;
    // A fresh open file description: reading starts at offset 0.
    const fd = libc.openat(AT.FDCWD, `/proc/self/fd/${link.fd}`, O.RDONLY);
    try {
      const buf = this.#buf ??= new Uint8Array(1 << 20);
      for (;;) {
        const n = libc.read(fd, buf);
        if (n === 0) break;
        sink(buf.subarray(0, n));
      }
    } finally {
      libc.close(fd);
    }
  }

  close(): void {
    for (const link of this.#links.values()) {
      if (link.fd >= 0) {
        this.#libc.close(link.fd);
        link.fd = -1;
      }
    }
    this.#links.clear();
  }
}

const enum Body {
  /** The body (if any) is ignored. */
  Skip,
  /** The body goes to the entry writer. */
  Writer,
  /** The body is a pseudo-link payload. */
  PseudoLink,
}

/** The last `/`-separated component of a cleaned name, and what precedes it. */
function splitLast(path: Uint8Array): [Uint8Array, Uint8Array] {
  const slash = path.lastIndexOf(SLASH);
  if (slash < 0) return [path.subarray(0, 0), path];
  return [path.subarray(0, slash), path.subarray(slash + 1)];
}

class ApplyLayerSink implements ExtractSink {
  #root: Root;
  #w: EntryWriter;
  #warn: ((message: string) => void) | undefined;
  #overlay: boolean;
  #plnk: PseudoLinks;
  #unpacked = new Set<string>();
  #current: TarHeader | null = null;
  #body = Body.Skip;
  entries = 0;
  size = 0;

  constructor(root: Root, opts: ApplyLayerOptions) {
    this.#root = root;
    this.#w = new EntryWriter(root, opts);
    this.#warn = opts.onWarning;
    this.#overlay = opts.whiteoutFormat === "overlay";
    this.#plnk = new PseudoLinks(root, opts.libc ?? systemLibc());
  }

  get current(): string | undefined {
    return this.#current ? nameText(this.#current.name) : undefined;
  }

  entry(h: TarHeader): void {
    this.entries++;
    this.size += h.size;
    this.#current = h;
    this.#body = Body.Skip;
    const path = cleanInRoot(h.name);
    if (path.length === 0) {
      // The root itself: a directory entry's metadata applies to dest, as in
      // Go's UnpackLayer; anything else naming the root is skipped.
      if (h.type === TarType.DIR) {
        this.#w.begin(h, path);
        this.#body = Body.Writer;
      }
      return;
    }

    if (startsWithBytes(path, WHITEOUT_META_PREFIX_BYTES)) {
      if (
        startsWithBytes(path, WHITEOUT_LINK_DIR_BYTES) &&
        (h.type === TarType.REG || h.type === TarType.CONT)
      ) {
        this.#plnk.begin(splitLast(path)[1], h);
        this.#body = Body.PseudoLink;
      }
      if (!bytesEqual(path, WHITEOUT_OPAQUE_BYTES)) return;
    }

    const [dir, base] = splitLast(path);
    if (startsWithBytes(base, WHITEOUT_PREFIX_BYTES)) {
      this.#whiteout(h, dir, base);
      return;
    }

    if (h.type === TarType.LINK) {
      const target = cleanInRoot(h.linkname);
      if (startsWithBytes(target, WHITEOUT_LINK_DIR_BYTES)) {
        this.#fromPseudoLink(h, target, path);
        return;
      }
    }
    this.#w.begin(h, path);
    this.#body = Body.Writer;
    this.#unpacked.add(byteKey(path));
  }

  #whiteout(h: TarHeader, dir: Uint8Array, base: Uint8Array): void {
    const root = this.#root;
    const entry = nameText(h.name);
    // Go's UnpackLayer creates a missing parent before looking at the entry.
    if (dir.length > 0 && !root.exists(dir)) this.#w.mkdirAll(dir);
    if (bytesEqual(base, WHITEOUT_OPAQUE_BYTES)) {
      if (this.#overlay) {
        root.setxattr(dir, OVERLAY_OPAQUE_XATTR, OPAQUE_VALUE);
        return;
      }
      const unpacked = this.#unpacked;
      try {
        this.#w.stats.replaced = true;
        root.prune(dir, (p) => unpacked.has(byteKey(p)));
      } catch (e) {
        // An opaque marker in a symlink is a no-op, as Go's WalkDir never enters one.
        const errno = errnoOf(e);
        if (errno !== Errno.ENOTDIR && errno !== Errno.ELOOP) throw e;
      }
      return;
    }
    const name = base.subarray(WHITEOUT_PREFIX_BYTES.length);
    if (name.length === 0) throw new InvalidArchiveError(entry, "whiteout of an empty name");
    if (name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e))) {
      throw new InvalidArchiveError(entry, "whiteout of the directory itself or its parent");
    }
    const target = joinBytes(dir, name);
    if (cleanInRoot(target).length === 0) {
      throw new InvalidArchiveError(entry, "whiteout of the root");
    }
    if (!this.#overlay) {
      this.#w.stats.replaced = true;
      root.removeAll(target);
      return;
    }
    try {
      root.mknod(target, S.IFCHR, 0, 0);
    } catch (e) {
      // `rm -rf /foo/bar` may give `.wh.foo` then `foo/.wh.bar`: the second finds a device.
      if (errnoOf(e) === Errno.ENOTDIR) return;
      throw e;
    }
    const [uid, gid] = this.#w.mapIds(h.uid, h.gid);
    root.lchown(target, uid, gid);
  }

  /** A hard link into `.wh..wh.plnk`: a copy of the remembered file. */
  #fromPseudoLink(h: TarHeader, target: Uint8Array, path: Uint8Array): void {
    const link = this.#plnk.get(splitLast(target)[1]);
    if (!link) throw new InvalidArchiveError(nameText(h.name), "invalid aufs hardlink");
    const w = this.#w;
    w.begin(link.header, path);
    this.#plnk.replay(link, (chunk) => w.data(chunk));
    w.end();
    this.#unpacked.add(byteKey(path));
  }

  data(chunk: Uint8Array): void {
    if (this.#body === Body.Writer) this.#w.data(chunk);
    else if (this.#body === Body.PseudoLink) this.#plnk.data(chunk);
  }

  end(): void {
    if (this.#body === Body.Writer) this.#w.end();
    else if (this.#body === Body.PseudoLink) this.#plnk.end();
    this.#body = Body.Skip;
    this.#current = null;
  }

  complete(): void {
    try {
      this.#w.finishDirs();
    } finally {
      this.#plnk.close();
    }
    if (this.#w.ignoredXattrs > 0) {
      this.#warn?.(
        `apply layer: ${this.#w.ignoredXattrs} xattrs ignored: the filesystem does not support them`,
      );
    }
  }

  abort(): void {
    this.#w.abort();
    this.#plnk.close();
  }
}

/**
 * Apply the layer tar `tar` onto `dest` (created 0755, owned by the root
 * pair, if missing), confined to `dest`, and return the sum of the tar
 * headers' sizes (every header, skipped and whiteout entries included), as
 * containers/storage's `ApplyUncompressedLayer` does.
 *
 * @throws {ExtractError} naming the entry and the failing call; an unsafe
 * whiteout gives an {@linkcode InvalidArchiveError} cause.
 *
 * @example
 * ```ts
 * import { applyLayer } from "./apply_layer.ts";
 * import { encodeHeader, END_OF_ARCHIVE } from "./tar_writer.ts";
 * import { makeHeader } from "./tar_header.ts";
 * const dest = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dest}/old`, "lower layer");
 * const layer = ReadableStream.from([encodeHeader(makeHeader({ name: ".wh.old" })), END_OF_ARCHIVE]);
 * const size = await applyLayer(layer, dest);
 * console.log(size, Deno.readDirSync(dest).toArray().length); // 0 0
 * ```
 */
export async function applyLayer(
  tar: ReadableStream<Uint8Array>,
  dest: string,
  opts: ApplyLayerOptions = {},
): Promise<number> {
  let sink: ApplyLayerSink | undefined;
  await extractStream(tar, dest, opts, "apply layer", (root) => {
    sink = new ApplyLayerSink(root, opts);
    return sink;
  });
  return sink!.size;
}
