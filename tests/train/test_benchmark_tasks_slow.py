"""Slow: a small model learns the easy setting of each benchmark task through the command line
(``python -m pytest -m slow tests/train/test_benchmark_tasks_slow.py``; a few minutes).

Each case is a setting the literature calls easy for that mixer, and a bar that a model which
had learnt nothing could not pass (chance levels in the comments)."""

from __future__ import annotations

import json

import pytest

from rnnkit import cli

# task: (mixer, steps, settings, metric, least value)
EASY_SETTINGS = {
    # an LSTM tracks parity and extrapolates to 4x the training length (chance: 0.5)
    "state-tracking": ("lstm", 600, ["--data.group=parity"], "longest_length_at_90", 64),
    # attention recalls 4 pairs in 32 tokens (chance: 1/31)
    "mqar": (
        "attention",
        600,
        ["--data.sequence_length=32", "--data.num_pairs=4"],
        "accuracy",
        0.9,
    ),
    # an LSTM beats the in-context unigram on the automata's next symbols
    "icll": ("lstm", 600, ["--data.sequence_length=64"], "beats_ngram_1", 1),
    # an LSTM reads a 3-digit key back at its training length (chance: 1e-3)
    "passkey": (
        "lstm",
        1000,
        ["--data.train_length=32", "--data.test_length_factor=2", "--data.key_digits=3"],
        "accuracy_at_length_32",
        0.9,
    ),
    # an LSTM copies 4 symbols after 4 blanks (chance: 1/8 per symbol)
    "copy": ("lstm", 600, ["--data.string_length=4", "--data.delay=4"], "accuracy", 0.9),
    # an LSTM picks 4 symbols out of 32 tokens in order (chance: 1/8 per symbol)
    "selective-copy": (
        "lstm",
        600,
        ["--data.sequence_length=32", "--data.string_length=4"],
        "accuracy",
        0.9,
    ),
    # an LSTM adds two marked numbers of 50 (the constant 1 scores mse 1/6)
    "adding": ("lstm", 600, ["--data.sequence_length=50"], "mse_below_0.01", 1),
    # an LSTM reads 8x8 digits row by row (chance: 0.1)
    "sequential-digits": ("lstm", 600, [], "accuracy", 0.8),
}


def derived(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics with the two bars that compare rather than threshold."""
    return {
        **metrics,
        "beats_ngram_1": float(metrics["accuracy"] > metrics.get("ngram_1_accuracy", 1.0)),
        "mse_below_0.01": float(metrics.get("mse", 1.0) < 0.01),
    }


@pytest.mark.slow
@pytest.mark.parametrize("task", list(EASY_SETTINGS))
def test_a_small_model_learns_the_easy_setting(task, tmp_path, capsys):
    mixer, steps, settings, metric, least = EASY_SETTINGS[task]
    run = tmp_path / task
    command = ["train", task, "--steps", str(steps), "--run-dir", str(run)]
    command += [f"--model.cell={mixer}", "--trainer.threads=1", *settings]
    assert cli.main(command) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--json"]) == 0
    metrics = derived(json.loads(capsys.readouterr().out)["metrics"])
    shown = {key: value for key, value in metrics.items() if "_at_length_" not in key}
    assert metrics[metric] >= least, (
        f"{task} {mixer}: {metric} {metrics[metric]} < {least}; {shown}"
    )
