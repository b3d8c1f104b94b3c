/**
 * User-namespace id maps (containers/storage's pkg/idtools): translate ids
 * between the host and a container.
 *
 * `undefined`, `null` and `[]` all mean identity (a documented choice: Go
 * distinguished a nil list from an empty one).
 *
 * @module
 */

import type { IDMap } from "../driver.ts";

/**
 * An id that no range of the map covers.
 *
 * @example
 * ```ts
 * import { IdMapError, toHost } from "../../mod.ts";
 * try {
 *   toHost(70000, [{ containerID: 0, hostID: 100000, size: 65536 }]);
 * } catch (e) {
 *   console.log(e instanceof IdMapError && e.id); // 70000
 * }
 * ```
 */
export class IdMapError extends Error {
  /** The id that could not be mapped. */
  readonly id: number;
  /** `direction` is "host" (container→host) or "container" (host→container). */
  constructor(id: number, direction: "host" | "container") {
    super(
      direction === "host"
        ? `Container ID ${id} cannot be mapped to a host ID`
        : `Host ID ${id} cannot be mapped to a container ID`,
    );
    this.name = "IdMapError";
    this.id = id;
  }
}

/** Whether the map is the identity. */
export function isIdentity(maps: readonly IDMap[] | null | undefined): boolean {
  return !maps || maps.length === 0;
}

/**
 * Container id → host id.
 *
 * @example
 * ```ts
 * import { toHost } from "./idmap.ts";
 * console.log(toHost(0, [{ containerID: 0, hostID: 100000, size: 65536 }])); // 100000
 * ```
 */
export function toHost(id: number, maps: readonly IDMap[] | null | undefined): number {
  if (isIdentity(maps)) return id;
  for (const m of maps!) {
    if (id >= m.containerID && id < m.containerID + m.size) return m.hostID + (id - m.containerID);
  }
  throw new IdMapError(id, "host");
}

/**
 * Host id → container id.
 *
 * @example
 * ```ts
 * import { toContainer } from "./idmap.ts";
 * console.log(toContainer(100001, [{ containerID: 0, hostID: 100000, size: 65536 }])); // 1
 * ```
 */
export function toContainer(id: number, maps: readonly IDMap[] | null | undefined): number {
  if (isIdentity(maps)) return id;
  for (const m of maps!) {
    if (id >= m.hostID && id < m.hostID + m.size) return m.containerID + (id - m.hostID);
  }
  throw new IdMapError(id, "container");
}

/** The uid and gid maps of a driver or an archive operation. */
export interface IdMaps {
  uidMaps?: IDMap[];
  gidMaps?: IDMap[];
}

/**
 * The host uid/gid of the container's root (containers/storage's GetRootUIDGID).
 *
 * @example
 * ```ts
 * import { rootPair } from "./idmap.ts";
 * console.log(rootPair({})); // { uid: 0, gid: 0 }
 * ```
 */
export function rootPair(maps: IdMaps): { uid: number; gid: number } {
  return { uid: toHost(0, maps.uidMaps), gid: toHost(0, maps.gidMaps) };
}
