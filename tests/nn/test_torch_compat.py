"""rnnkit.nn.LSTM, GRU, RNN and their cells are drop-ins for torch.nn: same arguments, shapes,
numbers (float64, 1e-10), gradients, initial values, state_dict names and error messages."""

from __future__ import annotations

import copy
import io
import itertools
import re
import warnings

import pytest
import torch
from conftest import assert_all_close, assert_close
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit.nn

F64 = torch.float64
MODES = {  # id -> (class name, extra constructor arguments)
    "LSTM": ("LSTM", {}),
    "GRU": ("GRU", {}),
    "RNN_TANH": ("RNN", {}),
    "RNN_RELU": ("RNN", {"nonlinearity": "relu"}),
}


def make_pair(mode: str, strategy: str = "auto", seed: int = 0, **arguments):
    """torch.nn's layer and rnnkit's, each built right after ``torch.manual_seed(seed)``."""
    class_name, extra = MODES[mode]
    arguments = {**extra, **arguments}
    torch.manual_seed(seed)
    reference = getattr(torch.nn, class_name)(**arguments)
    torch.manual_seed(seed)
    layer = getattr(rnnkit.nn, class_name)(**arguments, strategy=strategy)
    return reference, layer


def assert_same_parameters(layer, reference) -> None:
    names = [name for name, _ in layer.named_parameters()]
    assert names == [name for name, _ in reference.named_parameters()], "parameter names differ"
    for name, expected in reference.state_dict().items():
        assert torch.equal(layer.state_dict()[name], expected), f"initial value of {name} differs"


def random_hx(mode, count, batch_shape, hidden_size, proj_size=0, generator=None):
    """torch's h_0 (or (h_0, c_0)) of shape ``(count, *batch_shape, size)``, requiring grad."""

    def tensor(size):
        shape = (count, *batch_shape, size)
        return torch.randn(shape, dtype=F64, generator=generator).requires_grad_()

    if mode == "LSTM":
        return (tensor(proj_size or hidden_size), tensor(hidden_size))
    return tensor(hidden_size)


