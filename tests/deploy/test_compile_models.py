"""``torch.compile(fullgraph=True)`` against eager for every model a user trains, with
``compare_module`` of ``test_compile``: outputs, the gradients of every parameter and floating
input, float64, ``aot_eager``. Tiny sizes, dropout 0 (so that training mode draws nothing at
random, and the training paths of the depth recursions run: MoR's top-k routing and router
losses), the models' auxiliary losses (ACT's ponder cost, MoR's router losses) among the
outputs. The value checks of the pointer network's targets and the CRNN's widths are in-graph
asserts under compile: RuntimeError when the graph runs, ValueError in eager.

Default: one or two configurations per model; the others are ``slow``, with Titans (whose
chunked memory takes 15-20 s to compile).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_compile import compare_module
from torch import nn

from rnnkit.models.crnn import CRNN, CRNNConfig
from rnnkit.models.depth import DepthConfig, MixtureOfRecursionsConfig, RecursiveConfig
from rnnkit.models.depth.universal_encoder_decoder import UniversalEncoderDecoder
from rnnkit.models.forecaster import Forecaster, ForecasterConfig
from rnnkit.models.image_classifier import ImageClassifier, ImageClassifierConfig
from rnnkit.models.pointer import PointerNetwork, PointerNetworkConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.models.sequence_classifier import SequenceClassifier, SequenceClassifierConfig
from rnnkit.models.sequence_model import SequenceModel, SequenceModelConfig, build_sequence_model
from rnnkit.models.transformer_lm import TransformerLanguageModel

VOCABULARY = 7
SLOW = pytest.mark.slow
TITANS_MEMORY = {"num_heads": 2, "chunk_size": 3, "max_gradient_norm": 1.0}


def tokens(batch: int = 3, steps: int = 6, vocabulary: int = VOCABULARY, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocabulary, (batch, steps), generator=generator)


class WithAuxiliaryLoss(nn.Module):
    """The model's outputs and its ``auxiliary_loss()`` of that forward, in one graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *arguments: Any) -> tuple[Any, torch.Tensor | None]:
        outputs = self.model(*arguments)
        return outputs, self.model.auxiliary_loss()


def sequence_model(num_blocks: int = 2, **settings: Any) -> SequenceModel:
    torch.manual_seed(0)
    config = SequenceModelConfig(model_size=8, num_blocks=num_blocks, num_heads=2, **settings)
    return build_sequence_model(config, vocabulary_size=VOCABULARY).double()


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(
            {"recurrent": RecurrentConfig(cell="lstm", hidden_size=6)}, id="lstm", marks=SLOW
        ),
        pytest.param(
            {"recurrent": RecurrentConfig(cell="mingru", hidden_size=8), "short_convolution": 3},
            id="mingru-short_convolution",
        ),
        pytest.param({"mixer": "attention", "attention_window": 3}, id="attention-window"),
        pytest.param(
            {"recurrent": RecurrentConfig(cell="gru", hidden_size=8), "attention_every": 2},
            id="hybrid",
            marks=SLOW,
        ),
        pytest.param(
            {
                "mixer": "titans_mag",
                "recurrent": RecurrentConfig(
                    cell="titans", hidden_size=8, options=dict(TITANS_MEMORY)
                ),
            },
            id="titans_mag",
            marks=SLOW,
        ),
    ],
)
def test_sequence_model_compiles(settings):
    """Outputs and every block's final state (recurrent states, KV caches), with lengths."""
    model = sequence_model(**settings)
    compare_module(model, (tokens(), None, torch.tensor([6, 2, 4])))


@pytest.mark.parametrize("pooling", ["last", pytest.param("mean", marks=SLOW), "attention"])
def test_sequence_classifier_compiles(pooling):
    torch.manual_seed(0)
    recurrent = RecurrentConfig(cell="gru", hidden_size=5, bidirectional=True)
    config = SequenceClassifierConfig(recurrent=recurrent, pooling=pooling)
    model = SequenceClassifier(config, input_size=3, num_classes=4).double()
    inputs = torch.randn(3, 6, 3, dtype=torch.float64, requires_grad=True)
    compare_module(model, (inputs, torch.tensor([6, 2, 4])))


