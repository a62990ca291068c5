#!/usr/bin/env bash
# int8 dynamic quantization of custom cells (issue 17): briefly trained char-LMs whose cells have
# no torch.nn quantized layer, float against int8 (`rnnkit quantize`, rnnkit/deploy): the
# change in validation loss, weight size and CPU evaluation speed, one thread.
# Tiny Shakespeare, 2 layers of HIDDEN units, STEPS training steps, for
#   lstm-layernorm  a layer-norm LSTM (auto strategy: fused; W_hh dequantized once per call),
#   gla             gated linear attention (auto strategy: scan; every matrix product int8).
# `rnnkit quantize` prints sizes, losses and the whole validation evaluation's time (windows of
# 256 characters, batched streams); the snippet below times it again, one thread, best of
# REPEATS rounds alternating float and int8, and generation one token at a time for one
# stream (the step path: every product int8). REUSE=1 keeps runs already trained.
# Usage: [REUSE=1] benchmarks/quantize_cells_results.sh [STEPS] [HIDDEN] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
hidden=${2:-256}
repeats=${3:-3}
out=runs/bench-quantize-cells
mkdir -p "$out"
declare -A options=(
    [lstm-layernorm]="--model.recurrent.cell=lstm --model.recurrent.options.layer_norm=true"
    [gla]="--model.recurrent.cell=gla --model.recurrent.options.num_heads=4"
)
for name in lstm-layernorm gla; do
    run=$out/charlm-$name$hidden
    if [[ ${REUSE:-0} == 1 && -e $run/config.json ]]; then
        echo "reusing $run (REUSE=1)"
    else
        # shellcheck disable=SC2086  # the options are several words
        rnnkit train charlm --steps "$steps" --seed 0 --run-dir "$run" --overwrite \
            ${options[$name]} --model.recurrent.hidden_size="$hidden" \
            --model.recurrent.num_layers=2 --trainer.threads=1 --sample.length=0 \
            > "$out/train-$name.log"
    fi
    echo "== $name: $(rnnkit quantize "$run" --output "$out/$name.int8.pt")" \
        | tee "$out/quantize-$name.txt"
    python - "$run" "$out/$name.int8.pt" "$repeats" <<'PY' | tee -a "$out/quantize-$name.txt"
import sys, time

import torch

from rnnkit.data import load_corpus
from rnnkit.deploy.quantize import format_report, quantize_report
from rnnkit.train.tasks.charlm import load_trained
from rnnkit.train.tbptt import evaluate_tokens
from rnnkit.train.threads import set_threads

config, model, vocabulary, _ = load_trained(sys.argv[1])
quantized = torch.load(sys.argv[2], weights_only=False)
set_threads(1)
corpus = load_corpus(config.data, vocabulary)
candidates = {"float": model, "int8": quantized}
evaluation = {name: float("inf") for name in candidates}
generation = {name: float("inf") for name in candidates}
losses = {}
tokens = torch.zeros(1, dtype=torch.int64)
with torch.no_grad():
    for _ in range(int(sys.argv[3])):  # rounds alternate float and int8: a load burst hits both
        for name, candidate in candidates.items():
            start = time.perf_counter()
            metrics = evaluate_tokens(
                candidate, corpus.validation, config.bptt, corpus.validation_resets
            )
            evaluation[name] = min(evaluation[name], time.perf_counter() - start)
            losses[name] = metrics["loss"]
            _, state = candidate.step(tokens)
            start = time.perf_counter()
            for _ in range(200):
                _, state = candidate.step(tokens, state)
            generation[name] = min(generation[name], (time.perf_counter() - start) / 200)
for name in candidates:
    print(
        f"{name}: validation loss {losses[name]:.4f} nats/char, evaluation "
        f"{evaluation[name]:.2f} s, generation {generation[name] * 1e6:.0f} us/token "
        f"(best of {sys.argv[3]} alternating rounds, 1 thread)"
    )
print(format_report([row for row in quantize_report(quantized) if "cells.0" in row.name]))
PY
done
