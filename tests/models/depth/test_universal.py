"""The Universal Transformer in the sequence model: against a readable loop over depth steps and
positions (halting, freezing, weighted mean), token-by-token decoding, padding, the ponder loss;
and through the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor

from rnnkit import cli
from rnnkit.models.depth import DepthConfig
from rnnkit.models.depth.universal import sinusoid
from rnnkit.models.sequence_model import SequenceModel, SequenceModelConfig, build_sequence_model

MIXERS = ["attention", "gru"]
BIAS = {"attention": 0.0, "gru": -0.5}
"""A halting bias per mixer at which positions of the test inputs halt after different steps."""


def universal_model(mixer: str, act: bool = True, num_blocks: int = 1):
    torch.manual_seed(0)
    depth = DepthConfig(recursion="universal", max_steps=4, act=act, halting_bias=BIAS[mixer])
    config = SequenceModelConfig(
        model_size=8, num_blocks=num_blocks, num_heads=2, mixer=mixer, depth=depth
    )
    config.recurrent.hidden_size = 8
    return build_sequence_model(config, vocabulary_size=6).double()


def reference_universal(model: SequenceModel, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's loop: every depth step applies the blocks to ``H + P^n``; per position (one at
    a time) the halting sum, the weights p^n, the frozen state once halted. Returns the logits,
    N and N + R per position."""
    depth = model.depth
    assert depth is not None
    act, max_steps = depth.act, depth.max_steps
    hidden = model.embedding(tokens)  # (B, T, D)
    batch, steps, size = hidden.shape
    running = [[True] * steps for _ in range(batch)]
    totals = [[hidden.new_zeros(()) for _ in range(steps)] for _ in range(batch)]
    means = [[hidden.new_zeros(size) for _ in range(steps)] for _ in range(batch)]
    counts = [[0] * steps for _ in range(batch)]
    costs = [[hidden.new_zeros(()) for _ in range(steps)] for _ in range(batch)]
    for n in range(1, max_steps + 1):
        signal = torch.stack([position_and_step(i, n, size) for i in range(steps)])  # (T, D)
        new = hidden + signal
        for block in model.block_list():
            new, _ = block(new, None, None)
        rows = []
        for b in range(batch):
            row = []
            for i in range(steps):
                if not running[b][i]:
                    row.append(hidden[b, i])  # halted: copied
                    continue
                row.append(new[b, i])
                if act is None:
                    continue
                counts[b][i] += 1
                h = act.probability(depth.halting_norm(new[b, i]))
                halts = float((totals[b][i] + h).detach()) >= 1 - act.epsilon or n == max_steps
                weight = 1 - totals[b][i] if halts else h
                means[b][i] = means[b][i] + weight * new[b, i]
                if halts:
                    running[b][i] = False
                    costs[b][i] = counts[b][i] + weight
                else:
                    totals[b][i] = totals[b][i] + h
            rows.append(torch.stack(row))
        hidden = torch.stack(rows)
    if act is not None:
        hidden = torch.stack([torch.stack(row) for row in means])
    counted = torch.tensor(counts, dtype=hidden.dtype)
    cost = torch.stack([torch.stack(row) for row in costs])
    return model.head(model.final_norm(hidden)), counted, cost


def position_and_step(position: int, step: int, size: int) -> Tensor:
    """The paper's P^t_i: sin/cos of position i plus sin/cos of step t, feature by feature."""
    values = []
    for feature in range(size):
        rate = 10000 ** ((feature - feature % 2) / size)
        trig = math.sin if feature % 2 == 0 else math.cos
        values.append(trig(position / rate) + trig(step / rate))
    return torch.tensor(values, dtype=torch.float64)


