"""int8 dynamic quantization of custom cells' weight matrices (``Int8DynamicWeight``): outputs
close to float, the matrices int8 on disk, the report, dequantized uses, save and load."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch.nn import functional

from rnnkit.deploy.int8_weight import Int8DynamicWeight, Int8WeightTranspose
from rnnkit.deploy.quantize import quantize_int8, quantize_report
from rnnkit.nn import Recurrent

# (cell, options, the cell's 2-D matrices that become int8, tensors that stay float)
CASES = [
    ("lstm", {"layer_norm": True}, ["weight_ih", "weight_hh"], ["norm_input.weight"]),
    ("lstm", {"peephole": True}, ["weight_ih", "weight_hh"], ["weight_ci"]),
    ("slstm", {}, ["weight_ih"], ["weight_hh"]),  # (heads, 4d, d): a stack of blocks
    ("mingru", {}, ["weight_ih"], ["bias_ih"]),
    ("gla", {}, ["weight_ih", "weight_gate_down", "weight_gate_up", "weight_out"], ["norm_weight"]),
    ("deltanet", {}, ["weight_ih", "weight_out"], ["bias_out"]),
]
IDS = [f"{cell}-{'-'.join(options) or 'plain'}" for cell, options, _, _ in CASES]

# Weights are int8 with one scale per row (error <= |row|max / 254 per entry) and activations
# 7-bit with one scale per row (torch's x86 reduce_range: error <= |row|max / 254 per entry).
# The unavoidable part is the rounding of the weights, which these random layers amplify
# differently (layer norms rescale noise, GLA and DeltaNet chain products): measured as the
# error of the float layer with the rounded (dequantized) weights. Rounding the activations
# too adds 1-3x that on average (measured over three seeds: layer-norm LSTM 1.4-1.9x, GLA
# 2.9x, DeltaNet 2.2x, others 1.4-2.2x); at most 4x passes. The largest single error was 14%
# of the largest output (the layer-norm LSTM). A wrong row order, a transposed matrix or a
# missing bias moves outputs by O(100%).
MEAN_FACTOR = 4.0
MAX_TOLERANCE = 0.2


def randomized_layer(cell: str, options: dict, size: int = 32) -> Recurrent:
    """A 2-layer ``Recurrent`` with every matrix drawn N(0, 1/fan_in): at initialization some
    cells (gla, deltanet) output almost zero, which would make any comparison vacuous."""
    torch.manual_seed(0)
    layer = Recurrent(cell, 16, size, num_layers=2, **options).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in layer.parameters():
            if parameter.dim() >= 2:
                draw = torch.randn(parameter.shape, generator=generator)
                parameter.copy_(draw / math.sqrt(parameter.shape[-1]))
    return layer


@pytest.mark.parametrize(("cell", "options", "int8_names", "float_names"), CASES, ids=IDS)
def test_quantized_cell_close_to_float_and_reported(cell, options, int8_names, float_names):
    layer = randomized_layer(cell, options)
    quantized = quantize_int8(layer)
    inputs = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, expected_state = layer(inputs)
        got, state = quantized(inputs)
        step_expected, _ = layer.step(inputs[:, 0], expected_state)
        step_got, _ = quantized.step(inputs[:, 0], state)
    scale = float(expected.abs().max())
    assert scale > 0.1, "the float layer's outputs must not be vanishing"
    error = (got - expected).abs()
    assert float(error.max()) <= MAX_TOLERANCE * scale, f"outputs: max error {error.max()}"
    rounded = copy.deepcopy(layer)
    with torch.no_grad():
        for cell_rounded, cell_int8 in zip(
            rounded.layer_cells(), quantized.layer_cells(), strict=True
        ):
            for name in int8_names:
                getattr(cell_rounded, name).copy_(getattr(cell_int8, name).dequantize())
        weight_error = float((rounded(inputs)[0] - expected).abs().mean())
    assert weight_error > 0, "rounding the weights must change the outputs"
    assert float(error.mean()) <= MEAN_FACTOR * weight_error, (
        f"outputs: mean error {float(error.mean()):.2e}, with only the weights rounded "
        f"{weight_error:.2e}"
    )
    step_error = (step_got - step_expected).abs()
    assert float(step_error.max()) <= MAX_TOLERANCE * scale, "step"

    rows = {row.name: row for row in quantize_report(quantized)}
    for index, (float_cell, int8_cell) in enumerate(
        zip(layer.layer_cells(), quantized.layer_cells(), strict=True)
    ):
        for name in int8_names:
            weight = getattr(int8_cell, name)
            assert isinstance(weight, Int8DynamicWeight), f"cells.{index}.{name} is not int8"
            assert weight.int8_uses > 0, f"cells.{index}.{name} never ran an int8 product"
            assert rows[f"cells.{index}.{name}"].kind == "int8", name
            assert name not in dict(int8_cell.named_parameters()), name
            assert isinstance(getattr(float_cell, name), torch.nn.Parameter), "float model kept"
        for name in float_names:
            row = rows[f"cells.{index}.{name}"]
            assert row.kind == "float" and row.how, name


def test_int8_matrices_are_about_four_times_smaller_on_disk():
    layer = randomized_layer("gla", {}, size=128)
    quantized = quantize_int8(layer)

    def saved_bytes(tensors: dict) -> int:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        return buffer.getbuffer().nbytes

    float_cell, int8_cell = layer.layer_cells()[1], quantized.layer_cells()[1]
    names = ["weight_ih", "weight_gate_down", "weight_gate_up", "weight_out"]
    float_bytes = saved_bytes({name: getattr(float_cell, name).detach() for name in names})
    int8_bytes = saved_bytes({name: getattr(int8_cell, name) for name in names})
    # 1 byte per entry plus a 16-byte scale and zero point per row, against 4 bytes per entry
    assert 3.3 < float_bytes / int8_bytes < 4.1, (float_bytes, int8_bytes)
    # the whole state: biases and norms stay float; each int8 entry saves 3 bytes, less the
    # 16 bytes of each row's scale and zero point (float64, int64)
    whole_float, whole_int8 = saved_bytes(layer.state_dict()), saved_bytes(quantized.state_dict())
    expected = sum(
        3 * getattr(cell, name).numel() - 16 * getattr(cell, name).shape[0]
        for cell in quantized.layer_cells()
        for name in names
    )
    saved = whole_float - whole_int8
    assert 0.95 * expected < saved < 1.02 * expected, (whole_float, whole_int8, expected)


def test_other_uses_see_the_dequantized_matrix():
    torch.manual_seed(3)
    matrix = torch.randn(24, 10)
    weight = Int8DynamicWeight.from_float(matrix)
    assert weight.shape == (24, 10) and weight.dtype == torch.float32 and weight.size(1) == 10
    assert weight.dim() == 2 and weight.is_floating_point() and weight.detach() is weight
    assert weight.dequantized_uses == 0 and weight.int8_uses == 0, "metadata is not a use"
    dequantized = weight.dequantize()
    step = matrix.abs().amax(dim=1, keepdim=True) / 127
    assert bool(((dequantized - matrix).abs() <= step / 2 + 1e-7).all()), "rounding"
    vector = torch.randn(10)
    torch.testing.assert_close(weight @ vector, dequantized @ vector)  # not a linear: float
    torch.testing.assert_close(weight * 2 + 1, dequantized * 2 + 1)
    torch.testing.assert_close(torch.tanh(weight).sum(0), torch.tanh(dequantized).sum(0))
    assert weight.dequantized_uses == 3 and weight.int8_uses == 0
    transpose = weight.t()
    assert isinstance(transpose, Int8WeightTranspose) and transpose.shape == (10, 24)
    torch.testing.assert_close(transpose.exp(), dequantized.t().exp())
    assert weight.dequantized_uses == 4
    inputs, bias = torch.randn(5, 10), torch.randn(5, 24)
    for got in (
        functional.linear(inputs, weight, bias[0]) - bias[0],
        torch.addmm(bias, inputs, weight.t()) - bias,
        inputs @ weight.t(),
    ):
        exact = inputs @ dequantized.t()
        # the int8 product: the inputs rounded to 7 bits (range / 127 steps) over 10 terms
        bound = float(inputs.abs().max()) / 127 * float(dequantized.abs().sum(1).max())
        assert float((got - exact).abs().max()) <= bound, "int8 product"
        assert float((got - exact).abs().max()) > 0, "the product must be the int8 kernel"
    assert weight.int8_uses == 3 and weight.dequantized_uses == 4


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # torch loading qint8 tensors
def test_quantized_model_saves_and_loads(tmp_path):
    layer = randomized_layer("lstm", {"layer_norm": True})
    quantized = quantize_int8(layer)
    path = tmp_path / "layer.int8.pt"
    torch.save(quantized, path)
    loaded = torch.load(path, weights_only=False)
    weight = loaded.layer_cells()[0].weight_hh
    assert isinstance(weight, Int8DynamicWeight)
    inputs = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs)[0], quantized(inputs)[0], rtol=0, atol=0)
    assert weight.int8_uses + weight.dequantized_uses > 0