@pytest.mark.parametrize("decoding", ["direct", "autoregressive"])
def test_forecaster_compiles(decoding):
    torch.manual_seed(0)
    config = ForecasterConfig(RecurrentConfig(cell="gru", hidden_size=5), decoding)
    model = Forecaster(config, input_size=2, horizon=4).double()
    context = torch.randn(3, 7, 2, dtype=torch.float64, requires_grad=True)
    compare_module(model, (context,))


@pytest.mark.parametrize(
    ("attention", "input_feeding"),
    [
        ("general", True),
        pytest.param("additive", False, marks=SLOW),
        pytest.param("none", True, marks=SLOW),
    ],
)
def test_seq2seq_teacher_forcing_compiles(attention, input_feeding):
    """Logits and attention weights; the source padded past its lengths."""
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        embedding_size=6,
        dropout=0.0,
        encoder=RecurrentConfig(cell="lstm", hidden_size=4, bidirectional=True),
        decoder=RecurrentConfig(cell="lstm", hidden_size=8),
        attention=attention,
        input_feeding=input_feeding,
    )
    model = Seq2Seq(config, VOCABULARY, 9).double()
    source, lengths = tokens(3, 5), torch.tensor([5, 2, 3])
    source[torch.arange(5).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    compare_module(model, (source, lengths, tokens(3, 4, 9, seed=2)))


def pointer_network() -> PointerNetwork:
    torch.manual_seed(0)
    config = PointerNetworkConfig(
        embedding_size=6,
        recurrent=RecurrentConfig(hidden_size=8),
        attention_size=7,
        glimpses=1,
        end_position=True,
    )
    return PointerNetwork(config, 2).double()


POINTER_LENGTHS = torch.tensor([4, 2, 3])
POINTER_TARGETS = torch.tensor([[2, 1, 4, 3, 0], [2, 1, 0, -1, -1], [3, 1, 2, 0, -1]])


def test_pointer_network_teacher_forcing_compiles():
    inputs = torch.rand(3, 4, 2, dtype=torch.float64, requires_grad=True)
    compare_module(pointer_network(), (inputs, POINTER_LENGTHS, POINTER_TARGETS))


def test_compiled_pointer_target_check_raises_in_graph():
    """A target past its example's length: ValueError in eager, an in-graph assert compiled."""
    torch._dynamo.reset()
    model = pointer_network()
    inputs = torch.rand(3, 4, 2, dtype=torch.float64)
    targets = POINTER_TARGETS.clone()
    targets[1, 0] = 3  # example 1 has 2 elements
    message = "target_positions: expected -1 .padding., 0 .the end., or an element position"
    with pytest.raises(ValueError, match=message):
        model(inputs, POINTER_LENGTHS, targets)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(inputs, POINTER_LENGTHS, POINTER_TARGETS)
    with pytest.raises(RuntimeError, match=message):
        compiled(inputs, POINTER_LENGTHS, targets)


def crnn() -> CRNN:
    torch.manual_seed(0)
    recurrent = RecurrentConfig(hidden_size=6, bidirectional=True)
    config = CRNNConfig(channels=4, recurrent=recurrent, dropout=0.0)
    return CRNN(config, 11, 12).double()


def test_crnn_compiles():
    """Log-probabilities for CTC of images padded past their widths (train-mode batch norm)."""
    images = torch.rand(3, 12, 16, dtype=torch.float64, requires_grad=True)
    compare_module(crnn(), (images, torch.tensor([16, 9, 12])))


def test_compiled_crnn_width_check_raises_in_graph():
    torch._dynamo.reset()
    model = crnn().eval()
    images = torch.rand(3, 12, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="widths must be .* at most W = 16"):
        model(images, torch.tensor([16, 17, 12]))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(images, torch.tensor([16, 9, 12]))
    with pytest.raises(RuntimeError, match="widths must be .* at most W = 16"):
        compiled(images, torch.tensor([16, 17, 12]))


@pytest.mark.parametrize(
    "config",
    [
        ImageClassifierConfig(cell="gru", hidden_size=8),
        ImageClassifierConfig(hidden_size=8, num_heads=2, num_directions=2),
    ],
    ids=["rows-gru", "plstm"],
)
def test_image_classifier_compiles(config):
    torch.manual_seed(0)
    model = ImageClassifier(config, (6, 6, 1), 10).double()
    images = torch.rand(2, 6, 6, 1, dtype=torch.float64, requires_grad=True)
    compare_module(model, (images,))


@pytest.mark.parametrize(
    ("depth", "num_blocks"),
    [
        pytest.param(DepthConfig(), 2, id="plain", marks=SLOW),
        pytest.param(
            DepthConfig(recursion="relaxed", max_steps=2, recursive=RecursiveConfig(lora_rank=2)),
            1,
            id="relaxed",
        ),
        pytest.param(DepthConfig(recursion="mor", max_steps=2), 1, id="mor-expert"),
        pytest.param(
            DepthConfig(
                recursion="mor", max_steps=3, mixture=MixtureOfRecursionsConfig(routing="token")
            ),
            1,
            id="mor-token",
            marks=SLOW,
        ),
    ],
)
@pytest.mark.parametrize("training", [True, pytest.param(False, marks=SLOW)], ids=["train", "eval"])
def test_transformer_language_model_compiles(depth, num_blocks, training):
    """Logits, KV caches and the router losses (MoR in training mode)."""
    if not training and depth.recursion != "mor":
        pytest.skip("training and eval mode differ only in MoR's routing")
    torch.manual_seed(0)
    config = SequenceModelConfig(
        model_size=8, num_blocks=num_blocks, mixer="attention", num_heads=2
    )
    config.depth = depth
    model = TransformerLanguageModel(config, VOCABULARY).double().train(training)
    if depth.recursion == "relaxed":  # nonzero LoRA, so each effective layer differs
        for parameter in model.network.depth.parameters():
            torch.nn.init.normal_(parameter, std=0.1)
    compare_module(WithAuxiliaryLoss(model), (tokens(),))


@pytest.mark.parametrize(
    ("mixer", "act", "bias"),
    [
        ("attention", True, 0.5),
        pytest.param("gru", True, 0.5, marks=SLOW),
        pytest.param("attention", False, 0.0, marks=SLOW),
    ],
)
def test_universal_transformer_compiles(mixer, act, bias):
    """ACT halts positions at different depth steps here (checked): the compiled graph runs
    every step with masks, as eager does; the ponder cost is compared too."""
    depth = DepthConfig(recursion="universal", max_steps=3, act=act, halting_bias=bias)
    settings: dict[str, Any] = {"mixer": "attention"}
    if mixer != "attention":
        settings = {"recurrent": RecurrentConfig(cell=mixer, hidden_size=8)}
    model = sequence_model(num_blocks=1, depth=depth, **settings)
    lengths = torch.tensor([6, 5, 6])
    compare_module(WithAuxiliaryLoss(model), (tokens(), None, lengths))
    if act:
        assert model.depth is not None and model.depth.latest_steps is not None
        assert model.depth.latest_steps[lengths > 5].unique().numel() > 1


@pytest.mark.parametrize("act", [True, pytest.param(False, marks=SLOW)])
def test_universal_encoder_decoder_compiles(act):
    """Two depth steps, in which ACT halts some target positions after the first (checked)."""
    torch.manual_seed(0)
    depth = DepthConfig(recursion="universal", max_steps=2, act=act, halting_bias=5.0)
    model = UniversalEncoderDecoder(VOCABULARY, 9, depth, model_size=8, num_heads=2).double()
    source, lengths = tokens(), torch.tensor([6, 2, 4])
    compare_module(WithAuxiliaryLoss(model), (source, tokens(3, 5, 9, seed=2), lengths))
    if act:
        assert model.decoder_depth.latest_steps is not None
        assert model.decoder_depth.latest_steps.unique().numel() > 1
