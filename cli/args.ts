/**
 * Command-line parsing for `strata`: global flags, the command table, and the
 * per-command flags, all through `parseArgs` from `node:util`. Nothing here
 * touches the file system or the kernel, so `--help` and `--version` work
 * without any permission.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The backends a user may name with `--driver`. */
export const DRIVER_CHOICES = ["auto", "aufs", "overlay"] as const;

/** Root used when neither `--root` nor `$STRATA_ROOT` is given. */
export const DEFAULT_ROOT = "/var/lib/strata";

/** A mistake in the command line: exit status 2, with a hint on how to fix it. */
export class UsageError extends Error {
  /** What to try instead, e.g. `"strata create --help"`. */
  readonly hint: string;
  /** `message` says what is wrong; `hint` what to run for help. */
  constructor(message: string, hint = "strata --help") {
    super(message);
    this.name = "UsageError";
    this.hint = hint;
  }
}

/** Flags valid before or after the command. */
export interface GlobalFlags {
  /** Driver root directory. */
  root: string;
  /** `"auto"`, `"aufs"` or `"overlay"`. */
  driver: (typeof DRIVER_CHOICES)[number];
  /** Machine-readable output. */
  json: boolean;
  /** No progress and no confirmations. */
  quiet: boolean;
  /** Print help and exit. */
  help: boolean;
  /** Print the version and exit. */
  version: boolean;
}

type OptionSpec = { type: "string" | "boolean"; short?: string };

/** One command of the table: its flags, how many operands it takes, its help. */
export interface CommandSpec {
  /** The word typed after `strata`. */
  readonly name: string;
  /** Operand synopsis, e.g. `"ID [--parent P]"`. */
  readonly synopsis: string;
  /** One line of help. */
  readonly summary: string;
  /** Flags of the command (globals are added by the parser). */
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Names of the operands, for messages; the last may repeat when `variadic`. */
  readonly operands: readonly string[];
  /** How many operands are required. */
  readonly required: number;
  /** The last operand may be given many times. */
  readonly variadic?: boolean;
}

const S = { type: "string" } as const;
const B = { type: "boolean" } as const;

