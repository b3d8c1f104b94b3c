/**
 * Test helper: check a value against the subset of JSON Schema (2020-12)
 * that docs/schemas/ uses: type, properties, required, additionalProperties,
 * items, enum, const, pattern, minimum.
 *
 * @module
 */

/** A JSON Schema as far as this checker reads it. */
export interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  enum?: unknown[];
  const?: unknown;
  pattern?: string;
  minimum?: number;
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

/**
 * The problems of `value` against `schema`, as `path: what` lines; empty when it conforms.
 *
 * @example
 * ```ts
 * import { schemaProblems } from "./json_schema.ts";
 * console.log(schemaProblems({ a: 1 }, { type: "object", required: ["b"] })); // ["$: missing b"]
 * ```
 */
export function schemaProblems(value: unknown, schema: Schema, path = "$"): string[] {
  const out: string[] = [];
  const t = typeOf(value);
  if (schema.type !== undefined) {
    const allowed = Array.isArray(schema.type) ? schema.type : [schema.type];
    const ok = allowed.includes(t) || (t === "integer" && allowed.includes("number"));
    if (!ok) return [`${path}: is ${t}, not ${allowed.join(" or ")}`];
  }
  if (schema.enum && !schema.enum.some((e) => e === value)) {
    out.push(`${path}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  }
  if ("const" in schema && schema.const !== value) {
    out.push(`${path}: ${JSON.stringify(value)} is not ${JSON.stringify(schema.const)}`);
  }
  if (schema.pattern && typeof value === "string" && !new RegExp(schema.pattern).test(value)) {
    out.push(`${path}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  }
  if (schema.minimum !== undefined && typeof value === "number" && value < schema.minimum) {
    out.push(`${path}: ${value} is below ${schema.minimum}`);
  }
  if (t === "object") {
    const obj = value as Record<string, unknown>;
    for (const key of schema.required ?? []) {
      if (!(key in obj)) out.push(`${path}: missing ${key}`);
    }
    for (const [key, v] of Object.entries(obj)) {
      const sub = schema.properties?.[key];
      if (sub) out.push(...schemaProblems(v, sub, `${path}.${key}`));
      else if (schema.additionalProperties === false) out.push(`${path}: unexpected ${key}`);
      else if (typeof schema.additionalProperties === "object") {
        out.push(...schemaProblems(v, schema.additionalProperties, `${path}.${key}`));
      }
    }
  }
  if (t === "array" && schema.items) {
    (value as unknown[]).forEach((v, i) =>
      out.push(...schemaProblems(v, schema.items!, `${path}[${i}]`))
    );
  }
  return out;
}
