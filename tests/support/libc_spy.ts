/**
 * Test support for the mount-related tests: a libc double that records and
 * can override calls while delegating the rest to the real libc, and mount
 * cleanup that never leaves a test's mount behind.
 *
 * @module
 */

import { type Libc, MNT, MS, systemLibc } from "../../ffi/libc.ts";
import { isMountpoint } from "../../lib/mounts.ts";

/** One recorded call: method name and arguments. */
export interface Call {
  name: string;
  args: unknown[];
}

/**
 * The real libc with `overrides` in place of some methods, recording every
 * call of the overridden or `watched` methods in `calls`.
 */
export function spyLibc(
  overrides: Partial<Libc> = {},
  watched: (keyof Libc)[] = ["mount", "umount2"],
): { libc: Libc; calls: Call[] } {
  const real = systemLibc();
  const calls: Call[] = [];
  const libc = new Proxy(real, {
    get(target, prop) {
      const own = (overrides as Record<PropertyKey, unknown>)[prop];
      const fn = (own ?? (target as unknown as Record<PropertyKey, unknown>)[prop]) as
        | ((...a: unknown[]) => unknown)
        | undefined;
      if (typeof fn !== "function") return fn;
      const bound = own ? fn : fn.bind(target);
      if (own === undefined && !watched.includes(prop as keyof Libc)) return bound;
      return (...args: unknown[]) => {
        calls.push({ name: String(prop), args });
        return bound(...args);
      };
    },
  });
  return { libc, calls };
}

/** Bind-mount `src` onto `dst` with the real libc. */
export function bind(src: string, dst: string): void {
  systemLibc().mount(src, dst, "none", MS.BIND, "");
}

/** Detach every mount stacked on `path` (for `finally` blocks). */
export function unmountAll(path: string): void {
  for (let i = 0; i < 10 && isMountpoint(path); i++) systemLibc().umount2(path, MNT.DETACH);
}
