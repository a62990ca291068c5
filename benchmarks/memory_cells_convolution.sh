#!/usr/bin/env bash
# Issue 14's recall experiments again with the short convolution before each recurrent mixer
# (--model.short_convolution=4, as flash-linear-attention's layers and Zoology's models have):
#   1. MQAR, 8 pairs in 64 tokens (the setting of memory_cells_sweeps.sh) and 32 pairs in
#      128 tokens over 128 symbols (harder: more pairs for the same state), gated_deltanet against deltanet and
#      gla, 3,000 steps;
#   2. passkey (3-digit keys, trained at 64 tokens, tested up to 4x longer), titans (linear
#      memory) against mlstm, selective_ssm and deltanet, 2,000 steps.
# One thread, one run at a time, seed 0; each run's test metrics in $OUT/NAME.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/memory-convolution}
mkdir -p "$OUT"

run() {  # NAME TASK OPTIONS...: train and evaluate once (kept when already evaluated)
  local name=$1 task=$2
  shift 2
  if [[ -s "$OUT/$name.json" ]]; then
    echo "kept $OUT/$name"
    return
  fi
  rnnkit train "$task" --model.short_convolution=4 --trainer.threads=1 --seed 0 "$@" \
    --run-dir "$OUT/$name" --overwrite > "$OUT/$name.log" 2>&1
  rnnkit eval "$OUT/$name" --json > "$OUT/$name.json"
  echo "trained $OUT/$name"
}

for cell in deltanet gated_deltanet gla; do
  run "mqar8-$cell" mqar --model.cell=$cell --steps 3000
done
# Gated DeltaNet's decay is drawn per head at initialization (one head here): two more seeds
for seed in 1 2; do
  run "mqar8-gated_deltanet-seed$seed" mqar --model.cell=gated_deltanet --steps 3000 --seed $seed
done
for cell in titans mlstm selective_ssm deltanet; do
  extra=()
  if [[ $cell == titans ]]; then extra=(--model.recurrent.options.memory_depth=1); fi
  run "passkey-$cell" passkey --model.cell=$cell --steps 2000 --data.key_digits=3 \
    --data.test_length_factor=4 "${extra[@]}"
done
for cell in deltanet gated_deltanet gla; do
  run "mqar32-$cell" mqar --model.cell=$cell --steps 3000 --data.num_pairs=32 \
    --data.sequence_length=128 --data.vocabulary_size=128
done

python - "$OUT" <<'PY'
import json
import pathlib
import sys

for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    metrics = json.loads(path.read_text())["metrics"]
    shown = {key: value for key, value in metrics.items() if "accuracy" in key}
    print(path.stem, json.dumps(shown))
PY
