#!/usr/bin/env bash
# int8 dynamic quantization of a briefly trained char-LM (issue 17): the change in validation
# loss, weight size and CPU speed, float against int8 (`rnnkit quantize`, rnnkit/deploy).
# Tiny Shakespeare, a 2-layer LSTM of HIDDEN units, STEPS training steps, one thread.
# Speed: `rnnkit quantize` times the whole validation evaluation (windows of 256 characters,
# batched streams); the snippet below times generation, one token at a time for one stream.
# Usage: benchmarks/quantize_results.sh [STEPS] [HIDDEN]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
hidden=${2:-256}
out=runs/bench-quantize
run=$out/charlm-lstm$hidden
mkdir -p "$out"
rnnkit train charlm --steps "$steps" --seed 0 --run-dir "$run" --overwrite \
    --model.recurrent.hidden_size="$hidden" --model.recurrent.num_layers=2 \
    --trainer.threads=1 --sample.length=0 > "$out/train.log"
rnnkit quantize "$run" --output "$out/charlm.int8.pt" | tee "$out/quantize.txt"
python - "$run" "$out/charlm.int8.pt" <<'PY' | tee -a "$out/quantize.txt"
import sys, time

import torch

from rnnkit.train.tasks.charlm import load_trained

torch.set_num_threads(1)
_, model, _, _ = load_trained(sys.argv[1])
quantized = torch.load(sys.argv[2], weights_only=False)
tokens = torch.zeros(1, dtype=torch.int64)
for name, candidate in (("float", model), ("int8", quantized)):
    with torch.no_grad():
        _, state = candidate.step(tokens)
        start = time.perf_counter()
        for _ in range(500):
            _, state = candidate.step(tokens, state)
    print(f"generation {name}: {(time.perf_counter() - start) / 500 * 1e6:.0f} us per token")
PY
