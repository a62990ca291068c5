"""``rnnkit bench layers`` on a tiny size: every row runs and prints a ratio to torch.nn."""

from __future__ import annotations

import argparse

from rnnkit.bench import layers


def test_bench_layers_prints_every_row_with_ratios(capsys):
    parser = argparse.ArgumentParser()
    layers.add_arguments(parser)
    arguments = parser.parse_args(["--sizes", "2x5x3x4", "--repeats", "1"])
    assert layers.run(arguments) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith(("lstm ", "gru "))]
    names = [" ".join(line.split()[2:-4]) for line in rows]
    assert names == [
        "torch.nn",
        "rnnkit native",
        "rnnkit sequential",
        "rnnkit fused",
        "layer-norm sequential",
        "layer-norm fused",
        "peephole sequential",
        "peephole fused",
        "zoneout+DropConnect fused",
        "slstm sequential",
        "slstm fused",
        "torch.nn",
        "rnnkit native",
        "rnnkit sequential",
        "rnnkit fused",
    ]
    for line in rows:
        forward_ratio, training_ratio = float(line.split()[-3]), float(line.split()[-1])
        assert forward_ratio > 0 and training_ratio > 0
    assert all(float(line.split()[-3]) == 1.0 for line in rows if "torch.nn" in line)
