#!/usr/bin/env bash
# `deno task test:aufs`: every test that mounts, run inside the aufs guest
# (../shared/aufs-vm, a QEMU VM whose kernel has aufs and overlay), where
# openDriver("auto") picks aufs. Type-checking happens on the host first
# (`deno check`, fast); the guest runs with --no-check (TCG is slow).
# Extra arguments go to `deno test` (e.g. --filter).
# A missing qemu or VM: one line on stderr and exit status 1.
set -uo pipefail
cd "$(dirname "$0")/.."

VM=${STRATA_AUFS_VM:-../shared/aufs-vm/run.sh}

# The guest part of the suite: the tests that mount for real.
FILES=(
  tests/driver_contract_test.ts
  tests/graphtest_test.ts
  tests/aufs_kernel_test.ts
  tests/aufs_real_test.ts
  tests/seed_aufs_test.ts
)
# Host tests whose recording libc double fakes aufs: the mount data it accepts
# there is logged and replayed on the real kernel by tests/aufs_kernel_test.ts.
DOUBLE_FILES=(
  tests/aufs_driver_test.ts
  tests/aufs_probe_test.ts
  tests/recording_libc_test.ts
)

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  echo "test:aufs: qemu-system-x86_64 not found (apt-get install qemu-system-x86); the aufs tests did not run" >&2
  exit 1
fi
if [ ! -f "$VM" ]; then
  echo "test:aufs: the aufs VM ($VM) is missing; the aufs tests did not run" >&2
  exit 1
fi

DENO=$(command -v deno) || {
  echo "test:aufs: deno is not on PATH (the guest runs the host's deno binary)" >&2
  exit 1
}
"$DENO" check "${FILES[@]}" || exit 1

# A log already written by `deno task test` (STRATA_AUFS_DATA_LOG set, as .ci/run does) is
# reused; otherwise the double's tests run on the host first to write one.
LOGDIR=$(mktemp -d /tmp/strata-test-aufs.XXXXXX)
trap 'rm -rf "$LOGDIR"' EXIT
if [ -s "${STRATA_AUFS_DATA_LOG:-}" ]; then
  cp "$STRATA_AUFS_DATA_LOG" "$LOGDIR/aufs-data.jsonl"
  LOG=$LOGDIR/aufs-data.jsonl
else
  LOG=$LOGDIR/aufs-data.jsonl
  echo "test:aufs: recording the mount data the aufs double accepts (host: ${DOUBLE_FILES[*]})"
  if ! STRATA_AUFS_DATA_LOG=$LOG "$DENO" test --allow-all --no-prompt --quiet "${DOUBLE_FILES[@]}" \
    >"$LOGDIR/host.out" 2>&1; then
    tail -30 "$LOGDIR/host.out"
    echo "test:aufs: the host tests of the double failed" >&2
    exit 1
  fi
fi
echo "test:aufs: $(wc -l <"$LOG") aufs calls recorded; booting the aufs guest"
bash "$VM" --share "$PWD" --host-tmp "$LOGDIR" --env "STRATA_AUFS_DATA_LOG=$LOG" --timeout 1200 -- \
  "$DENO" test --allow-all --no-prompt --no-check "${FILES[@]}" "$@"
