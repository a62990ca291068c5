"""The CRNN: output lengths, a finite CTC loss, gradients through every parameter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rnnkit.models.crnn import CRNN, CRNNConfig
from rnnkit.models.recurrent_config import RecurrentConfig


def tiny(**changes) -> CRNNConfig:
    """Four channels, a bidirectional reader of 6 per direction; ``changes`` of the reader."""
    settings = {"hidden_size": 6, "bidirectional": True, **changes}
    return CRNNConfig(channels=4, recurrent=RecurrentConfig(**settings))


def images_and_labels(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 12, 40, generator=generator)
    widths = torch.tensor([40, 25, 16])
    images[1, :, 25:] = 0
    images[2, :, 16:] = 0
    labels = torch.tensor([[1, 2, 3], [4, 4, 0], [10, 0, 0]])
    return images, widths, labels, torch.tensor([3, 2, 1])


@pytest.mark.parametrize("halve_width", [False, True])
def test_output_lengths_follow_the_widths(halve_width):
    model = CRNN(dataclasses.replace(tiny(), halve_width=halve_width), 11, 12)
    images, widths, _, _ = images_and_labels()
    log_probs, lengths = model(images, widths)
    expected = widths // 2 if halve_width else widths
    assert torch.equal(lengths, expected)
    assert log_probs.shape == (3, int(expected.max()), 11)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, int(expected.max())))


def test_padding_does_not_change_a_string_reading():
    torch.manual_seed(0)
    model = CRNN(tiny(), 11, 12).eval()
    images, widths, _, _ = images_and_labels()
    alone, _ = model(images[2:, :, :16], widths[2:])
    padded, _ = model(images, widths)
    torch.testing.assert_close(padded[2, :16], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loss_is_finite_and_gradients_reach_every_parameter(cell):
    torch.manual_seed(0)
    model = CRNN(tiny(cell=cell, num_layers=2), 11, 12)
    loss = model.loss(*images_and_labels())
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert sum(float(p.grad.abs().sum()) for p in model.features.parameters()) > 0


def test_a_few_steps_lower_the_loss_on_one_batch():
    torch.manual_seed(0)
    model = CRNN(dataclasses.replace(tiny(), dropout=0.0), 11, 12)
    batch = images_and_labels()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = float(model.loss(*batch).detach())
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(*batch).backward()
        optimizer.step()
    assert float(model.loss(*batch).detach()) < 0.7 * first


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"channels": 0}, "^channels must be a positive integer, got 0$"),
        ({"height_poolings": 4}, r"^height_poolings must lie in \[0, conv_layers=3\], got 4$"),
        ({"dropout": 1.0}, r"^dropout: expected \[0, 1\), got 1.0$"),
        ({"conv_layers": 5, "height_poolings": 5}, "cannot be halved"),
    ],
)
def test_bad_configs_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        CRNN(CRNNConfig(**settings), 11, 12)


def test_the_reader_takes_any_cell_with_its_options_and_either_direction():
    model = CRNN(tiny(cell="lru", options={"r_min": 0.5}, strategy="scan"), 11, 12)
    assert all(cell.r_min == 0.5 for cell in model.recurrent.cells)
    forward_only = CRNN(tiny(bidirectional=False), 11, 12)
    assert forward_only.output.in_features == 6
    log_probs, _ = forward_only(*images_and_labels()[:2])
    assert log_probs.shape[-1] == 11
