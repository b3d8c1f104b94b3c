import assert from "node:assert/strict";
import { hostIdNames, IdNames } from "../lib/archive/users.ts";

async function withDbs(
  passwd: string,
  group: string,
  fn: (names: IdNames, dir: string) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/passwd`, passwd);
    await Deno.writeTextFile(`${dir}/group`, group);
    await fn(new IdNames({ passwdPath: `${dir}/passwd`, groupPath: `${dir}/group` }), dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("names come from the first matching entry; unknown ids have no name", async () => {
  await withDbs(
    "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nalias:x:1000:1000::/:/bin/sh\n",
    "root:x:0:\nstaff:x:50:alice\nother:x:50:\n",
    (n) => {
      assert.equal(n.userName(0), "root");
      assert.equal(n.userName(1000), "alice");
      assert.equal(n.userName(4242), "");
      assert.equal(n.groupName(50), "staff");
      assert.equal(n.groupName(51), "");
    },
  );
});

Deno.test("comments, blank lines, NIS +/- entries, short and non-numeric lines are ignored", async () => {
  await withDbs(
    "# comment:x:1:1:::\n\n+nis:x:2:2:::\n-bad:x:3:3:::\nshort:x:4:4\nnum:x:x5:5:::\n  spaced:x:6:6:::  \n",
    "#c:x:1:\n+g:x:2:\nshortg:x:3\n",
    (n) => {
      for (const id of [1, 2, 3, 4, 5]) assert.equal(n.userName(id), "", `uid ${id}`);
      assert.equal(n.userName(6), "spaced");
      for (const id of [1, 2, 3]) assert.equal(n.groupName(id), "", `gid ${id}`);
    },
  );
});

Deno.test("missing database files give no names", () => {
  const n = new IdNames({ passwdPath: "/nonexistent/passwd", groupPath: "/nonexistent/group" });
  assert.equal(n.userName(0), "");
  assert.equal(n.groupName(0), "");
});

Deno.test("refresh re-reads a changed file", async () => {
  await withDbs("a:x:7:7:::\n", "g:x:7:\n", async (n, dir) => {
    assert.equal(n.userName(7), "a");
    await Deno.writeTextFile(`${dir}/passwd`, "bb:x:7:7:::\n");
    assert.equal(n.userName(7), "a", "cached until refresh");
    n.refresh();
    assert.equal(n.userName(7), "bb");
    assert.equal(n.groupName(7), "g");
  });
});

Deno.test("host lookups agree with getent for root", async () => {
  const out = await new Deno.Command("getent", { args: ["passwd", "0"] }).output();
  const name = new TextDecoder().decode(out.stdout).split(":")[0];
  assert.equal(hostIdNames().userName(0), name);
});