def flat(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


def weighted_loss(tensors):
    generator = torch.Generator().manual_seed(9)
    return sum(
        (tensor * torch.randn(tensor.shape, dtype=F64, generator=generator)).sum()
        for tensor in tensors
    )


def compare_runs(layer, reference, inputs, hx, hidden_names) -> None:
    """Forward both, then compare outputs, final states and every gradient."""
    results = []
    for module in (layer, reference):
        output, hidden = module(inputs, hx)
        output_data = output.data if isinstance(output, PackedSequence) else output
        loss = weighted_loss([output_data, *flat(hidden)])
        wrt = [inputs.data if isinstance(inputs, PackedSequence) else inputs]
        wrt += ([] if hx is None else flat(hx)) + list(module.parameters())
        results.append((output, flat(hidden), torch.autograd.grad(loss, wrt)))
    (output, hidden, gradients), (expected_output, expected_hidden, expected_gradients) = results
    if isinstance(expected_output, PackedSequence):
        assert_close(output.data, expected_output.data, "output.data", F64)
        assert torch.equal(output.batch_sizes, expected_output.batch_sizes), "batch_sizes differ"
        for name in ("sorted_indices", "unsorted_indices"):
            actual_indices, expected_indices = getattr(output, name), getattr(expected_output, name)
            assert (actual_indices is None) == (expected_indices is None), f"{name}: None differs"
            if expected_indices is not None:
                assert torch.equal(actual_indices, expected_indices), f"{name} differ"
    else:
        assert_close(output, expected_output, "output", F64)
    assert_all_close(hidden, expected_hidden, hidden_names, F64)
    names = ["grad of input"]
    names += [f"grad of {name.replace('_n', '_0')}" for name in hidden_names if hx is not None]
    names += [f"grad of {name}" for name, _ in reference.named_parameters()]
    assert_all_close(gradients, expected_gradients, names, F64)


def hidden_names(mode):
    return ["h_n", "c_n"] if mode == "LSTM" else ["h_n"]


GRID = {
    "num_layers": (1, 2),
    "bias": (True, False),
    "batch_first": (True, False),
    "bidirectional": (False, True),
}


def grid_id(mode: str, arguments: dict, with_hx: bool, strategy: str) -> str:
    parts = [mode, f"L{arguments['num_layers']}", "bias" if arguments["bias"] else "nobias"]
    parts += ["bf" if arguments["batch_first"] else "tf"]
    parts += ["bi" if arguments["bidirectional"] else "uni"]
    parts += [f"proj{arguments['proj_size']}"] if arguments.get("proj_size") else []
    return "-".join([*parts, "hx" if with_hx else "nohx", strategy])


def grid_cases() -> list:
    cases = []
    for mode in MODES:
        for values in itertools.product(*GRID.values()):
            for proj_size in (0, 2) if mode == "LSTM" else (0,):
                arguments = {
                    "input_size": 3,
                    "hidden_size": 4,
                    **dict(zip(GRID, values, strict=True)),
                }
                if proj_size:
                    arguments["proj_size"] = proj_size
                for with_hx, strategy in itertools.product((False, True), ("auto", "sequential")):
                    case_id = grid_id(mode, arguments, with_hx, strategy)
                    cases.append(pytest.param(mode, arguments, with_hx, strategy, id=case_id))
    return cases


@pytest.mark.parametrize(("mode", "arguments", "with_hx", "strategy"), grid_cases())
def test_layer_matches_torch(mode, arguments, with_hx, strategy):
    reference, layer = make_pair(mode, strategy, dtype=F64, **arguments)
    assert_same_parameters(layer, reference)
    generator = torch.Generator().manual_seed(1)
    shape = (3, 5, 3) if arguments["batch_first"] else (5, 3, 3)
    inputs = torch.randn(shape, dtype=F64, generator=generator).requires_grad_()
    count = arguments["num_layers"] * (2 if arguments["bidirectional"] else 1)
    hx = None
    if with_hx:
        hx = random_hx(mode, count, (3,), 4, arguments.get("proj_size", 0), generator)
    compare_runs(layer, reference, inputs, hx, hidden_names(mode))


MODE_VARIANTS = [("LSTM", 0), ("LSTM", 2), ("GRU", 0), ("RNN_TANH", 0), ("RNN_RELU", 0)]
PACKED_CASES = [
    pytest.param(
        mode,
        proj_size,
        bidirectional,
        lengths,
        enforce_sorted,
        with_hx,
        strategy,
        id="-".join(
            [mode + (f"-proj{proj_size}" if proj_size else ""), "bi" if bidirectional else "uni"]
            + ["sorted" if enforce_sorted else "unsorted", "hx" if with_hx else "nohx", strategy]
        ),
    )
    for mode, proj_size in MODE_VARIANTS
    for bidirectional in (False, True)
    for lengths, enforce_sorted in (([5, 4, 4, 2], True), ([3, 5, 1, 5, 3], False))
    for with_hx in (False, True)
    for strategy in ("auto", "sequential")
]


@pytest.mark.parametrize(
    ("mode", "proj_size", "bidirectional", "lengths", "enforce_sorted", "with_hx", "strategy"),
    PACKED_CASES,
)
def test_packed_sequence_matches_torch(
    mode, proj_size, bidirectional, lengths, enforce_sorted, with_hx, strategy
):
    arguments = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "batch_first": True}
    arguments.update(bidirectional=bidirectional, dtype=F64)
    if proj_size:
        arguments["proj_size"] = proj_size
    reference, layer = make_pair(mode, strategy, **arguments)
    generator = torch.Generator().manual_seed(2)
    padded = torch.randn(len(lengths), 5, 3, dtype=F64, generator=generator)
    packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    packed.data.requires_grad_()
    hx = None
    if with_hx:
        count = 4 if bidirectional else 2
        hx = random_hx(mode, count, (len(lengths),), 4, proj_size, generator)
    compare_runs(layer, reference, packed, hx, hidden_names(mode))


