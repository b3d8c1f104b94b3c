/**
 * The public documentation: every exported symbol has an example (their
 * type-check is `deno task check`'s `deno test --doc --no-run`), and public
 * docs speak the project's own words.
 */

import assert from "node:assert/strict";
import { runCommand } from "./support/run.ts";

const REPO = new URL("..", import.meta.url).pathname;

interface DocNode {
  name: string;
  declarations?: { kind: string; jsDoc?: { doc?: string; tags?: { kind: string }[] } }[];
}

async function exported(entry: string): Promise<DocNode[]> {
  const r = await runCommand(Deno.execPath(), ["doc", "--json", entry], { cwd: REPO });
  assert.equal(r.code, 0, r.err);
  const doc = JSON.parse(r.out) as { nodes: Record<string, { symbols: DocNode[] }> };
  return Object.values(doc.nodes).flatMap((m) => m.symbols);
}

Deno.test("every symbol mod.ts and cli.ts export has a JSDoc example", async () => {
  const missing: string[] = [];
  // image.ts (the image store, newer) is not covered yet.
  for (const entry of ["mod.ts", "cli.ts"]) {
    for (const s of await exported(entry)) {
      const decls = s.declarations ?? [];
      const has = decls.some((d) => d.jsDoc?.tags?.some((t) => t.kind === "example"));
      if (!has) missing.push(`${entry}: ${s.name}`);
    }
  }
  assert.deepEqual(missing, []);
});

Deno.test("public docs use no internal shorthand (seed, §) and say nothing of the build machines", async () => {
  const bad = /\bseed\b|§|\bour machines?\b|\bthis (?:shared )?machine\b/i;
  const hits: string[] = [];
  const texts: [string, string][] = [];
  for (const entry of ["mod.ts", "cli.ts", "image.ts"]) {
    const r = await runCommand(Deno.execPath(), ["doc", "--json", entry], { cwd: REPO });
    texts.push([`JSDoc of ${entry}`, r.out]);
  }
  for (const file of ["docs/behaviour.md"]) {
    texts.push([file, await Deno.readTextFile(`${REPO}/${file}`)]);
  }
  // README: the user-facing part (benchmark figures name the machine they were measured on).
  const readme = await Deno.readTextFile(`${REPO}/README.md`);
  texts.push(["README.md", readme.replace(/\n## Benchmarks\n[\s\S]*?(?=\n## )/, "\n")]);
  for (const [where, text] of texts) {
    for (const line of text.split(/\\n|\n/)) {
      if (bad.test(line) && !/seeded/.test(line)) {
        hits.push(`${where}: ${line.trim().slice(0, 120)}`);
      }
    }
  }
  assert.deepEqual(hits, []);
});
