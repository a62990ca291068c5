#!/usr/bin/env bash
# The sparsity table of issue 17 (Narang et al. 2017, https://arxiv.org/abs/1704.05119):
#   1. char-LM validation loss against the sparsity of the LSTM's matrices (0, 50, 80, 90, 95%,
#      gradual magnitude pruning, the paper's schedule), with a 90% block-pruned (4x4) run and a
#      50% unit-pruned run;
#   2. each sparse run against a dense LSTM with the same number of nonzero weights in its
#      recurrent matrices (hidden size H' with 4 H' (E + H') = (1 - s) 4 H (E + H));
#   3. CPU inference speed of the trained 90% model's LSTM layer, frame by frame (batch 1) and
#      batch 32: the sparse matrices stored dense, as torch sparse CSR, the dense model of the
#      same nonzero count, and the unit-pruned model with its layer shrunk to the kept units.
# One thread, one run at a time. Every number is measured here; a format that is slower is
# reported as slower.
#
# Usage: benchmarks/sparsity_results.sh            (the full table: 2000 steps, hidden 512)
#        STEPS=150 HIDDEN=128 benchmarks/sparsity_results.sh   (a short version)
set -euo pipefail

STEPS=${STEPS:-2000}
HIDDEN=${HIDDEN:-512}
EMBEDDING=${EMBEDDING:-64}
OUT=${OUT:-runs/bench-sparsity}
mkdir -p "$OUT"

common=(
    --trainer.max_steps="$STEPS" --trainer.time_budget_seconds=none --trainer.threads=1
    --trainer.eval_interval=0 --trainer.eval_interval_seconds=0 --seed 0
    --model.embedding_size="$EMBEDDING" --sample.length=0
)
schedule=(
    --prune.start_step=$((STEPS / 10)) --prune.end_step=$((STEPS / 2))
    --prune.frequency=$(((STEPS / 100) > 0 ? STEPS / 100 : 1))
)

train() {  # NAME HIDDEN [OPTIONS...]: one run into $OUT/NAME unless it is already finished
    local name=$1 hidden=$2
    shift 2
    if [[ -f "$OUT/$name/metrics.jsonl" ]] && grep -q '"kind": "validation"' "$OUT/$name/metrics.jsonl"; then
        echo "kept $OUT/$name"
        return
    fi
    rnnkit train charlm --run-dir "$OUT/$name" --overwrite "${common[@]}" \
        --model.recurrent.hidden_size="$hidden" "$@" >"$OUT/$name.log" 2>&1
    echo "trained $OUT/$name"
}

dense_hidden() {  # SPARSITY -> H' with the same nonzero count in the recurrent matrices
    python -c "import math; s, h, e = $1, $HIDDEN, $EMBEDDING
print(round((-e + math.sqrt(e * e + 4 * (1 - s) * h * (e + h))) / 2))"
}

train "sparse-0" "$HIDDEN"
for sparsity in 0.5 0.8 0.9 0.95; do
    train "sparse-$sparsity" "$HIDDEN" --prune.final_sparsity="$sparsity" "${schedule[@]}"
    train "dense-like-$sparsity" "$(dense_hidden "$sparsity")"
done
train "block-0.9" "$HIDDEN" --prune.final_sparsity=0.9 --prune.granularity=block "${schedule[@]}"
train "unit-0.5" "$HIDDEN" --prune.final_sparsity=0.5 --prune.granularity=unit "${schedule[@]}"

OUT="$OUT" python - <<'EOF'
"""The table: losses from metrics.jsonl, nonzero counts from the checkpoints, layer speed."""
import json
import os
import statistics
import time
from pathlib import Path

import warnings

import torch
from safetensors.torch import load_file

from rnnkit.train.metrics import bits_per_character

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
out = Path(os.environ["OUT"])


def weights(run):
    document = json.loads((out / run / "checkpoint.json").read_text())
    return load_file(str(out / run / document["tensors"] / "model.safetensors"))


def final_loss(run):
    records = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "validation"][-1]["loss"]


runs = ["sparse-0"] + [f"{kind}-{s}" for s in (0.5, 0.8, 0.9, 0.95) for kind in ("sparse", "dense-like")]
runs += ["block-0.9", "unit-0.5"]
print("| run | hidden | sparsity of the LSTM matrices | nonzero (LSTM matrices) | nonzero (all) "
      "| validation loss (nats/char) | bpc |")
