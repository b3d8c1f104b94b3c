/**
 * strata: layered container filesystems for Deno.
 *
 * Layers with parent chains, a union mount of a layer over its ancestors
 * (aufs, as containers/storage's aufs graph driver; overlay where the kernel
 * has no aufs), and layer tars in and out in the OCI/Docker format
 * (`.wh.` whiteouts), byte-compatible with containers/storage.
 *
 * Needs `--allow-ffi --allow-read --allow-write` (and root to mount). libc is
 * opened on first use, so importing this module needs no permission.
 *
 * @example
 * ```ts
 * import { openDriver } from "jsr:@strata/aufs";
 *
 * const driver = await openDriver("auto", "/var/lib/strata");
 * await driver.create("base", "");
 * await driver.create("app", "base");
 * const rootfs = await driver.get("app"); // the union of app over base
 * await Deno.writeTextFile(`${rootfs}/hello`, "hi\n");
 * const layerTar = await driver.diff("app", "base"); // a layer tar of the change
 * await layerTar.pipeTo((await Deno.create("/tmp/app.tar")).writable);
 * await driver.put("app");
 * ```
 *
 * @module
 */

// System calls
export {
  AT,
  DT,
  effectiveUid,
  Errno,
  ErrnoError,
  errnoOf,
  errnoText,
  FfiPermissionError,
  isErrno,
  MNT,
  MS,
  O,
  readTextFileViaLibc,
  RESOLVE,
  S,
  systemLibc,
  UTIME_OMIT,
} from "./ffi/libc.ts";
export type { DirEntry, Libc, PathLike, Stat, StatFs } from "./ffi/libc.ts";
export type { ErrnoFields } from "./ffi/errno.ts";

// Errors
export {
  AufsBranchLimitError,
  AufsNestedError,
  AufsNotSupportedError,
  IncompatibleFsError,
  InvalidLayerIdError,
  LayerError,
  LayerIncompleteError,
  LayerInUseError,
  LayerNotFoundError,
  NotStrataRootError,
  NotSupportedError,
  PermissionMissingError,
  ReadOnlyError,
  TarSplitUnavailableError,
} from "./lib/errors.ts";

// The driver interface and registry
export { AUTO_ORDER, driverNames, openDriver, registerDriver } from "./lib/driver.ts";
export type {
  ApplyDiffOpts,
  Change,
  CreateOpts,
  DiffOpts,
  DiffSource,
  Driver,
  DriverInit,
  DriverOptions,
  DriverStatus,
  FileGetter,
  IDMap,
  LayerTar,
  MountedLayer,
  MountOpts,
  OperationOpts,
  PutOpts,
  RemoveOpts,
} from "./lib/driver.ts";
export { validateLayerId } from "./lib/ids.ts";
export { LayerStore } from "./lib/store.ts";
export { MARKER_NAME, readMarker, systemPathProblem } from "./lib/root_marker.ts";
export type { ProbeRecord, RootMarker } from "./lib/root_marker.ts";
export { type RefRecord, TransientRefs } from "./lib/transient_refs.ts";
export { backingFsName, FS_MAGIC, fsName } from "./lib/fsmagic.ts";

// The generic union driver and the two backends
export { setDefaultLayerArchive, UnionDriver, UNWIRED_ARCHIVE } from "./lib/union.ts";
export type {
  LayerArchive,
  LayerState,
  UnionBackend,
  UnionDriverOptions,
  UnionMount,
} from "./lib/union.ts";
export { describeIncomplete, incompleteRemedy } from "./lib/incomplete.ts";
export { AufsDriver } from "./lib/aufs/driver.ts";
export type { AufsOptions } from "./lib/aufs/driver.ts";
export { AufsBackend } from "./lib/aufs/backend.ts";
export { packAufsBranches } from "./lib/aufs/branches.ts";
export type { AufsBranchOptions, PackedBranches } from "./lib/aufs/branches.ts";
export { OverlayDriver } from "./lib/overlay/driver.ts";
export type { OverlayOptions } from "./lib/overlay/driver.ts";
export { OverlayBackend } from "./lib/overlay/backend.ts";
export { layerArchive, withSource } from "./lib/layer_archive.ts";
export { TAR_SPLIT_DIR, TAR_SPLIT_SUFFIX, TarSplitStore } from "./lib/tar_split_store.ts";
export type { PendingTarSplit } from "./lib/tar_split_store.ts";
export { NaiveDiff } from "./lib/naive.ts";
export type { GetPut, NaiveDiffOptions } from "./lib/naive.ts";

// Layer tars
export { tarDirectory } from "./lib/archive/tar_dir.ts";
export type { TarDirectoryOptions } from "./lib/archive/tar_dir.ts";
export { untar } from "./lib/archive/untar.ts";
export type { UntarOptions } from "./lib/archive/untar.ts";
export { applyLayer } from "./lib/archive/apply_layer.ts";
export type { ApplyLayerOptions } from "./lib/archive/apply_layer.ts";
export { ExtractError, InvalidArchiveError, newExtractStats } from "./lib/archive/extract.ts";
export type { ExtractStats } from "./lib/archive/extract.ts";
export { changesDirs, layerChanges, sortChanges } from "./lib/archive/changes.ts";
export type { ChangesDirsOptions, LayerChangesOptions } from "./lib/archive/changes.ts";
export { exportChanges } from "./lib/archive/export.ts";
export type { ExportChangesOptions } from "./lib/archive/export.ts";
export { changesSize, directorySize } from "./lib/archive/size.ts";
export {
  decompressed,
  decompressFd,
  decompressor,
  detectCompression,
  UnsupportedCompressionError,
} from "./lib/compression.ts";
export type { Compression, DecompressFdOptions, ReadableCompression } from "./lib/compression.ts";
export { readTar, TarFormatError, TarParser } from "./lib/archive/tar_reader.ts";
export type { TarSink } from "./lib/archive/tar_reader.ts";
export { encodeHeader, END_OF_ARCHIVE, padding, TarEncodeError } from "./lib/archive/tar_writer.ts";
export { makeHeader, TarType } from "./lib/archive/tar_header.ts";
export type { TarHeader } from "./lib/archive/tar_header.ts";
export type { WhiteoutFormat } from "./lib/archive/whiteouts.ts";
export { IdMapError, toContainer, toHost } from "./lib/archive/idmap.ts";

// tar-split: digest-stable layer tars (containers/storage's <id>.tar-split.gz)
export {
  assembleTar,
  dirFileGetter,
  DirFiles,
  TAR_SPLIT_FILE,
  TAR_SPLIT_SEGMENT,
  TarSplitError,
  TarSplitReader,
  TarSplitRecorder,
} from "./lib/archive/tar_split.ts";
export type { AssembleOptions, DirFileGetter, TarSplitEntry } from "./lib/archive/tar_split.ts";
export { Crc64 } from "./lib/archive/crc64.ts";

// Consistency check of a driver root
export { checkRoot } from "./lib/check.ts";
export type { CheckOptions, CheckReport, Finding, FindingKind, RepairState } from "./lib/check.ts";

// overlay backend details
export { ShortLinks } from "./lib/overlay/links.ts";
export { OVERLAY_MAX_LOWERS, OverlayDepthError, packOverlayMount } from "./lib/overlay/lowers.ts";
export type { OverlayMountData, OverlayMountInput } from "./lib/overlay/lowers.ts";
export { OverlayNotSupportedError } from "./lib/overlay/probe.ts";
