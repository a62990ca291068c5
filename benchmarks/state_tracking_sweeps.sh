#!/usr/bin/env bash
# The state-tracking sweeps behind BENCHMARKS.md "State tracking: negative eigenvalues and
# DeltaProduct" (issue 14), on 2 CPU cores: two runs at once, one thread each. Runs are kept in
# runs/bench-tasks/state-tracking-<group>/runs; run this again after an interruption and only the
# unfinished runs train. Each sweep's tables and plots are copied into
# benchmarks/results/tasks/state-tracking-<group>/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/bench-tasks
results=benchmarks/results/tasks
negative=allow_negative_eigenvalues=true
mixers=(
  lstm
  mingru "mingru@$negative"
  selective_ssm "selective_ssm@$negative"
  deltanet "deltanet@$negative"
  gated_deltanet "gated_deltanet@$negative"
  "deltaproduct@num_householder=2" "deltaproduct@num_householder=2,$negative"
  "deltaproduct@num_householder=3,$negative"
)
if [ -n "${MIXERS:-}" ]; then read -r -a mixers <<< "$MIXERS"; fi  # a subset, for a first pass
read -r -a seeds <<< "${SEEDS:-0 1 2}"  # SEEDS=0 for a first pass over every mixer

for group in parity s3 s5; do
  name=state-tracking-$group
  rnnkit bench tasks --out "$out/$name" --jobs 2 --tasks state-tracking \
    --set "state-tracking:data.group=$group" --steps 2000 --seeds "${seeds[@]}" --mixers "${mixers[@]}"
  mkdir -p "$results/$name"
  cp "$out/$name"/results.{md,csv} "$out/$name"/lengths.csv "$out/$name"/*.png "$results/$name/"
done