@pytest.mark.parametrize(("mode", "proj_size"), MODE_VARIANTS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["tf", "bf"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("strategy", ["auto", "sequential"])
def test_unbatched_input_matches_torch(mode, proj_size, batch_first, with_hx, strategy):
    arguments = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True}
    if proj_size:
        arguments["proj_size"] = proj_size
    reference, layer = make_pair(mode, strategy, batch_first=batch_first, dtype=F64, **arguments)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(5, 3, dtype=F64, generator=generator).requires_grad_()
    hx = random_hx(mode, 4, (), 4, proj_size, generator) if with_hx else None
    compare_runs(layer, reference, inputs, hx, hidden_names(mode))


ROUND_TRIP = {
    "LSTM": {"proj_size": 2},
    "GRU": {},
    "RNN_RELU": {},
}


@pytest.mark.parametrize("mode", list(ROUND_TRIP))
def test_state_dict_round_trips_between_torch_and_rnnkit(mode):
    arguments = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True}
    arguments.update(ROUND_TRIP[mode], dtype=F64)
    torch_source, rnnkit_target = make_pair(mode, seed=1, **arguments)
    torch_target, rnnkit_source = make_pair(mode, seed=2, **arguments)
    assert list(rnnkit_source.state_dict()) == list(torch_source.state_dict())
    assert [[p.shape for p in weights] for weights in rnnkit_source.all_weights] == [
        [p.shape for p in weights] for weights in torch_source.all_weights
    ]
    inputs = torch.randn(5, 3, 3, dtype=F64)

    rnnkit_target.load_state_dict(torch_source.state_dict())  # torch -> rnnkit
    torch_target.load_state_dict(rnnkit_source.state_dict())  # rnnkit -> torch
    for source, target, direction in [
        (torch_source, rnnkit_target, "torch -> rnnkit"),
        (rnnkit_source, torch_target, "rnnkit -> torch"),
    ]:
        expected_output, expected_hidden = source(inputs)
        output, hidden = target(inputs)
        assert_close(output, expected_output, f"output after {direction}", F64)
        assert_all_close(flat(hidden), flat(expected_hidden), hidden_names(mode), F64)

    rnnkit_target.load_state_dict(rnnkit_source.state_dict())  # and back through torch
    assert_close(rnnkit_target(inputs)[0], rnnkit_source(inputs)[0], "output after reload", F64)


@pytest.mark.parametrize("mode", list(MODES))
def test_same_initial_values_as_torch_in_default_dtype(mode):
    arguments = {"input_size": 5, "hidden_size": 7, "num_layers": 2, "bidirectional": True}
    if mode == "LSTM":
        arguments["proj_size"] = 3
    reference, layer = make_pair(mode, seed=123, **arguments)
    assert_same_parameters(layer, reference)
    assert all(parameter.dtype == torch.float32 for parameter in layer.parameters())


def test_positional_arguments_as_torch():
    torch.manual_seed(0)
    reference = torch.nn.RNN(3, 4, 2, "relu", False, True, 0.0, True, dtype=F64)
    torch.manual_seed(0)
    layer = rnnkit.nn.RNN(3, 4, 2, "relu", False, True, 0.0, True, dtype=F64)
    assert_same_parameters(layer, reference)
    inputs = torch.randn(2, 6, 3, dtype=F64)
    assert_close(layer(inputs)[0], reference(inputs)[0], "output", F64)


@pytest.mark.parametrize("mode", list(MODES))
def test_conversion_after_construction_rebinds_the_cells(mode):
    reference, layer = make_pair(mode, input_size=3, hidden_size=4, num_layers=2)
    reference.double()
    layer.double()
    inputs = torch.randn(5, 2, 3, dtype=F64)
    assert_close(layer(inputs)[0], reference(inputs)[0], "output after .double()", F64)


@pytest.mark.parametrize(
    ("mode", "arguments"),
    [
        ("LSTM", {"proj_size": 2, "num_layers": 2, "bias": False, "batch_first": True}),
        ("GRU", {"dropout": 0.5, "num_layers": 2, "bidirectional": True}),
        ("RNN_TANH", {}),
    ],
)
def test_repr_is_torchs(mode, arguments):
    reference, layer = make_pair(mode, input_size=3, hidden_size=4, **arguments)
    assert repr(layer) == repr(reference)


def test_describe_strategy_and_flatten_parameters():
    layer = rnnkit.nn.LSTM(3, 4)
    assert layer.describe_strategy() == (
        "auto -> native (torch's fused 'lstm' kernel computes this cell)"
    )
    assert rnnkit.nn.GRU(3, 4, strategy="sequential").describe_strategy() == "sequential"
    layer.flatten_parameters()  # torch code calls it; a no-op here


