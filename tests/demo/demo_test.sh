#!/usr/bin/env bash
# The demo, smaller: each policy run must pass its own end-to-end checks.
#   demo_test.sh DEMO            SQLite, policies spike, static (TP 2), zclip
#   demo_test.sh DEMO replicas   PostgreSQL with 3 coordinators, one serving,
#                                killed at random while the ranks train
set -euo pipefail
demo="$1"
small=(--steps=30 --spike_step=20 --nan_step=12 --layers=2 --hidden=128
  --vocab=512 --max_norm=12 --timeout_s=120)
if [[ "${2:-}" == replicas ]]; then
  echo "=== PostgreSQL, 3 coordinators, kills every 150 ms"
  out="$("${demo}" --store=postgres --replicas=3 --kill_every_ms=150 \
    "${small[@]}" --steps=60 2>&1)" || { echo "${out}"; exit 1; }
  echo "${out}"
  kills="$(sed -n 's/^\([0-9]*\) coordinators killed while the ranks trained.*/\1/p' <<<"${out}")"
  if [[ -z "${kills}" || "${kills}" -lt 1 ]]; then
    echo "demo_test: no coordinator was killed while the ranks trained" >&2
    exit 1
  fi
  exit 0
fi
for policy in spike static zclip; do
  extra=()
  # The static run also shards over TP (replicated tensors counted once).
  [[ "${policy}" == static ]] && extra=(--ranks=4 --tp=2)
  echo "=== policy ${policy}"
  "${demo}" --policy="${policy}" "${small[@]}" "${extra[@]}"
done
