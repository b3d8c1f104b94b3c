import assert from "node:assert/strict";
import { COMMANDS, findCommand, helpText, parseCommandLine, UsageError } from "../cli/args.ts";

Deno.test("global flags before and after the command are both read", () => {
  const inv = parseCommandLine(["--root", "/r", "--json", "layers", "--size", "-q"]);
  assert.equal(inv.command?.name, "layers");
  assert.equal(inv.globals.root, "/r");
  assert.equal(inv.globals.json, true);
  assert.equal(inv.globals.quiet, true);
  assert.equal(inv.flags.size, true);
});

Deno.test("command flags and operands are parsed per command", () => {
  const inv = parseCommandLine(["--root=/r", "create", "child", "--parent", "base", "--rw"]);
  assert.deepEqual(inv.operands, ["child"]);
  assert.equal(inv.flags.parent, "base");
  assert.equal(inv.flags.rw, true);
  assert.equal(inv.flags.label, undefined);
  const diff = parseCommandLine(["--root", "/r", "diff", "x", "-o", "out.tar"]);
  assert.equal(diff.flags.output, "out.tar");
});

Deno.test("--root wins over $STRATA_ROOT, which wins over the default", () => {
  assert.equal(parseCommandLine(["status"], () => "/env").globals.root, "/env");
  assert.equal(parseCommandLine(["--root", "/r", "status"], () => "/env").globals.root, "/r");
  assert.equal(parseCommandLine(["status"], () => undefined).globals.root, "/var/lib/strata");
});

Deno.test("--help and --version never read the environment", () => {
  const boom = () => {
    throw new Error("environment read");
  };
  assert.equal(parseCommandLine(["--help"], boom).globals.help, true);
  assert.equal(parseCommandLine(["--version"], boom).globals.version, true);
  assert.equal(parseCommandLine(["rm", "--help"], boom).command?.name, "rm");
});

Deno.test("usage mistakes throw UsageError with a hint naming the command", () => {
  const cases: [string[], RegExp][] = [
    [["frob"], /unknown command "frob"/],
    [["create"], /create: missing ID/],
    [["create", "a", "b"], /unexpected argument "b"/],
    [["create", "a", "--bogus"], /--bogus/],
    [["create", "a", "--parent"], /--parent/],
    [["--driver", "zfs", "status"], /--driver must be one of/],
    [["import"], /import: missing FILE/],
    [["--root", "", "status"], /--root must not be empty/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(() => parseCommandLine(args, () => "/r"), (e: unknown) => {
      assert.ok(e instanceof UsageError, `${args.join(" ")}: ${e}`);
      assert.match(e.message, pattern);
      assert.match(e.hint, /^strata /);
      return true;
    });
  }
});

Deno.test("import takes many files, apply at most one", () => {
  const inv = parseCommandLine(["import", "a.tar", "b.tar", "c.tar", "--prefix", "p"]);
  assert.deepEqual(inv.operands, ["a.tar", "b.tar", "c.tar"]);
  assert.equal(inv.flags.prefix, "p");
  assert.throws(() => parseCommandLine(["apply", "x", "a.tar", "b.tar"]), UsageError);
  assert.deepEqual(parseCommandLine(["apply", "x", "-"]).operands, ["x", "-"]);
});

Deno.test("help lists every command, and command help shows its synopsis", () => {
  const text = helpText();
  for (const c of COMMANDS) assert.match(text, new RegExp(`\\n  ${c.name} `));
  assert.match(helpText(findCommand("rm")), /usage: strata \[global flags\] rm ID \[--force\]/);
});
