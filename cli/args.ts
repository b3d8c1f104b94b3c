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
  /** Adopt an existing containers/storage aufs root (write its strata.json). */
  adopt: boolean;
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
  /** What each operand and flag means, as `[name, text]` rows for `strata <command> --help`. */
  readonly details?: readonly (readonly [string, string])[];
  /** Example command lines for `strata <command> --help`. */
  readonly examples?: readonly string[];
  /** What `--json` prints: the name of its schema in docs/schemas/ (`<name>.schema.json`). */
  readonly schema?: string;
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
    details: [],
    examples: ["strata status", "strata --json status | jq .status"],
    schema: "status",
  },
  {
    name: "layers",
    synopsis: "[--size]",
    summary: "list layers: id, parent, mount count, incomplete flag (size with --size)",
    options: { size: B },
    operands: [],
    required: 0,
    details: [["--size", "also show the size of each layer's own changes (walks every layer)"]],
    examples: ["strata layers", "strata layers --size"],
    schema: "layers",
  },
  {
    name: "create",
    synopsis: "ID [--parent P | --image IMAGE] [--rw] [--label L]",
    summary: "create a layer on parent P or on an image's top layer (none: a base layer)",
    options: { parent: S, image: S, rw: B, label: S },
    operands: ["ID"],
    required: 1,
    details: [
      ["ID", "the new layer's id (at most 255 bytes, no '/', not '.' or '..')"],
      ["--parent P", "build on layer P (default: a base layer without parent)"],
      ["--image IMAGE", "build on the top layer of image IMAGE (instead of --parent)"],
      ["--rw", "create it as a read-write layer (the same thing for both backends)"],
      ["--label L", "SELinux mount label remembered for the layer's mounts"],
    ],
    examples: ["strata create base", "strata create app --parent base"],
    schema: "create",
  },
  {
    name: "rm",
    synopsis: "ID [--force]",
    summary: "remove a layer (refuses a parent or a mounted layer unless --force)",
    options: { force: B },
    operands: ["ID"],
    required: 1,
    details: [
      ["ID", "the layer to remove (an unknown id is not an error)"],
      ["--force", "remove it even when other layers build on it or it is mounted"],
    ],
    examples: ["strata rm app", "strata rm base --force"],
    schema: "rm",
  },
  {
    name: "mount",
    synopsis: "ID [--label L]",
    summary: "mount a layer over its ancestors and print the path",
    options: { label: S },
    operands: ["ID"],
    required: 1,
    details: [
      ["ID", "the layer to mount; each mount takes one reference"],
      ["--label L", "SELinux label for the mount (context=L)"],
    ],
    examples: ['cd "$(strata mount app)"'],
    schema: "mount",
  },
  {
    name: "umount",
    synopsis: "ID",
    summary: "release one mount of a layer",
    options: {},
    operands: ["ID"],
    required: 1,
    details: [["ID", "the layer to release; the last reference unmounts it"]],
    examples: ["strata umount app"],
    schema: "umount",
  },
  {
    name: "exists",
    synopsis: "ID",
    summary: "exit 0 when the layer exists, 1 when not",
    options: {},
    operands: ["ID"],
    required: 1,
    details: [["ID", "the layer to look for"]],
    examples: ["strata exists app && echo present"],
    schema: "exists",
  },
  {
    name: "diff",
    synopsis: "ID [--parent P] [-o FILE] [--source auto|original|rebuilt]",
    summary: "write the layer's changes as a tar to stdout or FILE (the applied tar when intact)",
    options: { parent: S, output: { type: "string", short: "o" }, source: S },
    operands: ["ID"],
    required: 1,
    details: [
      ["ID", "the layer whose changes are written"],
      ["--parent P", "compare against layer P instead of the layer's own parent"],
      ["-o, --output FILE", "write the tar to FILE (default: stdout, never a terminal)"],
      [
        "--source S",
        "auto (default): the tar that was applied, byte for byte, when the layer is unchanged, " +
        "else one built from its files; original: that tar or an error; rebuilt: always built",
      ],
    ],
    examples: ["strata diff app -o app.tar", "strata diff app | gzip > app.tar.gz"],
    schema: "diff",
  },
  {
    name: "apply",
    synopsis: "ID [--parent P] [FILE|-]",
    summary: "apply a layer tar (plain or gzip) to a layer and print its size",
    options: { parent: S },
    operands: ["ID", "FILE"],
    required: 1,
    details: [
      ["ID", "the layer to fill (usually just created)"],
      ["FILE", "a layer tar, plain or gzip-compressed; '-' or none reads stdin"],
      ["--parent P", "apply as if on parent P (default: the layer's own parent)"],
    ],
    examples: ["strata apply base base.tar.gz", "curl -sL URL | strata apply base -"],
    schema: "apply",
  },
  {
    name: "changes",
    synopsis: "ID [--parent P]",
    summary: "list changes against the parent: A/C/D /path",
    options: { parent: S },
    operands: ["ID"],
    required: 1,
    details: [
      ["ID", "the layer to inspect"],
      ["--parent P", "compare against layer P instead of the layer's own parent"],
    ],
    examples: ["strata changes app", "strata --json changes app"],
    schema: "changes",
  },
  {
    name: "diff-size",
    synopsis: "ID [--parent P]",
    summary: "print the size of the layer's changes",
    options: { parent: S },
    operands: ["ID"],
    required: 1,
    details: [
      ["ID", "the layer to measure"],
      ["--parent P", "compare against layer P instead of the layer's own parent"],
    ],
    examples: ["strata diff-size app", "strata -q diff-size app"],
    schema: "diff-size",
  },
  {
    name: "import",
    synopsis: "FILE... [--prefix P]",
    summary: "import layer tars as a chain (ids: sha256 of each tar, or P-1, P-2 ...)",
    options: { prefix: S },
    operands: ["FILE"],
    required: 1,
    variadic: true,
    details: [
      [
        "FILE...",
        "layer tars (plain or gzip), bottom layer first; each becomes a layer on the previous",
      ],
      [
        "--prefix P",
        "name the layers P-1, P-2, ... (default: the sha256 of each uncompressed tar)",
      ],
    ],
    examples: ["strata import l1.tar.gz l2.tar.gz", "strata import --prefix img *.tar"],
    schema: "import",
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
    details: [
      [
        "SUBCOMMAND",
        "import oci:DIR[:TAG] | export IMAGE oci:DIR[:TAG] | pull REF | push IMAGE REF",
      ],
      ["", "| ls | inspect IMAGE | rm IMAGE (removes layers nothing else uses)"],
      ["ARG", "the subcommand's operands: an OCI layout, a registry reference or an image"],
      ["--name N", "import: the name to give the imported image"],
      ["--insecure", "pull/push: allow plain HTTP and unverified TLS to the registry"],
      ["--creds U:P", "pull/push: registry user name and password"],
      ["--authfile F", "pull/push: read registry credentials from F (containers-auth.json)"],
      ["--jobs N", "pull/push: layers transferred at once, 1 to 32"],
    ],
    examples: [
      "strata image pull docker.io/library/alpine:3.20",
      "strata image import oci:./layout:latest --name alpine",
      "strata image export alpine oci:/tmp/alpine-layout",
    ],
    schema: "image",
  },
  {
    name: "commit",
    synopsis: "LAYER IMAGE",
    summary: "make image IMAGE from the layer's changes on top of its parent image",
    options: {},
    operands: ["LAYER", "IMAGE"],
    required: 2,
    details: [
      ["LAYER", "the layer whose changes become the image's new top layer"],
      ["IMAGE", "the name of the new image"],
    ],
    examples: ["strata create work --image alpine && strata commit work alpine-edited"],
    schema: "commit",
  },
  {
    name: "cleanup",
    synopsis: "",
    summary: "unmount every layer",
    options: {},
    operands: [],
    required: 0,
    details: [],
    examples: ["strata cleanup"],
    schema: "cleanup",
  },
  {
    name: "check",
    synopsis: "[--repair]",
    summary: "find incomplete layers, missing parents, stale mounts and leftovers",
    options: { repair: B },
    operands: [],
    required: 0,
    details: [[
      "--repair",
      "also fix what is safe: remove incomplete layers, stale mounts and leftovers",
    ]],
    examples: ["strata check", "strata check --repair"],
    schema: "check",
  },
];

