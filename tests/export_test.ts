import assert from "node:assert/strict";
import { exportChanges } from "../lib/archive/export.ts";
import { changesDirs } from "../lib/archive/changes.ts";
import { TarType } from "../lib/archive/tar_header.ts";
import { readAll, readEntries } from "./support/tar_entries.ts";

async function tmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-export-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("exportChanges: sorted by path; deletes become bare whiteout entries", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/etc`);
    await Deno.writeTextFile(`${d}/etc/new`, "abc");
    const before = Math.floor(Date.now() / 1000);
    const entries = await readEntries(exportChanges(d, [
      { path: "/etc/new", kind: "add" },
      { path: "/etc/old", kind: "delete" },
      { path: "/etc", kind: "modify" },
      { path: "/gone", kind: "delete" },
    ]));
    const after = Math.ceil(Date.now() / 1000);
    assert.deepEqual(entries.map((e) => e.name), ["etc/", "etc/new", "etc/.wh.old", ".wh.gone"]);
    const wh = entries[2].header;
    assert.deepEqual([wh.type, wh.mode, wh.uid, wh.gid, wh.uname, wh.gname, wh.size], [
      TarType.REG,
      0,
      0,
      0,
      "",
      "",
      0,
    ]);
    assert.ok(
      wh.mtimeSec >= before && wh.mtimeSec <= after,
      `whiteout mtime ${wh.mtimeSec} is now`,
    );
    assert.equal(new TextDecoder().decode(entries[1].body), "abc");
  });
});

Deno.test("exportChanges: hard links are tracked across the export; vanished paths are left out", async () => {
  await tmp(async (d) => {
    await Deno.writeTextFile(`${d}/a`, "shared");
    await Deno.mkdir(`${d}/z`);
    await Deno.link(`${d}/a`, `${d}/z/b`);
    const entries = await readEntries(exportChanges(d, [
      { path: "/z/b", kind: "add" },
      { path: "/a", kind: "modify" },
      { path: "/missing/x", kind: "add" },
    ]));
    assert.deepEqual(entries.map((e) => [e.name, e.header.type, e.linkname]), [
      ["a", TarType.REG, ""],
      ["z/b", TarType.LINK, "a"],
    ]);
  });
});

Deno.test("exportChanges: id maps apply to files, not to whiteouts", async () => {
  await tmp(async (d) => {
    await Deno.writeTextFile(`${d}/f`, "");
    Deno.chownSync(`${d}/f`, 100010, 100020);
    const maps = [{ containerID: 0, hostID: 100000, size: 65536 }];
    const entries = await readEntries(exportChanges(d, [
      { path: "/f", kind: "add" },
      { path: "/g", kind: "delete" },
    ], { uidMaps: maps, gidMaps: maps }));
    assert.deepEqual(entries.map((e) => [e.name, e.header.uid, e.header.gid]), [
      ["f", 10, 20],
      [".wh.g", 0, 0],
    ]);
  });
});

Deno.test("exportChanges: a change below a symlinked directory is not read through the link", async () => {
  await tmp(async (d) => {
    await Deno.mkdir(`${d}/outside`);
    await Deno.writeTextFile(`${d}/outside/secret`, "host secret");
    await Deno.mkdir(`${d}/tree`);
    await Deno.symlink(`${d}/outside`, `${d}/tree/sub`);
    const bytes = await readAll(exportChanges(`${d}/tree`, [{ path: "/sub/secret", kind: "add" }]));
    assert.equal(new TextDecoder().decode(bytes).includes("host secret"), false);
    assert.equal(bytes.length, 1024, "nothing but the end marker");
  });
});

Deno.test("exportChanges of changesDirs carries every change of the new tree", async () => {
  await tmp(async (d) => {
    const o = `${d}/old`, n = `${d}/new`;
    await Deno.mkdir(`${o}/keep`, { recursive: true });
    await Deno.mkdir(`${o}/drop/deep`, { recursive: true });
    await Deno.writeTextFile(`${o}/keep/f`, "old");
    await Deno.writeTextFile(`${o}/drop/deep/x`, "x");
    await Deno.mkdir(`${n}/keep`, { recursive: true });
    await Deno.writeTextFile(`${n}/keep/f`, "new content");
    await Deno.writeTextFile(`${n}/added`, "+");
    const changes = changesDirs(n, o);
    const entries = await readEntries(exportChanges(n, changes));
    assert.deepEqual(entries.map((e) => e.name), ["added", ".wh.drop", "keep/", "keep/f"]);
    assert.equal(new TextDecoder().decode(entries[3].body), "new content");
  });
});
