"""The short convolution against its equation, whole = chunked = stepwise, with lengths, and in
the sequence model (forward equals step)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from rnnkit.models.sequence_model import SequenceModelConfig, build_sequence_model
from rnnkit.models.short_convolution import ShortConvolution


def reference(module: ShortConvolution, inputs: torch.Tensor) -> torch.Tensor:
    """The module docstring's sum, position by position, zeros before the first step."""
    weight, bias = module.convolution.weight[:, 0], module.convolution.bias  # (D, K), (D)
    width = module.kernel_size
    outputs = torch.zeros_like(inputs)
    for t in range(inputs.shape[1]):
        total = bias.expand(inputs.shape[0], -1).clone()
        for back in range(width):
            if t - back >= 0:
                total = total + weight[:, width - 1 - back] * inputs[:, t - back]
        outputs[:, t] = functional.silu(total)
    return outputs


@pytest.mark.parametrize("width", [2, 4])
def test_equation_chunks_and_steps(width: int) -> None:
    torch.manual_seed(0)
    module = ShortConvolution(5, width).double()
    inputs = torch.randn(3, 7, 5, dtype=torch.float64)
    outputs, state = module(inputs)
    torch.testing.assert_close(outputs, reference(module, inputs))
    torch.testing.assert_close(state, inputs[:, -(width - 1) :])
    first, carried = module(inputs[:, :3])
    second, chunked_state = module(inputs[:, 3:], carried)
    torch.testing.assert_close(torch.cat([first, second], 1), outputs)
    torch.testing.assert_close(chunked_state, state)
    step_state = None
    for t in range(inputs.shape[1]):
        step_output, step_state = module.step(inputs[:, t], step_state)
        torch.testing.assert_close(step_output, outputs[:, t])
    torch.testing.assert_close(step_state, state)


def test_lengths_state_is_each_rows_last_inputs() -> None:
    torch.manual_seed(1)
    module = ShortConvolution(4, 3).double()
    inputs = torch.randn(3, 6, 4, dtype=torch.float64)
    carried = torch.randn(3, 2, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 3])
    outputs, state = module(inputs, carried, lengths)
    for row, length in enumerate(lengths.tolist()):
        alone, alone_state = module(inputs[row : row + 1, :length], carried[row : row + 1])
        torch.testing.assert_close(outputs[row, :length], alone[0])
        torch.testing.assert_close(state[row], alone_state[0])


def test_gradients_match_the_reference() -> None:
    torch.manual_seed(2)
    module = ShortConvolution(3, 4).double()
    inputs = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    fast = torch.autograd.grad(module(inputs)[0].square().sum(), [inputs, *module.parameters()])
    slow = torch.autograd.grad(
        reference(module, inputs).square().sum(), [inputs, *module.parameters()]
    )
    for got, expected in zip(fast, slow, strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("mixer", ["deltanet", "lstm"])
def test_sequence_model_forward_equals_step(mixer: str) -> None:
    torch.manual_seed(3)
    config = SequenceModelConfig(mixer=mixer, short_convolution=4, num_blocks=2)
    model = build_sequence_model(config, vocabulary_size=11).double()
    tokens = torch.randint(0, 11, (2, 8))
    outputs, state = model(tokens)
    step_state = None
    for t in range(tokens.shape[1]):
        step_output, step_state = model.step(tokens[:, t], step_state)
        torch.testing.assert_close(step_output, outputs[:, t])
    head, carried = model(tokens[:, :5])
    tail, _ = model(tokens[:, 5:], carried)
    torch.testing.assert_close(torch.cat([head, tail], 1), outputs)
    sizes = model.state_size_per_token()
    plain = build_sequence_model(
        SequenceModelConfig(mixer=mixer, num_blocks=2), vocabulary_size=11
    ).state_size_per_token()
    assert sizes == [size + 3 * 64 for size in plain]


@pytest.mark.parametrize("width", [-1, 1])
def test_bad_width_names_the_option(width: int) -> None:
    with pytest.raises(ValueError, match="short_convolution: expected 0 .* got"):
        SequenceModelConfig(mixer="deltanet", short_convolution=width)


def test_bad_state_shape_is_reported() -> None:
    module = ShortConvolution(4, 3)
    with pytest.raises(ValueError, match=r"short convolution state: expected \(2, 2, 4\)"):
        module(torch.randn(2, 5, 4), torch.zeros(2, 3, 4))
