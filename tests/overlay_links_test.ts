import assert from "node:assert/strict";
import { join } from "node:path";
import { systemLibc } from "../ffi/libc.ts";
import { ShortLinks } from "../lib/overlay/links.ts";

Deno.test("claim gives distinct short names across two link tables on one root, skipping taken ones", async () => {
  const root = await Deno.makeTempDir();
  try {
    const a = new ShortLinks(systemLibc(), root); // two processes' views of one root
    const b = new ShortLinks(systemLibc(), root);
    a.makeDir();
    const names = [a.claim("x1"), b.claim("y1"), a.claim("x2"), b.claim("y2"), a.claim("x3")];
    assert.equal(new Set(names).size, names.length, `distinct: ${names}`);
    for (const [i, id] of ["x1", "y1", "x2", "y2", "x3"].entries()) {
      assert.equal(await Deno.readLink(join(root, names[i])), `../diff/${id}`);
    }
    // A layer that already has a link keeps it.
    assert.equal(a.claim("x1"), names[0]);
    // After a removal a fresh scan reuses the smallest free name.
    assert.equal(b.remove("y1"), 1);
    const c = new ShortLinks(systemLibc(), root);
    assert.equal(c.claim("z"), names[1]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
