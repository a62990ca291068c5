"""The pointer network: teacher forcing against stepping, masks, greedy decoding, errors."""

from __future__ import annotations

import pytest
import torch

from rnnkit.models.pointer import (
    END_POSITION,
    PADDING,
    PointerNetwork,
    PointerNetworkConfig,
    indices_from_positions,
    positions_from_indices,
)
from rnnkit.models.recurrent_config import RecurrentConfig

LENGTHS = torch.tensor([6, 3, 5, 1])


RECURRENT_FIELDS = {"cell", "strategy", "num_layers", "bidirectional", "options"}


def build(seed: int = 0, input_size: int = 2, **options) -> PointerNetwork:
    """A small pointer network; ``cell``, ``strategy``, ... go to its RecurrentConfig."""
    torch.manual_seed(seed)
    recurrent = {name: options.pop(name) for name in RECURRENT_FIELDS & set(options)}
    config = PointerNetworkConfig(
        embedding_size=6,
        recurrent=RecurrentConfig(hidden_size=8, **recurrent),
        attention_size=7,
        **options,
    )
    return PointerNetwork(config, input_size).double()


def inputs_for(lengths: torch.Tensor, input_size: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(len(lengths), int(lengths.max()), input_size, generator=generator)
    return inputs.double()


def random_targets(lengths: torch.Tensor, end_position: bool, seed: int = 2) -> torch.Tensor:
    """Per example a random ordering of its positions (a random prefix of it, then the end,
    with ``end_position``), padded with -1."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for length in lengths.tolist():
        order = (torch.randperm(length, generator=generator) + 1).tolist()
        if end_position:
            keep = int(torch.randint(0, length + 1, (1,), generator=generator))
            order = order[:keep] + [END_POSITION]
        rows.append(order)
    longest = max(len(row) for row in rows)
    return torch.tensor([row + [PADDING] * (longest - len(row)) for row in rows])


def stepwise(model: PointerNetwork, inputs, lengths, targets) -> torch.Tensor:
    """Log-probabilities from ``model.step``, one step at a time with the carried state."""
    memory = model.encode(inputs, lengths)
    batch_size, positions = memory.mask.shape
    previous = torch.zeros(batch_size, dtype=torch.long)
    chosen = torch.zeros(batch_size, positions, dtype=torch.bool)
    state, steps = memory.state, []
    for target in targets.unbind(1):
        log_probabilities, state = model.step(memory, previous, state, chosen)
        steps.append(log_probabilities)
        chosen[torch.arange(batch_size), target.clamp(min=0)] |= target > END_POSITION
        previous = target
    return torch.stack(steps, 1)


OPTIONS = {
    "lstm-mask": {"cell": "lstm", "mask_chosen": True},
    "gru-mask-end": {"cell": "gru", "mask_chosen": True, "end_position": True},
    "lstm-end": {"cell": "lstm", "mask_chosen": False, "end_position": True},
    "elman-nomask": {"cell": "elman", "mask_chosen": False},
    "lstm-bidirectional-2layers": {"cell": "lstm", "bidirectional": True, "num_layers": 2},
    "gru-bidirectional-end": {"cell": "gru", "bidirectional": True, "end_position": True},
    "lstm-sequential": {"cell": "lstm", "strategy": "sequential", "end_position": True},
    "lstm-glimpse-mask": {"cell": "lstm", "glimpses": 1},
    "gru-2glimpses-end": {"cell": "gru", "glimpses": 2, "end_position": True},
    "lstm-bidirectional-glimpse": {"cell": "lstm", "bidirectional": True, "glimpses": 1},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_teacher_forcing_equals_stepping_in_float64(options):
    model = build(**options)
    inputs = inputs_for(LENGTHS)
    targets = random_targets(LENGTHS, model.config.end_position)
    forced = model(inputs, LENGTHS, targets)
    stepped = stepwise(model, inputs, LENGTHS, targets)
    real = targets != PADDING
    assert forced.shape == (len(LENGTHS), targets.shape[1], int(LENGTHS.max()) + 1)
    torch.testing.assert_close(forced[real], stepped[real], rtol=1e-10, atol=1e-10)


SOME = {key: OPTIONS[key] for key in ("lstm-mask", "gru-mask-end", "lstm-end", "gru-2glimpses-end")}


@pytest.mark.parametrize("options", SOME.values(), ids=SOME.keys())
def test_padding_and_disallowed_positions_get_zero_probability(options):
    model = build(**options)
    inputs = inputs_for(LENGTHS)
    targets = random_targets(LENGTHS, model.config.end_position)
    probabilities = model(inputs, LENGTHS, targets).exp()  # (B, L, N+1)
    positions = torch.arange(probabilities.shape[2])
    padded = positions.unsqueeze(0) > LENGTHS.unsqueeze(1)  # (B, N+1)
    assert bool((probabilities.transpose(1, 2)[padded] == 0).all())
    if not model.config.end_position:
        assert bool((probabilities[..., END_POSITION] == 0).all())
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(probabilities.shape[:2]).double())


def test_masking_gives_zero_probability_to_chosen_positions():
    model = build(mask_chosen=True, end_position=True)
    inputs = inputs_for(LENGTHS)
    targets = random_targets(LENGTHS, end_position=True, seed=5)
    probabilities = model(inputs, LENGTHS, targets).exp()
    for row, target in enumerate(targets.tolist()):
        for step, position in enumerate(target):
            if position == END_POSITION:
                break
            assert bool((probabilities[row, step + 1 :, position] == 0).all())


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_masked_greedy_outputs_are_permutations(cell):
    model = build(cell=cell, mask_chosen=True, end_position=False)
    decoded = model.decode(inputs_for(LENGTHS), LENGTHS)
    assert decoded.shape == (len(LENGTHS), int(LENGTHS.max()))
    for indices, length in zip(indices_from_positions(decoded), LENGTHS.tolist(), strict=True):
        assert sorted(indices) == list(range(length))
    assert bool((decoded[1, 3:] == PADDING).all()) and bool((decoded[3, 1:] == PADDING).all())


@pytest.mark.parametrize("options", SOME.values(), ids=SOME.keys())
def test_greedy_decoding_takes_the_teacher_forced_argmax_of_its_own_output(options):
    model = build(**options)
    inputs = inputs_for(LENGTHS, seed=7)
    decoded = model.decode(inputs, LENGTHS)
    forced = model(inputs, LENGTHS, decoded)
    real = decoded != PADDING
    assert bool((forced.argmax(-1)[real] == decoded[real]).all())
    if model.config.end_position:
        ends = (decoded == END_POSITION).sum(1)
        full = (decoded != PADDING).sum(1) == decoded.shape[1]
        assert bool(((ends == 1) | full).all())  # each output ends once, or ran out of steps


def test_decode_stops_at_max_steps():
    model = build(mask_chosen=False, end_position=True)
    decoded = model.decode(inputs_for(LENGTHS), LENGTHS, max_steps=2)
    assert decoded.shape[1] <= 2
    with pytest.raises(ValueError, match="max_steps"):
        model.decode(inputs_for(LENGTHS), LENGTHS, max_steps=0)


def test_gradients_reach_every_parameter():
    model = build(end_position=True, bidirectional=True, glimpses=1)
    inputs = inputs_for(LENGTHS)
    targets = random_targets(LENGTHS, end_position=True)
    log_probabilities = model(inputs, LENGTHS, targets)
    loss = -log_probabilities.gather(2, targets.clamp(min=0).unsqueeze(-1))[targets >= 0].sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all()), name
    assert float(model.end.grad.abs().sum()) > 0 and float(model.start.grad.abs().sum()) > 0


def test_numbers_as_inputs_and_no_lengths():
    model = build(input_size=1)
    decoded = model.decode(torch.rand(3, 4, 1).double())
    assert decoded.shape == (3, 4)
    assert all(sorted(row) == [0, 1, 2, 3] for row in indices_from_positions(decoded))


def test_positions_and_indices_convert_both_ways():
    indices = torch.tensor([[2, 0, 1], [1, -1, -1], [-1, -1, -1]])
    assert positions_from_indices(indices, end_position=False).tolist() == [
        [3, 1, 2],
        [2, -1, -1],
        [-1, -1, -1],
    ]
    with_end = positions_from_indices(indices, end_position=True)
    assert with_end.tolist() == [[3, 1, 2, 0], [2, 0, -1, -1], [0, -1, -1, -1]]
    assert indices_from_positions(with_end) == [[2, 0, 1], [1], []]


def test_errors_name_the_argument():
    model = build()
    inputs = inputs_for(LENGTHS)
    with pytest.raises(ValueError, match="inputs: expected"):
        model.decode(inputs[..., :1])
    with pytest.raises(ValueError, match="lengths must be a CPU int64 tensor, got torch.int32"):
        model.decode(inputs, LENGTHS.int())
    with pytest.raises(
        ValueError, match="lengths must not exceed the 6 time steps of inputs, got a length of 7"
    ):
        model.decode(inputs, torch.tensor([7, 1, 1, 1]))
    with pytest.raises(ValueError, match="lengths must be at least 1, got a length of 0"):
        model.decode(inputs, torch.tensor([6, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths must have one entry per sequence, shape \(4,\)"):
        model.decode(inputs, LENGTHS[:3])
    pointing_at_padding = random_targets(LENGTHS, end_position=False)
    pointing_at_padding[1, 0] = 5  # example 1 has 3 elements
    with pytest.raises(ValueError, match="target_positions"):
        model(inputs, LENGTHS, pointing_at_padding)
    ending = random_targets(LENGTHS, end_position=True)
    with pytest.raises(ValueError, match="target_positions"):
        model(inputs, LENGTHS, ending)  # no end position in this model
    with pytest.raises(ValueError, match="target_positions: expected an int64"):
        model(inputs, LENGTHS, ending.float())
    with pytest.raises(ValueError, match="bidirectional"):
        build(cell="mlstm", bidirectional=True)
    with pytest.raises(ValueError, match="glimpses: expected 0 or more"):
        PointerNetwork(PointerNetworkConfig(glimpses=-1), 2)
    with pytest.raises(ValueError, match="unknown cell"):
        build(cell="transformer")


def test_cell_options_reach_the_encoder_and_the_decoder():
    model = build(cell="gla", options={"num_heads": 2}, bidirectional=False)
    assert [cell.num_heads for cell in model.encoder.cells + model.decoder.cells] == [2, 2]
    assert model.decoder.hidden_size == 8
    assert build(bidirectional=True).decoder.hidden_size == 16
