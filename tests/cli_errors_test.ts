import assert from "node:assert/strict";
import { UsageError } from "../cli/args.ts";
import { describeError, NotedError } from "../cli/errors.ts";
import { NotRootError, requireRoot } from "../cli/preflight.ts";
import {
  ErrnoError,
  FfiPermissionError,
  InvalidLayerIdError,
  LayerError,
  LayerNotFoundError,
  NotSupportedError,
} from "../mod.ts";

Deno.test("usage errors and invalid ids exit 2 with a hint", () => {
  const usage = describeError(new UsageError("rm: missing ID", "strata rm --help"), {});
  assert.deepEqual(usage, {
    message: "rm: missing ID (see: strata rm --help)",
    kind: "usage",
    exitCode: 2,
  });
  const bad = describeError(new InvalidLayerIdError("a/b", "contains '/'"), {
    command: "create",
    id: "a/b",
  });
  assert.equal(bad.exitCode, 2);
  assert.match(
    bad.message,
    /^create: invalid layer id "a\/b": contains '\/' \(see: strata create --help\)$/,
  );
});

Deno.test("not root, no backend and no FFI each get their own message", () => {
  assert.throws(() => requireRoot("mount", 1000), NotRootError);
  requireRoot("mount", 0);
  requireRoot("mount", undefined); // unknown uid: let the kernel decide
  const notRoot = describeError(new NotRootError("mount", 1000), { command: "mount" });
  assert.equal(notRoot.kind, "not-root");
  assert.match(notRoot.message, /^not root: mount must run as root \(effective uid is 1000\)/);

  const none = describeError(new NotSupportedError("no usable backend"), {
    command: "status",
    driver: "auto",
  });
  assert.equal(none.kind, "not-supported");
  assert.match(none.message, /^kernel lacks aufs and overlay/);
  const aufs = describeError(new NotSupportedError("no aufs"), {
    command: "status",
    driver: "aufs",
  });
  assert.match(aufs.message, /cannot run the aufs backend/);

  const ffi = describeError(new FfiPermissionError(), { command: "status" });
  assert.equal(ffi.kind, "no-ffi");
  assert.match(ffi.message, /^missing --allow-ffi/);
});

Deno.test("runtime errors exit 1 naming the command and the layer once", () => {
  const nf = describeError(new LayerNotFoundError("x"), { command: "mount", id: "x" });
  assert.deepEqual(nf, {
    message: 'mount: layer "x" does not exist',
    kind: "layer-not-found",
    exitCode: 1,
  });
  const errno = new ErrnoError(16, "umount2", "/r/mnt/x");
  const wrapped = describeError(new LayerError("x", "put: unmount", "/r/mnt/x", errno), {
    command: "umount",
    id: "x",
  });
  assert.equal(wrapped.exitCode, 1);
  assert.match(
    wrapped.message,
    /^umount: layer "x": put: unmount \/r\/mnt\/x: umount2 \/r\/mnt\/x: .*EBUSY/,
  );
  const plain = describeError(new Error("open /t.tar: no such file"), {
    command: "apply",
    id: "x",
  });
  assert.equal(plain.message, "apply x: open /t.tar: no such file");
});

Deno.test("a noted error keeps the class of the error it wraps", () => {
  const r = describeError(new NotedError(new InvalidLayerIdError("..", "relative"), "note"), {
    command: "apply",
  });
  assert.equal(r.exitCode, 2);
  assert.match(r.message, /\(note\)$/);
});