/** Every command `strata` knows, in help order. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: "status",
    synopsis: "",
    summary: "show the backend and its facts",
    options: {},
    operands: [],
    required: 0,
  },
  {
    name: "layers",
    synopsis: "[--size]",
    summary: "list layers: id, parent, mount count, incomplete flag (size with --size)",
    options: { size: B },
    operands: [],
    required: 0,
  },
  {
    name: "create",
    synopsis: "ID [--parent P | --image IMAGE] [--rw] [--label L]",
    summary: "create a layer on parent P or on an image's top layer (none: a base layer)",
    options: { parent: S, image: S, rw: B, label: S },
    operands: ["ID"],
    required: 1,
  },
  {
    name: "rm",
    synopsis: "ID [--force]",
    summary: "remove a layer (refuses a parent or a mounted layer unless --force)",
    options: { force: B },
    operands: ["ID"],
    required: 1,
  },
  {
    name: "mount",
    synopsis: "ID [--label L]",
    summary: "mount a layer over its ancestors and print the path",
    options: { label: S },
    operands: ["ID"],
    required: 1,
  },
  {
    name: "umount",
    synopsis: "ID",
    summary: "release one mount of a layer",
    options: {},
    operands: ["ID"],
    required: 1,
  },
  {
    name: "exists",
    synopsis: "ID",
    summary: "exit 0 when the layer exists, 1 when not",
    options: {},
    operands: ["ID"],
    required: 1,
  },
  {
    name: "diff",
    synopsis: "ID [--parent P] [-o FILE] [--source auto|original|rebuilt]",
    summary: "write the layer's changes as a tar to stdout or FILE (the applied tar when intact)",
    options: { parent: S, output: { type: "string", short: "o" }, source: S },
    operands: ["ID"],
    required: 1,
  },
  {
    name: "apply",
    synopsis: "ID [--parent P] [FILE|-]",
    summary: "apply a layer tar (plain or gzip) to a layer and print its size",
    options: { parent: S },
    operands: ["ID", "FILE"],
    required: 1,
  },
  {
    name: "changes",
    synopsis: "ID [--parent P]",
    summary: "list changes against the parent: A/C/D /path",
    options: { parent: S },
    operands: ["ID"],
    required: 1,
  },
  {
    name: "diff-size",
    synopsis: "ID [--parent P]",
    summary: "print the size of the layer's changes",
    options: { parent: S },
    operands: ["ID"],
    required: 1,
  },
  {
    name: "import",
    synopsis: "FILE... [--prefix P]",
    summary: "import layer tars as a chain (ids: sha256 of each tar, or P-1, P-2 ...)",
    options: { prefix: S },
    operands: ["FILE"],
    required: 1,
    variadic: true,
  },
  {
    name: "image",
    synopsis: "import|export|pull|push|ls|inspect|rm ... [--name N] [--insecure] [--creds U:P]",
    summary: "images: OCI layouts (oci:DIR[:TAG]) and registries in and out",
    options: {
      name: S,
      insecure: B,
      creds: S,
      authfile: S,
      jobs: S,
    },
    operands: ["SUBCOMMAND", "ARG"],
    required: 1,
    variadic: true,
  },
  {
    name: "commit",
    synopsis: "LAYER IMAGE",
    summary: "make image IMAGE from the layer's changes on top of its parent image",
    options: {},
    operands: ["LAYER", "IMAGE"],
    required: 2,
  },
  {
    name: "cleanup",
    synopsis: "",
    summary: "unmount every layer",
    options: {},
    operands: [],
    required: 0,
  },
  {
    name: "check",
    synopsis: "[--repair]",
    summary: "find incomplete layers, missing parents, stale mounts and leftovers",
    options: { repair: B },
    operands: [],
    required: 0,
  },
];

const GLOBAL_OPTIONS = {
  root: S,
  driver: S,
  json: B,
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** A parsed command line. `command` is undefined for bare `--help`/`--version`. */
export interface Invocation {
  globals: GlobalFlags;
  command?: CommandSpec;
  /** The command's own flags (string or boolean values). */
  flags: Record<string, string | boolean | undefined>;
  /** The command's operands. */
  operands: string[];
}

/** Global flags that consume the next argument when written without `=`. */
const VALUE_FLAGS = new Set(["--root", "--driver"]);

function commandIndex(args: readonly string[]): number {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") return i + 1 < args.length ? i + 1 : -1;
    if (VALUE_FLAGS.has(a)) {
      i++;
      continue;
    }
    if (!a.startsWith("-") || a === "-") return i;
  }
  return -1;
}

function parseOrThrow(
  args: string[],
  options: Record<string, OptionSpec>,
  allowPositionals: boolean,
  hint: string,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals, allowNegative: false });
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0].replace(/\. To specify a positional.*$/, "");
    throw new UsageError(msg, hint);
  }
}

