#!/usr/bin/env bash
# Recurrence in depth (issue 16) on the seq2seq add task (operands of 1-5 digits, tested on 1-5
# and on 6-7 digits): attention-only encoder-decoders of width 64, seed 0, 1,200 steps of 64
# examples, AdamW at 2e-3, one thread: a 1-layer transformer (one encoder and one decoder
# block), a 4-layer one (4x the parameters), and a Universal Transformer of one shared encoder
# and one shared decoder block applied up to 4 times with ACT (the 1-layer count plus the two
# halting units).
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/depth
mkdir -p "$out"
common=(--steps 1200 --trainer.time_budget_seconds=900 --trainer.threads=1 --seed 0
  --optimizer.learning_rate=2e-3 --trainer.eval_interval_seconds=60 --decoding.examples=0)
for spec in "fixed1:--model.kind=transformer --model.transformer.num_layers=1" \
    "fixed4:--model.kind=transformer --model.transformer.num_layers=4" \
    "ut4:--model.kind=universal --model.depth.max_steps=4"; do
  name=${spec%%:*}
  read -r -a args <<< "${spec#*:}"
  rnnkit train add "${common[@]}" "${args[@]}" --run-dir "$out/add-$name" --overwrite \
    > "$out/add-$name.log"
  rnnkit eval "$out/add-$name" --json > "$out/add-$name.json"
done
python - "$out" <<'PY'
import json
import re
import sys

for name in ("fixed1", "fixed4", "ut4"):
    metrics = json.load(open(f"{sys.argv[1]}/add-{name}.json"))["metrics"]
    log = open(f"{sys.argv[1]}/add-{name}.log").read()
    seconds = re.findall(r"\((\d+) s of training\)", log)
    parameters = re.findall(r"model: ([\d,]+) parameters", log)
    print(name, parameters[-1:], {key: metrics[key] for key in ("exact_accuracy",
          "beam_exact_accuracy", "longer_exact_accuracy", "longer_beam_exact_accuracy")
          + tuple(key for key in metrics if key.startswith("ponder_steps")
                  or key.startswith("longer_ponder_steps"))}, "train seconds", seconds[-1:])
PY
