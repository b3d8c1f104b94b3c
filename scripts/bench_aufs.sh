#!/usr/bin/env bash
# `deno task bench:aufs`: bench/aufs_real_bench.ts inside the aufs guest (../shared/aufs-vm), the
# aufs get/put figures next to the raw mount(2)+remount and umount2(2) of the same chain.
# Without qemu or the VM it says so in one line and exits 0 (benchmarks are not tests).
set -uo pipefail
cd "$(dirname "$0")/.."
VM=${STRATA_AUFS_VM:-../shared/aufs-vm/run.sh}
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || [ ! -f "$VM" ]; then
  echo "bench:aufs: qemu-system-x86_64 or the aufs VM ($VM) is missing; no aufs figures" >&2
  exit 0
fi
DENO=$(command -v deno) || { echo "bench:aufs: deno is not on PATH" >&2; exit 1; }
"$DENO" check bench/aufs_real_bench.ts || exit 1
exec bash "$VM" --share "$PWD" --timeout 1200 -- \
  "$DENO" bench --allow-all --no-prompt --no-check bench/aufs_real_bench.ts "$@"