def test_copies_and_saved_layers_compute_the_same():
    layer = rnnkit.nn.LSTM(3, 4, 2, bidirectional=True)
    inputs = torch.randn(5, 2, 3)
    expected = layer(inputs)[0]
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(inputs)[0], expected)
    copied = copy.deepcopy(layer)
    assert torch.equal(copied(inputs)[0], expected)
    with torch.no_grad():
        copied.weight_hh_l1_reverse.add_(1.0)
    assert not torch.equal(copied(inputs)[0], expected), "the copy ignored its own parameters"
    assert torch.equal(layer(inputs)[0], expected), "changing the copy changed the original"


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("strategy", ["auto", "sequential"])
def test_dropout_between_layers(mode, strategy):
    arguments = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "dropout": 0.5, "dtype": F64}
    reference, layer = make_pair(mode, strategy, **arguments)
    reference.eval()
    layer.eval()
    inputs = torch.randn(5, 3, 3, dtype=F64)
    expected = reference(inputs)[0]
    assert_close(layer(inputs)[0], expected, "eval output with dropout", F64)
    layer.train()
    assert not torch.allclose(layer(inputs)[0], expected), "dropout inactive in training"


CELL_MODES = {
    "LSTMCell": {},
    "GRUCell": {},
    "RNNCell_tanh": {"nonlinearity": "tanh"},
    "RNNCell_relu": {"nonlinearity": "relu"},
}