const GLOBAL_OPTIONS = {
  root: S,
  driver: S,
  json: B,
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
  adopt: B,
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
    throw new UsageError(parseProblem(e), hint);
  }
}

/** parseArgs's complaint about a command line, said in strata's words. */
function parseProblem(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const quoted = [...text.matchAll(/'([^']*)'/g)].map((m) => m[1]);
  // "'-o, --output <value>'" names the flag both ways: prefer the long name.
  const flag =
    quoted.flatMap((q) => q.match(/--?[\w-]+/g) ?? []).sort((a, b) => b.length - a.length)[0];
  switch ((e as { code?: string }).code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown flag ${flag ?? quoted[0] ?? text}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return text.includes("does not take")
        ? `${flag} is a switch and takes no value`
        : `${flag} needs a value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument ${JSON.stringify(quoted[0] ?? "")} before the command`;
    default:
      return text.split("\n")[0];
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
    adopt: merged.adopt === true,
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

const EXIT_HELP = [
  "exit status:",
  "  0  success",
  "  1  runtime error (a layer, file or system call failed; `exists`: no such layer;",
  "     `check`: problems remain)",
  "  2  usage error (unknown command or flag, missing or invalid argument)",
  "",
];

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
    "  --adopt             adopt an existing containers/storage aufs root at --root",
    "  -h, --help          this help",
    "  -V, --version       print the version",
  ];
  if (command) {
    const details = command.details ?? [];
    const w = Math.max(18, ...details.map(([k]) => k.length));
    return [
      `usage: strata [global flags] ${command.name}${
        command.synopsis ? " " + command.synopsis : ""
      }`,
      "",
      `  ${command.summary}`,
      "",
      ...(details.length > 0
        ? ["arguments and flags:", ...details.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`), ""]
        : []),
      "global flags:",
      ...globals,
      "",
      ...(command.examples?.length
        ? ["examples:", ...command.examples.map((e) => `  ${e}`), ""]
        : []),
      ...EXIT_HELP,
      ...(command.schema ? [`--json output: docs/schemas/${command.schema}.schema.json`, ""] : []),
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
    "Run `strata <command> --help` for a command's arguments and examples.",
    "",
    ...EXIT_HELP,
  ].join("\n");
}
