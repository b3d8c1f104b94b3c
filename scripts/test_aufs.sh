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
)

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  echo "test:aufs: qemu-system-x86_64 not found (apt-get install qemu-system-x86); the aufs tests did not run" >&2
  exit 1
fi
if [ ! -f "$VM" ]; then
  echo "test:aufs: the aufs VM ($VM) is missing; the aufs tests did not run" >&2
  exit 1
fi

deno check "${FILES[@]}" || exit 1
exec bash "$VM" --share "$PWD" --timeout 1200 -- \
  deno test --allow-all --no-prompt --no-check "${FILES[@]}" "$@"