@pytest.mark.parametrize("cell_mode", list(CELL_MODES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_cell_matches_torch(cell_mode, bias, with_hx, batched):
    class_name = cell_mode.split("_")[0]
    arguments = {"input_size": 3, "hidden_size": 4, "bias": bias, "dtype": F64}
    arguments.update(CELL_MODES[cell_mode])
    torch.manual_seed(0)
    reference = getattr(torch.nn, class_name)(**arguments)
    torch.manual_seed(0)
    cell = getattr(rnnkit.nn, class_name)(**arguments)
    assert_same_parameters(cell, reference)

    generator = torch.Generator().manual_seed(4)
    batch_shape = (2,) if batched else ()
    inputs = torch.randn(*batch_shape, 3, dtype=F64, generator=generator).requires_grad_()
    hx = None
    if with_hx:
        fields = [
            torch.randn(*batch_shape, 4, dtype=F64, generator=generator).requires_grad_()
            for _ in range(2 if class_name == "LSTMCell" else 1)
        ]
        hx = tuple(fields) if class_name == "LSTMCell" else fields[0]
    results = []
    for module in (cell, reference):
        new = flat(module(inputs, hx))
        wrt = [inputs, *([] if hx is None else flat(hx)), *module.parameters()]
        results.append((new, torch.autograd.grad(weighted_loss(new), wrt)))
    names = ["h'", "c'"] if class_name == "LSTMCell" else ["h'"]
    assert_all_close(results[0][0], results[1][0], names, F64)
    grad_names = ["grad of input"]
    grad_names += [f"grad of hx[{index}]" for index in range(len(names))] if with_hx else []
    grad_names += [f"grad of {name}" for name, _ in reference.named_parameters()]
    assert_all_close(results[0][1], results[1][1], grad_names, F64)


def torch_error(call, module):
    try:
        call(module)
    except Exception as error:  # noqa: BLE001 (any torch error is the expected one)
        return error
    raise AssertionError("torch.nn raised no error")


def hx_of(mode, shape, cell_shape=None):
    if mode == "LSTM":
        return (torch.zeros(shape), torch.zeros(cell_shape or shape))
    return torch.zeros(shape)


LAYER_ERRORS = {  # for layers with input_size=3, hidden_size=4, num_layers=2, batch 2, time 5
    "input-4d": lambda mode: lambda m: m(torch.zeros(5, 2, 3, 1)),
    "input-1d": lambda mode: lambda m: m(torch.zeros(3)),
    "input-size": lambda mode: lambda m: m(torch.zeros(5, 2, 6)),
    "hx-layers": lambda mode: lambda m: m(torch.zeros(5, 2, 3), hx_of(mode, (1, 2, 4))),
    "hx-batch": lambda mode: lambda m: m(torch.zeros(5, 2, 3), hx_of(mode, (2, 3, 4))),
    "hx-size": lambda mode: lambda m: m(torch.zeros(5, 2, 3), hx_of(mode, (2, 2, 5))),
    "cx-shape": lambda mode: lambda m: m(torch.zeros(5, 2, 3), hx_of(mode, (2, 2, 4), (2, 1, 4))),
    "hx-2d-for-batched": lambda mode: lambda m: m(torch.zeros(5, 2, 3), hx_of(mode, (2, 4))),
    "hx-3d-for-unbatched": lambda mode: lambda m: m(torch.zeros(5, 3), hx_of(mode, (2, 1, 4))),
}
KNOWN_MESSAGE_BUGS: dict[tuple[str, str], str] = {}


def layer_error_cases() -> list:
    cases = []
    for mode in ("LSTM", "GRU", "RNN_TANH"):
        for case in LAYER_ERRORS:
            if case == "cx-shape" and mode != "LSTM":
                continue
            marks = ()
            if (mode, case) in KNOWN_MESSAGE_BUGS:
                marks = pytest.mark.xfail(reason=KNOWN_MESSAGE_BUGS[mode, case], strict=True)
            cases.append(pytest.param(mode, case, marks=marks, id=f"{mode}-{case}"))
    return cases


@pytest.mark.parametrize(("mode", "case"), layer_error_cases())
def test_layer_errors_are_torchs(mode, case):
    reference, layer = make_pair(mode, input_size=3, hidden_size=4, num_layers=2)
    call = LAYER_ERRORS[case](mode)
    expected = torch_error(call, reference)
    with pytest.raises(type(expected), match=f"^{re.escape(str(expected))}$"):
        call(layer)


CONSTRUCTOR_ERRORS = {
    "dropout-above-1": {"dropout": 1.5},
    "hidden-size-0": {"hidden_size": 0},
    "hidden-size-float": {"hidden_size": 4.0},
    "num-layers-0": {"num_layers": 0},
    "proj-size-negative": {"proj_size": -1},
    "proj-size-too-large": {"proj_size": 4},
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_ERRORS))
def test_constructor_errors_are_torchs(case):
    arguments = {"input_size": 3, "hidden_size": 4, **CONSTRUCTOR_ERRORS[case]}
    expected = torch_error(lambda arguments: torch.nn.LSTM(**arguments), arguments)
    with pytest.raises(type(expected), match=f"^{re.escape(str(expected))}$"):
        rnnkit.nn.LSTM(**arguments)


def test_unknown_nonlinearity_and_dropout_warning_are_torchs():
    expected = torch_error(lambda _: torch.nn.RNN(3, 4, nonlinearity="gelu"), None)
    with pytest.raises(type(expected), match=f"^{re.escape(str(expected))}$"):
        rnnkit.nn.RNN(3, 4, nonlinearity="gelu")
    with warnings.catch_warnings(record=True) as torch_warnings:
        warnings.simplefilter("always")
        torch.nn.GRU(3, 4, dropout=0.3)
    with pytest.warns(UserWarning, match=re.escape(str(torch_warnings[0].message))):
        rnnkit.nn.GRU(3, 4, dropout=0.3)


CELL_ERRORS = {  # for cells with input_size=3, hidden_size=4: (call, exact torch text or None)
    "input-3d": (lambda name: lambda m: m(torch.zeros(2, 2, 3)), True),
    "input-size": (lambda name: lambda m: m(torch.zeros(2, 5)), True),
    "hx-size": (lambda name: lambda m: m(torch.zeros(2, 3), cell_hx(name, (2, 6))), False),
    "hx-batch": (lambda name: lambda m: m(torch.zeros(2, 3), cell_hx(name, (3, 4))), False),
}


def cell_hx(name, shape):
    return (torch.zeros(shape), torch.zeros(shape)) if name == "LSTMCell" else torch.zeros(shape)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("case", list(CELL_ERRORS))
def test_cell_errors(name, case):
    """Input errors carry torch's exact text; hidden-state errors torch's type and words."""
    make_call, exact = CELL_ERRORS[case]
    call = make_call(name)
    expected = torch_error(call, getattr(torch.nn, name)(3, 4))
    match = f"^{re.escape(str(expected))}$" if exact else r"hidden.*inconsistent"
    with pytest.raises(type(expected), match=match):
        call(getattr(rnnkit.nn, name)(3, 4))


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_device_and_dtype_arguments_place_parameters_as_torch_does(mode, device):
    import rnnkit.nn

    ours = getattr(rnnkit.nn, mode)(10, 20, num_layers=2, device=device, dtype=torch.float64)
    theirs = getattr(torch.nn, mode)(10, 20, num_layers=2, device=device, dtype=torch.float64)
    assert [name for name, _ in ours.named_parameters()] == [
        name for name, _ in theirs.named_parameters()
    ]
    for parameter in ours.parameters():
        assert parameter.device.type == device and parameter.dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_argument_places_parameters_on_the_gpu():
    import rnnkit.nn

    layer = rnnkit.nn.LSTM(10, 20, device="cuda")
    assert all(parameter.is_cuda for parameter in layer.parameters())
    outputs, _ = layer(torch.randn(5, 3, 10, device="cuda"))
    assert outputs.is_cuda