/** The spec of command `name`, or undefined. */
export function findCommand(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/**
 * Parse `args` (without the program name). `envRoot` reads `$STRATA_ROOT`;
 * it is called only when a command needs a root and `--root` is absent, so
 * `--help` reads no environment. Throws {@linkcode UsageError} on any mistake.
 *
 * @example
 * ```ts
 * import { parseCommandLine } from "./args.ts";
 * const inv = parseCommandLine(["--root", "/tmp/r", "create", "b", "--parent", "a"]);
 * console.log(inv.command?.name, inv.operands, inv.flags.parent); // create ["b"] a
 * ```
 */
export function parseCommandLine(
  args: readonly string[],
  envRoot: () => string | undefined = () => undefined,
): Invocation {
  const at = commandIndex(args);
  const before = at < 0 ? [...args] : args.slice(0, at).filter((a) => a !== "--");
  const head = parseOrThrow(before, { ...GLOBAL_OPTIONS }, false, "strata --help");
  const name = at < 0 ? undefined : args[at];
  const command = name === undefined ? undefined : findCommand(name);
  if (name !== undefined && command === undefined) {
    throw new UsageError(`unknown command ${JSON.stringify(name)}`, "strata --help");
  }
  let tail: ReturnType<typeof parseOrThrow> | undefined;
  if (command) {
    const hint = `strata ${command.name} --help`;
    tail = parseOrThrow(args.slice(at + 1), { ...GLOBAL_OPTIONS, ...command.options }, true, hint);
  }
  const merged: Record<string, string | boolean | undefined> = { ...head.values, ...tail?.values };
  const driver = (merged.driver as string | undefined) ?? "auto";
  if (!(DRIVER_CHOICES as readonly string[]).includes(driver)) {
    throw new UsageError(
      `--driver must be one of ${DRIVER_CHOICES.join(", ")}, not ${JSON.stringify(driver)}`,
    );
  }
  const help = merged.help === true;
  const version = merged.version === true;
  const operands = tail ? [...tail.positionals] : [];
  if (command && !help && !version) checkOperands(command, operands);
  const root = (merged.root as string | undefined) ??
    ((help || version || !command) ? DEFAULT_ROOT : (envRoot() || DEFAULT_ROOT));
  if (root === "") throw new UsageError("--root must not be empty");
  const globals: GlobalFlags = {
    root,
    driver: driver as GlobalFlags["driver"],
    json: merged.json === true,
    quiet: merged.quiet === true,
    help,
    version,
  };
  const flags: Record<string, string | boolean | undefined> = {};
  for (const key of Object.keys(command?.options ?? {})) flags[key] = merged[key];
  return { globals, command, flags, operands };
}

function checkOperands(command: CommandSpec, operands: string[]): void {
  const hint = `strata ${command.name} --help`;
  if (operands.length < command.required) {
    const missing = command.operands[operands.length];
    throw new UsageError(`${command.name}: missing ${missing}`, hint);
  }
  if (!command.variadic && operands.length > command.operands.length) {
    const extra = operands.slice(command.operands.length).map((o) => JSON.stringify(o)).join(" ");
    throw new UsageError(`${command.name}: unexpected argument ${extra}`, hint);
  }
  for (const [i, op] of operands.entries()) {
    if (op === "" && command.operands[Math.min(i, command.operands.length - 1)] !== "FILE") {
      throw new UsageError(`${command.name}: ${command.operands[i]} must not be empty`, hint);
    }
  }
}

/**
 * The text of `strata --help`, or of `strata <command> --help`.
 *
 * @example
 * ```ts
 * import { findCommand, helpText } from "./args.ts";
 * console.log(helpText(findCommand("create")));
 * ```
 */
export function helpText(command?: CommandSpec): string {
  const globals = [
    "  --root DIR          driver root (default $STRATA_ROOT, else /var/lib/strata)",
    "  --driver NAME       aufs, overlay or auto (default auto: aufs, then overlay)",
    "  --json              machine-readable output",
    "  -q, --quiet         no progress line, no confirmations",
    "  -h, --help          this help",
    "  -V, --version       print the version",
  ];
  if (command) {
    return [
      `usage: strata [global flags] ${command.name}${
        command.synopsis ? " " + command.synopsis : ""
      }`,
      "",
      `  ${command.summary}`,
      "",
      "global flags:",
      ...globals,
      "",
    ].join("\n");
  }
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "usage: strata [global flags] <command> [args]",
    "",
    "Layered container filesystems (aufs or overlay union mounts, layer tars in and out).",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "global flags:",
    ...globals,
    "",
    "Run `strata <command> --help` for a command's arguments. Exit status: 0 ok,",
    "1 runtime error (or `exists`: no such layer), 2 usage error.",
    "",
  ].join("\n");
}
