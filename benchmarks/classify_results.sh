#!/usr/bin/env bash
# The results behind BENCHMARKS.md "Your own sequences: classify" (issue 15): `rnnkit train
# classify` on two archive problems read from the .ts files inside the aeon 1.6.0 wheel
# (`pip download aeon==1.6.0 --no-deps`: aeon is BSD-3-Clause; aeon is not installed, the wheel
# is only unzipped):
# - GunPoint (UCR archive; Ratanamahatana and Keogh 2005): 50 training and 150 test series of
#   150 steps, 2 classes;
# - JapaneseVowels (UEA archive; Kudo, Toyama and Shimbo 1999): 270 training and 370 test
#   utterances of 7 to 29 steps of 12 LPC cepstrum coefficients, 9 speakers.
# 20% of each class of the training file is held out for validation (stratified); the test
# file is scored once, after training.
#
# Baselines, recomputed below on the same files: 1-NN with Euclidean distance (equal lengths
# only) and 1-NN with full-window DTW (multivariate: dependent DTW, squared Euclidean distance
# between time steps), the archives' reference classifiers (Dau et al. 2018, "The UCR Time
# Series Archive", arXiv:1810.07758: GunPoint errors 0.087 and 0.093; Bagnall et al. 2018,
# "The UEA multivariate time series classification archive", arXiv:1811.00075).
# One thread per run; runs stopped by steps repeat exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/bench-classify
mkdir -p "$out/aeon"
if [ ! -f "$out/JapaneseVowels_TEST.ts" ]; then
    pip download aeon==1.6.0 --no-deps -d "$out/aeon" --quiet
    unzip -o -j -q "$out"/aeon/aeon-1.6.0-*.whl 'aeon/datasets/data/GunPoint/GunPoint_*.ts' \
        'aeon/datasets/data/JapaneseVowels/JapaneseVowels_T*.ts' -d "$out"
fi

run() {  # run PROBLEM NAME OPTIONS...: train on PROBLEM_TRAIN.ts, then score PROBLEM_TEST.ts
    local problem=$1 name=$2
    shift 2
    /usr/bin/time -f "$name: %e s wall" rnnkit train classify --data "$out/${problem}_TRAIN.ts" \
        --test "$out/${problem}_TEST.ts" --steps 1000 --trainer.threads=1 \
        --model.recurrent.hidden_size=64 --run-dir "$out/$name" --overwrite "$@" \
        | grep -v '^step' > "$out/$name.log"
    rnnkit eval "$out/$name" --json > "$out/$name.json"
}

for seed in 0 1 2; do
    run GunPoint gunpoint-gru-mean-seed$seed --model.recurrent.cell=gru --model.pooling=mean \
        --seed $seed
    run JapaneseVowels vowels-gru-mean-seed$seed --model.recurrent.cell=gru \
        --model.pooling=mean --seed $seed
done
run GunPoint gunpoint-lstm-last-seed0 --model.recurrent.cell=lstm --model.pooling=last
run GunPoint gunpoint-lstm-attention-seed0 --model.recurrent.cell=lstm --model.pooling=attention

python - "$out" <<'PY'
import json
import re
import sys
from pathlib import Path

import numba
import numpy as np

from rnnkit.data.files.ts_format import load_ts


@numba.njit
def dtw(a, b):  # full window; the cost of a step is the squared distance of the two vectors
    cost = np.full((len(a) + 1, len(b) + 1), np.inf)
    cost[0, 0] = 0.0
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            step = min(cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1])
            cost[i, j] = ((a[i - 1] - b[j - 1]) ** 2).sum() + step
    return cost[len(a), len(b)]


def euclidean(a, b):
    return ((a - b) ** 2).sum() if a.shape == b.shape else np.nan


out = Path(sys.argv[1])
for problem, prefix in (("GunPoint", "gunpoint"), ("JapaneseVowels", "vowels")):
    train, test = load_ts(out / f"{problem}_TRAIN.ts"), load_ts(out / f"{problem}_TEST.ts")
    print(f"{problem} test set ({len(test)} sequences)")
    for name, distance in (("euclidean", euclidean), ("dtw", dtw)):
        wrong = 0
        for values, label in zip(test.values, test.labels, strict=True):
            distances = [distance(values, other) for other in train.values]
            if np.isnan(distances).any():
                break  # unequal lengths: no Euclidean distance
            wrong += train.labels[int(np.argmin(distances))] != label
        else:
            error = wrong / len(test)
            print(f"  1-NN {name:<33} accuracy {1 - error:.3f} (error {error:.3f})")
    for path in sorted(out.glob(f"{prefix}-*.json")):
        metrics = json.loads(path.read_text())["metrics"]
        log = (out / f"{path.stem}.log").read_text()
        seconds = re.search(r"\(([\d.]+) s of training\)", log).group(1)
        print(
            f"  {path.stem:<38} accuracy {metrics['accuracy']:.3f}, macro-F1 "
            f"{metrics['macro_f1']:.3f}, loss {metrics['loss']:.3f}, {seconds} s of training"
        )
PY
