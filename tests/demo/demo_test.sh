#!/usr/bin/env bash
# The demo, smaller: each policy run must pass its own end-to-end checks.
set -euo pipefail
demo="$1"
for policy in spike static zclip; do
  extra=()
  # The static run also shards over TP (replicated tensors counted once).
  [[ "${policy}" == static ]] && extra=(--ranks=4 --tp=2)
  echo "=== policy ${policy}"
  "${demo}" --policy="${policy}" --steps=30 --spike_step=20 --nan_step=12 \
      --layers=2 --hidden=128 --vocab=512 --max_norm=12 --timeout_s=120 "${extra[@]}"
done