print("|---|---|---|---|---|---|---|")
for run in runs:
    tensors = weights(run)
    matrices = [t for k, t in tensors.items() if ".cells." in k and t.dim() == 2]
    total = sum(t.numel() for t in matrices)
    nonzero = sum(int((t != 0).sum()) for t in matrices)
    everything = sum(int((t != 0).sum()) for t in tensors.values())
    hidden = tensors["recurrent.cells.0.weight_hh"].shape[1]
    loss = final_loss(run)
    print(f"| {run} | {hidden} | {1 - nonzero / total:.3f} | {nonzero} | {everything} "
          f"| {loss:.4f} | {bits_per_character(loss):.4f} |")


def lstm(w_ih, w_hh, bias, inputs, hidden):
    """The LSTM layer frame by frame (gates i, f, g, o); ``inputs`` (T, E, B) -> h (H, B)."""
    h = torch.zeros(hidden, inputs.shape[2])
    c = torch.zeros_like(h)
    for x in inputs:
        i, f, g, o = (w_ih @ x + w_hh @ h + bias).chunk(4, 0)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h


def layer(run, keep=None):
    t = weights(run)
    w_ih, w_hh = t["recurrent.cells.0.weight_ih"], t["recurrent.cells.0.weight_hh"]
    bias = (t["recurrent.cells.0.bias_ih"] + t["recurrent.cells.0.bias_hh"])[:, None]
    if keep is not None:  # unit pruning: only the kept units' rows (all gates) and columns
        size = w_hh.shape[1]
        rows = torch.cat([g * size + keep for g in range(4)])
        w_ih, w_hh, bias = w_ih[rows], w_hh[rows][:, keep], bias[rows]
    return w_ih, w_hh, bias


def seconds_per_step(variants, batch, steps=256, repeats=11):
    """Median seconds per step of each variant, the variants timed in turn in every repeat (a
    change in the machine's load then falls on all of them alike)."""
    inputs = torch.randn(steps, variants[0][1][0].shape[1], batch)
    times = {name: [] for name, _ in variants}
    for repeat in range(repeats + 1):
        for name, (w_ih, w_hh, bias) in variants:
            started = time.perf_counter()
            lstm(w_ih, w_hh, bias, inputs, w_hh.shape[1])
            if repeat:  # the first round warms up
                times[name].append((time.perf_counter() - started) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


w_ih, w_hh, bias = layer("sparse-0.9")
csr = (w_ih.to_sparse_csr(), w_hh.to_sparse_csr(), bias)
sequence = torch.randn(16, w_ih.shape[1], 3)
assert torch.allclose(lstm(w_ih, w_hh, bias, sequence, w_hh.shape[1]),
                      lstm(*csr, sequence, w_hh.shape[1]), atol=1e-5)
unit = weights("unit-0.5")["recurrent.cells.0.weight_ih"]
kept = unit.reshape(4, -1, unit.shape[1]).abs().sum((0, 2)).nonzero().squeeze(1)
full, shrunk = layer("unit-0.5"), layer("unit-0.5", kept)
assert torch.allclose(lstm(*full, sequence, full[1].shape[1])[kept],
                      lstm(*shrunk, sequence, len(kept)), atol=1e-5)
variants = [
    ("90% sparse, stored dense", (w_ih, w_hh, bias)),
    ("90% sparse, torch sparse CSR", csr),
    ("dense, same nonzero count", layer("dense-like-0.9")),
    (f"unit-pruned 50%, shrunk to {len(kept)} units", shrunk),
    ("unit-pruned 50%, stored dense", full),
]
print("\n| LSTM layer, 1 thread | batch 1: us/step | speed vs first row | batch 32: us/step "
      "| speed vs first row |")
print("|---|---|---|---|---|")
timings = {batch: seconds_per_step(variants, batch) for batch in (1, 32)}
for name, _ in variants:
    cells = []
    for batch in (1, 32):
        seconds, dense = timings[batch][name], timings[batch][variants[0][0]]
        cells += [f"{seconds * 1e6:.0f}", f"{dense / seconds:.2f}x"]
    print(f"| {name} | " + " | ".join(cells) + " |")
EOF
