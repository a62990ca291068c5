#!/usr/bin/env bash
# Recurrence in depth (issue 16), first results: parity (state tracking, trained at length 16,
# tested up to 64) with attention blocks, seed 0, 2,000 steps, one thread: a 1-block
# transformer, a 4-block transformer (4x the parameters), and a Universal Transformer of one
# shared block applied up to 4 or 8 times with ACT (the 1-block parameter count plus the
# halting unit).
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/depth
mkdir -p "$out"
for spec in "fixed1:--model.num_blocks=1" "fixed4:--model.num_blocks=4" \
    "ut4:--model.num_blocks=1 --model.depth.recursion=universal --model.depth.max_steps=4" \
    "ut8:--model.num_blocks=1 --model.depth.recursion=universal --model.depth.max_steps=8"; do
  name=${spec%%:*}
  read -r -a args <<< "${spec#*:}"
  rnnkit train state-tracking --model.cell=attention --data.group=parity --steps 2000 \
    --trainer.threads=1 --seed 0 "${args[@]}" --run-dir "$out/parity-$name" --overwrite \
    > "$out/parity-$name.log"
  rnnkit eval "$out/parity-$name" --json > "$out/parity-$name.json"
done
python - "$out" <<'PY'
import json
import sys

for name in ("fixed1", "fixed4", "ut4", "ut8"):
    metrics = json.load(open(f"{sys.argv[1]}/parity-{name}.json"))["metrics"]
    print(name, {key: metrics[key] for key in ("parameter_count", "accuracy",
          "accuracy_in_distribution", "longest_length_at_90") + tuple(
          key for key in metrics if key.startswith("ponder"))})
PY
# the copy task with the same three shapes (1 block, 4 blocks, UT up to 4 steps)
for spec in "fixed1:--model.num_blocks=1" "fixed4:--model.num_blocks=4" \
    "ut4:--model.num_blocks=1 --model.depth.recursion=universal --model.depth.max_steps=4"; do
  name=${spec%%:*}
  read -r -a args <<< "${spec#*:}"
  rnnkit train copy --model.cell=attention --steps 2000 --trainer.threads=1 --seed 0 \
    "${args[@]}" --run-dir "$out/copy-$name" --overwrite > "$out/copy-$name.log"
  rnnkit eval "$out/copy-$name" --json > "$out/copy-$name.json"
done
