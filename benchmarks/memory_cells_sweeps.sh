#!/usr/bin/env bash
# The recall and image sweeps behind BENCHMARKS.md "Memory cells" (issue 14), on 2 CPU cores;
# the state-tracking sweeps are benchmarks/state_tracking_sweeps.sh. Runs are kept in
# runs/bench-tasks/* (resumed after an interruption); tables and plots are copied into
# benchmarks/results/tasks/<sweep>/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/bench-tasks
results=benchmarks/results/tasks

sweep() {  # sweep NAME OPTIONS...: rnnkit bench tasks into $out/NAME, tables to $results/NAME
  local name=$1
  shift
  rnnkit bench tasks --out "$out/$name" --jobs 2 "$@"
  mkdir -p "$results/$name"
  cp "$out/$name"/results.{md,csv} "$out/$name"/*.png "$results/$name/"
  if [ -f "$out/$name/lengths.csv" ]; then cp "$out/$name/lengths.csv" "$results/$name/"; fi
}

# 1. MQAR: Gated DeltaNet against DeltaNet and GLA (2,000 steps, width 64, the default setting)
sweep mqar-gated --tasks mqar --mixers gated_deltanet deltanet gla --steps 2000

# 2. passkey beyond the training length: Titans (a linear memory, memory_depth 1) against mLSTM,
#    the selective SSM and DeltaNet; 3-digit keys, contexts 64 (training) to 256
sweep passkey-titans --tasks passkey --steps 600 \
  --set passkey:data.key_digits=3 --set passkey:data.test_length_factor=4 \
  --mixers titans@memory_depth=1 mlstm selective_ssm deltanet

# 3. pLSTM over the 8x8 digit images against an LSTM reading them row by row, 3 minutes each
for cell in plstm lstm; do
  run=$out/image-classify/$cell
  if [ ! -f "$run/result.json" ]; then
    rnnkit train image-classify --model.cell=$cell --time-budget 3m --steps 100000 \
      --trainer.threads=1 --run-dir "$run" --overwrite
    rnnkit eval "$run" --json > "$run/result.json"
  fi
done
mkdir -p "$results/image-classify"
for cell in plstm lstm; do cp "$out/image-classify/$cell/result.json" "$results/image-classify/$cell.json"; done
# the LSTM at the pLSTM's number of steps (equal steps rather than equal time)
plstm_steps=$(python -c "import json; print(json.load(open('$out/image-classify/plstm/result.json'))['step'])")
run=$out/image-classify/lstm-$plstm_steps
rnnkit train image-classify --model.cell=lstm --steps "$plstm_steps" --trainer.threads=1 \
  --run-dir "$run" --overwrite
rnnkit eval "$run" --json > "$results/image-classify/lstm-$plstm_steps-steps.json"

# 4. MQAR again at a third of the learning rate (1e-3, as attention needed at width 128)
sweep mqar-gated-lr --tasks mqar --mixers gated_deltanet deltanet gla --steps 2000 \
  --set mqar:optimizer.learning_rate=1e-3
