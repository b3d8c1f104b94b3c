import assert from "node:assert/strict";
import { join } from "node:path";
import { systemLibc } from "../ffi/libc.ts";
import { ShortLinks, shortName } from "../lib/overlay/links.ts";
import {
  escapeOverlayPath,
  OVERLAY_MAX_LOWERS,
  OVERLAY_MOUNT_OPTIONS,
  OverlayDepthError,
  type OverlayMountInput,
  packOverlayMount,
} from "../lib/overlay/lowers.ts";

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s).length;
const OPTS = OVERLAY_MOUNT_OPTIONS.join(",");
const hex = (i: number) => i.toString(16).padStart(64, "0");

/** A chain of `n` lowers under root `/r` with 64-hex ids; counts calls of `shortLowers`. */
function chain(n: number, extra: Partial<OverlayMountInput> = {}) {
  const calls = { short: 0 };
  const lowers = Array.from({ length: n }, (_, i) => `/r/diff/${hex(n - i)}`);
  const input: OverlayMountInput = {
    root: "/r",
    upper: `/r/diff/${hex(n + 1)}`,
    work: `/r/work/${hex(n + 1)}`,
    lowers,
    shortLowers: () => {
      calls.short++;
      return lowers.map((_, i) => `l/${shortName(i)}`);
    },
    pageSize: 4096,
    ...extra,
  };
  return { input, calls };
}

Deno.test("a chain whose absolute paths fit is mounted with them, nearest parent first", () => {
  const { input, calls } = chain(2);
  const m = packOverlayMount(input);
  assert.equal(m.form, "absolute");
  assert.equal(m.cwd, undefined);
  assert.equal(
    m.data,
    `lowerdir=/r/diff/${hex(2)}:/r/diff/${hex(1)},upperdir=/r/diff/${hex(3)},` +
      `workdir=/r/work/${hex(3)},${OPTS}`,
  );
  assert.equal(m.bytes, bytes(m.data));
  assert.equal(calls.short, 0, "short links are not even looked up");
});

Deno.test("absolute data of exactly pageSize-1 bytes is kept; one byte more switches to short links", () => {
  const { input } = chain(3);
  const plain = packOverlayMount({ ...input, options: [] }).data;
  const pad = (n: number) => ["x".repeat(n)];
  // data = plain + "," + padding option
  const exact = 4095 - bytes(plain) - 1;
  const fit = packOverlayMount({ ...input, options: pad(exact) });
  assert.equal(fit.form, "absolute");
  assert.equal(fit.bytes, 4095);
  const over = packOverlayMount({ ...input, options: pad(exact + 1) });
  assert.equal(over.form, "short");
  assert.equal(over.cwd, "/r");
});

Deno.test("deep chains use l/<name> relative to the root, with relative upperdir and workdir", () => {
  const { input, calls } = chain(60);
  const m = packOverlayMount(input);
  assert.equal(m.form, "short");
  assert.equal(m.cwd, "/r");
  assert.equal(calls.short, 1);
  const names = Array.from({ length: 60 }, (_, i) => `l/${shortName(i)}`).join(":");
  assert.equal(
    m.data,
    `lowerdir=${names},upperdir=diff/${hex(61)},workdir=work/${hex(61)},${OPTS}`,
  );
  assert.ok(m.bytes <= 4095);
});

Deno.test("500 lower layers fit a 4 KiB page in the short form; 501 are refused before any lookup", () => {
  const ok = chain(OVERLAY_MAX_LOWERS);
  const m = packOverlayMount(ok.input);
  assert.equal(m.form, "short");
  assert.ok(m.bytes <= 4095, `${m.bytes} bytes`);
  assert.equal(m.data.split(",")[0].split(":").length, 500);

  const over = chain(OVERLAY_MAX_LOWERS + 1);
  assert.throws(
    () => packOverlayMount(over.input),
    (e) =>
      e instanceof OverlayDepthError && e instanceof RangeError && e.lowers === 501 &&
      /at most 500 lower layers; this union needs 501/.test(e.message),
  );
  assert.equal(over.calls.short, 0);
});

Deno.test("with a 64 KiB page even 500 absolute lowers fit", () => {
  const { input, calls } = chain(500, { pageSize: 65536 });
  const m = packOverlayMount(input);
  assert.equal(m.form, "absolute");
  assert.equal(calls.short, 0);
});

Deno.test('the label is added as context="<label>" and counts toward the page', () => {
  const label = "system_u:object_r:container_file_t:s0:c1,c2";
  const { input } = chain(1, { mountLabel: label });
  const m = packOverlayMount(input);
  assert.ok(m.data.endsWith(`,${OPTS},context="${label}"`), m.data);
  const huge = chain(500, { mountLabel: "x".repeat(3000) });
  assert.throws(
    () => packOverlayMount(huge.input),
    (e) => e instanceof RangeError && /even with short links/.test((e as Error).message),
  );
});