def test_the_timing_signal_is_the_papers_formula():
    got = sinusoid(torch.tensor([0.0, 3.0, 11.0]), 6) + sinusoid(torch.tensor(2.0), 6)
    want = torch.stack([position_and_step(i, 2, 6) for i in (0, 3, 11)])
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("act", [True, False], ids=["act", "fixed"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_forward_matches_the_reference_loop_with_gradients(mixer, act):
    model = universal_model(mixer, act=act)
    tokens = torch.randint(0, 6, (3, 7), generator=torch.Generator().manual_seed(1))
    logits, _ = model(tokens)
    expected, steps, cost = reference_universal(model, tokens)
    torch.testing.assert_close(logits, expected, msg=f"{mixer} logits")
    depth = model.depth
    assert depth is not None
    if act:
        assert depth.latest_steps is not None and depth.latest_ponder_cost is not None
        torch.testing.assert_close(depth.latest_steps, steps, msg="ponder steps N")
        torch.testing.assert_close(depth.latest_ponder_cost, cost, msg="ponder cost N + R")
        assert float(steps.min()) >= 1 and float(steps.max()) <= 4
        assert float(steps.max()) > float(steps.min())  # positions ponder differently here
        auxiliary = model.auxiliary_loss()
        assert auxiliary is not None
        torch.testing.assert_close(auxiliary, depth.act.ponder_weight * cost.mean())
        total = logits.sum() + auxiliary
        reference_total = expected.sum() + depth.act.ponder_weight * cost.mean()
    else:
        assert model.auxiliary_loss() is None
        assert model.depth_statistics()["ponder_steps"] == 4.0
        total, reference_total = logits.sum(), expected.sum()
    parameters = list(model.parameters())
    got = torch.autograd.grad(total, parameters, retain_graph=True)
    want = torch.autograd.grad(reference_total, parameters)
    names = [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(a, b, msg=f"{mixer} gradient of {name}")
    if act:
        assert float(got[names.index("depth.act.halting.weight")].abs().sum()) > 0


@pytest.mark.parametrize("act", [True, False], ids=["act", "fixed"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_step_by_step_decoding_equals_forward_and_continues_it(mixer, act):
    model = universal_model(mixer, act=act, num_blocks=2)
    tokens = torch.randint(0, 6, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(tokens)
        state, stepped = None, []
        for position in range(6):
            output, state = model.step(tokens[:, position], state)
            stepped.append(output)
        torch.testing.assert_close(torch.stack(stepped, 1), logits, msg="step vs forward")
        _, prefix_state = model(tokens[:, :4])
        continued, _ = model(tokens[:, 4:], prefix_state)
        torch.testing.assert_close(continued, logits[:, 4:], msg="forward from a state")


@pytest.mark.parametrize("mixer", MIXERS)
def test_padding_changes_neither_real_outputs_nor_the_ponder_statistics(mixer):
    model = universal_model(mixer)
    tokens = torch.randint(0, 6, (3, 6), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([6, 3, 5])
    with torch.no_grad():
        model.reset_depth_statistics()
        padded, _ = model(tokens, lengths=lengths)
        padded_statistics = model.depth_statistics()
        model.reset_depth_statistics()
        costs = []
        for row, length in enumerate(lengths.tolist()):
            alone, _ = model(tokens[row : row + 1, :length])
            torch.testing.assert_close(padded[row, :length], alone[0], msg=f"row {row}")
            depth = model.depth
            assert depth is not None and depth.latest_ponder_cost is not None
            costs.append(depth.latest_ponder_cost[0])
        alone_statistics = model.depth_statistics()
    assert padded_statistics == pytest.approx(alone_statistics)
    model(tokens, lengths=lengths)
    auxiliary = model.auxiliary_loss()
    assert auxiliary is not None
    torch.testing.assert_close(auxiliary, 0.01 * torch.cat(costs).mean())


def test_a_wrong_state_is_an_error():
    model = universal_model("attention")
    tokens = torch.zeros(1, 3, dtype=torch.long)
    _, state = model(tokens)
    with pytest.raises(ValueError, match="expected 4 depth steps"):
        model(tokens, type(state)(state.positions, state.levels[:2]))


TINY = [
    "--model.model_size=16",
    "--model.recurrent.hidden_size=16",
    "--model.num_blocks=1",
    "--model.num_heads=2",
    "--trainer.batch_size=4",
    "--evaluation.sequences=8",
    "--evaluation.batch_size=4",
    "--data.delay=4",
    "--data.string_length=4",
]


@pytest.mark.parametrize(
    "options",
    [
        ["--model.cell=attention", "--model.depth.ponder_weight=0.05"],
        ["--model.cell=gru", "--model.depth.act=false"],
    ],
    ids=["attention-act", "gru-fixed"],
)
def test_copy_trains_and_evaluates_through_the_command_line(options, tmp_path, capsys):
    threads = torch.get_num_threads()
    run = tmp_path / "run"
    arguments = ["train", "copy", "--trainer.max_steps=3", "--run-dir", str(run), *TINY]
    arguments += ["--model.depth.recursion=universal", "--model.depth.max_steps=3", *options]
    try:
        assert cli.main([*arguments]) == 0
        output = capsys.readouterr().out
        assert "final validation after 3 steps" in output and "ponder_steps" in output
        assert "depth universal, up to 3 steps" in output
        config = json.loads((run / "config.json").read_text())
        assert config["model"]["depth"]["recursion"] == "universal"
        assert config["model"]["depth"]["act"] == ("--model.depth.act=false" not in options)
        assert cli.main(["eval", str(run), "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)["metrics"]
    finally:
        torch.set_num_threads(threads)
    if "--model.depth.act=false" in options:
        assert metrics["ponder_steps"] == 3.0
    else:
        assert 1.0 <= metrics["ponder_steps"] <= 3.0
        assert metrics["ponder_cost"] > metrics["ponder_steps"]  # R > 0 adds to N


def test_an_unknown_recursion_names_the_option(tmp_path, capsys):
    arguments = ["train", "copy", "--steps", "1", "--run-dir", str(tmp_path / "run")]
    assert cli.main([*arguments, "--model.depth.recursion=universl"]) == 1
    error = capsys.readouterr().err
    assert "recursion" in error and "'universl'" in error and "universal" in error
