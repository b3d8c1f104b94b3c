/**
 * AbortSignal helpers for the long operations: a stream that errors with the
 * signal's reason when it aborts.
 *
 * @module
 */

/**
 * `stream`, but erroring with `signal.reason` once `signal` aborts (the
 * source is cancelled with the same reason, so whatever it holds is
 * released). Without a signal, `stream` itself is returned.
 *
 * @example
 * ```ts
 * import { abortableStream } from "./abort.ts";
 * const ac = new AbortController();
 * const s = abortableStream(new Blob(["data"]).stream(), ac.signal);
 * ac.abort();
 * try {
 *   await new Response(s).arrayBuffer();
 * } catch (e) {
 *   console.log((e as DOMException).name); // AbortError
 * }
 * ```
 */
export function abortableStream(
  stream: ReadableStream<Uint8Array>,
  signal: AbortSignal | undefined,
): ReadableStream<Uint8Array> {
  if (!signal) return stream;
  const reader = stream.getReader();
  let onAbort: (() => void) | undefined;
  const detach = () => {
    if (onAbort) signal.removeEventListener("abort", onAbort);
    onAbort = undefined;
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      onAbort = () => {
        detach();
        controller.error(signal.reason);
        reader.cancel(signal.reason).catch(() => {});
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    },
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (signal.aborted) return; // already errored by onAbort
        if (done) {
          detach();
          controller.close();
        } else controller.enqueue(value);
      } catch (e) {
        detach();
        if (!signal.aborted) controller.error(e);
      }
    },
    cancel(reason) {
      detach();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