Deno.test("paths with ':', ',' and '\\' are escaped with a backslash", () => {
  assert.equal(escapeOverlayPath("/r/a:b,c\\d"), "/r/a\\:b\\,c\\\\d");
  const m = packOverlayMount({
    root: "/r",
    upper: "/r/diff/u,1",
    work: "/r/work/u,1",
    lowers: ["/r/diff/a:b"],
    shortLowers: () => ["l/0"],
    pageSize: 4096,
    options: [],
  });
  assert.equal(m.data, "lowerdir=/r/diff/a\\:b,upperdir=/r/diff/u\\,1,workdir=/r/work/u\\,1");
});

Deno.test("no lowers, or a wrong number of short names, is an error", () => {
  assert.throws(() => packOverlayMount(chain(0).input), /no lower layers/);
  const { input } = chain(80, { shortLowers: () => ["l/0"] });
  assert.throws(() => packOverlayMount(input), /1 short names for 80 lower layers/);
});

// ---------------------------------------------------------------- short names and links

Deno.test("short names count in bijective base 62: one character, then two, then three", () => {
  assert.deepEqual([0, 9, 10, 35, 36, 61].map(shortName), ["0", "9", "a", "z", "A", "Z"]);
  assert.deepEqual([62, 63, 123, 124, 3905, 3906].map(shortName), [
    "00",
    "01",
    "0Z",
    "10",
    "ZZ",
    "000",
  ]);
  const seen = new Set(Array.from({ length: 5000 }, (_, i) => shortName(i)));
  assert.equal(seen.size, 5000, "names are unique");
  assert.throws(() => shortName(-1), RangeError);
});

async function linkRoot(ids: string[]): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "strata-links-" });
  for (const id of ids) {
    await Deno.mkdir(join(root, "diff", id), { recursive: true });
    await Deno.mkdir(join(root, "layers"), { recursive: true });
    await Deno.writeTextFile(join(root, "layers", id), "");
  }
  return root;
}

Deno.test("links take the smallest free name, are reused, and are checked against their target", async () => {
  const root = await linkRoot(["a", "b", "c"]);
  try {
    const links = new ShortLinks(systemLibc(), root);
    links.makeDir();
    assert.equal(links.ensure("a"), "l/0");
    assert.equal(links.ensure("b"), "l/1");
    assert.equal(links.ensure("a"), "l/0", "an existing link is reused");
    assert.equal(links.remove("a"), 1);
    assert.equal(links.ensure("c"), "l/0", "the freed name is taken again");
    // Another process re-pointed l/1: the cached name is not trusted.
    Deno.removeSync(join(root, "l", "1"));
    Deno.symlinkSync("../diff/c", join(root, "l", "1"));
    assert.equal(links.ensure("b"), "l/2");
    assert.equal(Deno.readLinkSync(join(root, "l", "2")), "../diff/b");
    // A name taken behind our back (EEXIST) is skipped.
    Deno.symlinkSync("foreign", join(root, "l", "3"));
    assert.deepEqual(new ShortLinks(systemLibc(), root).resolve(["a", "c", "b"]), [
      "l/4",
      "l/0",
      "l/2",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("lost links are made again; a missing l/ dir is made on first use", async () => {
  const root = await linkRoot(["a", "b"]);
  try {
    const links = new ShortLinks(systemLibc(), root);
    assert.deepEqual(links.resolve(["b", "a"]), ["l/0", "l/1"]);
    Deno.removeSync(join(root, "l"), { recursive: true });
    assert.deepEqual(links.resolve(["a", "b"]), ["l/0", "l/1"]);
    assert.equal(Deno.readLinkSync(join(root, "l", "0")), "../diff/a");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("sweep deletes links whose layer is gone and leaves everything else", async () => {
  const root = await linkRoot(["a", "b"]);
  try {
    const links = new ShortLinks(systemLibc(), root);
    links.resolve(["a", "b"]);
    Deno.removeSync(join(root, "diff", "b"));
    Deno.symlinkSync("../diff/never", join(root, "l", "x"));
    Deno.symlinkSync("/etc", join(root, "l", "y"));
    Deno.writeTextFileSync(join(root, "l", "z"), "");
    assert.deepEqual(links.sweep().sort(), ["1", "x"]);
    assert.deepEqual(
      [...links.list()].sort(),
      [["0", "a"], ["y", undefined], ["z", undefined]],
    );
    assert.equal(links.remove("b"), 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
