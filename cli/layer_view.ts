/**
 * Layer facts the `Driver` interface does not carry — parent chains,
 * children, incomplete markers, mount counts — read from a
 * {@linkcode UnionDriver}'s store. Other drivers get a view with what the
 * interface offers (ids only).
 *
 * @module
 */

import { type Driver, UnionDriver } from "../mod.ts";

/** Read-only facts about the layers of one driver root. */
export interface LayerView {
  /** Every layer id, complete or not, sorted. */
  ids(): Promise<string[]>;
  /** Ancestor chain of `id`, nearest first. */
  parents(id: string): Promise<string[]>;
  /** Layers whose chain names `id`. */
  children(id: string): Promise<string[]>;
  /** Layers marked incomplete, with the operation that left them so. */
  incomplete(): Promise<{ id: string; why: string }[]>;
  /** Current mount count of `id` (reconciled with the mount table). */
  mountCount(id: string): Promise<number>;
  /** Whether `id` is a layer at all (complete or incomplete). */
  known(id: string): Promise<boolean>;
}

/**
 * The view of `driver`.
 *
 * @example
 * ```ts
 * import { openDriver } from "../mod.ts";
 * import { layerView } from "./layer_view.ts";
 * const view = layerView(await openDriver("auto", "/var/lib/strata"));
 * console.log(await view.ids());
 * ```
 */
export function layerView(driver: Driver): LayerView {
  if (driver instanceof UnionDriver) return unionView(driver);
  return {
    ids: () => driver.listLayers(),
    parents: () => Promise.resolve([]),
    children: () => Promise.resolve([]),
    incomplete: () => Promise.resolve([]),
    mountCount: () => Promise.resolve(0),
    known: (id) => driver.exists(id),
  };
}

function unionView(driver: UnionDriver): LayerView {
  const store = driver.store;
  const incomplete = () => store.incomplete();
  return {
    async ids() {
      const all = new Set([...await store.list(), ...(await incomplete()).map((m) => m.id)]);
      return [...all].sort(byteOrder);
    },
    parents: (id) => store.parents(id),
    children: (id) => store.children(id),
    incomplete,
    mountCount: (id) => driver.mountCount(id),
    async known(id) {
      if (await driver.exists(id)) return true;
      return (await incomplete()).some((m) => m.id === id);
    },
  };
}

const encoder = new TextEncoder();

function byteOrder(a: string, b: string): number {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}
