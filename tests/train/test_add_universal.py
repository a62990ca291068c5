"""``rnnkit train add --model.kind=transformer|universal``: attention-only encoder-decoders on the
seq2seq tasks (training, decoding, ``rnnkit eval``, ACT's ponder statistics by difficulty), and
the ponder-by-difficulty evaluation of a Universal Transformer on parity."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit import cli
from rnnkit.data.algorithmic import BOS, EOS, PAD, draw_examples, make_batch, vocabulary_for
from rnnkit.models.depth.config import DepthConfig
from rnnkit.models.seq2seq import Seq2SeqConfig, TransformerSizes, build_seq2seq
from rnnkit.train.tasks import TASKS
from rnnkit.train.tasks.benchmark_task import ponder_by_difficulty
from rnnkit.train.tasks.seq2seq_tasks import carries
from rnnkit.train.tasks.supervised import TEST_STREAM, load_run

TINY = [
    "--model.transformer.model_size=16",
    "--model.transformer.num_heads=2",
    "--model.transformer.mlp_expansion=2",
    "--trainer.batch_size=8",
    "--data.validation_size=20",
    "--data.test_size=24",
    "--decoding.examples=2",
]
KINDS = {
    "transformer": ["--model.kind=transformer", "--model.transformer.num_layers=2"],
    "universal": ["--model.kind=universal", "--model.depth.max_steps=3"],
}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["transformer", "universal"])
def test_train_decode_and_eval_add_through_the_command_line(kind, tmp_path, capsys):
    run = tmp_path / kind
    arguments = ["train", "add", "--steps", "3", "--run-dir", str(run), *TINY, *KINDS[kind]]
    assert cli.main(arguments) == 0
    output = capsys.readouterr().out
    assert "validation examples (greedy):" in output and "exact sequences (greedy)" in output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = [record for record in records if record["kind"] == "validation"][-1]
    assert validation["step"] == 3
    universal = kind == "universal"
    assert ("ponder_steps_encoder" in validation) is universal
    assert cli.main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    for prefix in ("", "longer_"):
        assert 0.0 <= metrics[f"{prefix}beam_exact_accuracy"] <= 1.0
        assert (f"{prefix}ponder_steps_decoder" in metrics) is universal
    ponder = {key: value for key, value in metrics.items() if key.startswith("ponder_")}
    assert (run / "ponder.png").exists() is universal
    if universal:
        # operands of 1-7 digits (test and longer sets), carries 0 up to 7
        assert {f"ponder_encoder_by_length_{digits}" for digits in range(1, 8)} <= set(ponder)
        assert "ponder_decoder_by_carries_0" in ponder
        assert all(1.0 <= value <= 3.0 for value in ponder.values())
        assert (run / "ponder.png").stat().st_size > 0


def model(kind: str, layers: int = 3):
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        kind=kind,
        transformer=TransformerSizes(model_size=8, num_heads=2, mlp_expansion=2, num_layers=layers),
        depth=DepthConfig(max_steps=3, halting_bias=0.0),
    )
    return build_seq2seq(config, 14, 14).double().eval()


def add_batch(count: int = 5):
    examples = draw_examples("add", count, 1, 4, torch.Generator().manual_seed(3))
    return make_batch(examples, vocabulary_for("add"))


@pytest.mark.parametrize("kind", ["transformer", "universal"])
def test_decoding_step_by_step_equals_teacher_forcing_in_float64(kind):
    network, batch = model(kind), add_batch()
    with torch.no_grad():
        forced = torch.log_softmax(
            network(batch.source, batch.source_lengths, batch.target_input).logits, -1
        )
        state = network.encode(batch.source, batch.source_lengths)
        for position in range(batch.target_input.shape[1]):
            step, state = network.decoder_step(batch.target_input[:, position], state)
            torch.testing.assert_close(step, forced[:, position], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["transformer", "universal"])
def test_greedy_and_beam_search_score_their_outputs_as_teacher_forcing_does(kind):
    network, batch = model(kind), add_batch()
    greedy = network.greedy(batch.source, batch.source_lengths, BOS, EOS, 6)
    beam = network.beam_search(batch.source, batch.source_lengths, BOS, EOS, 6, beam_width=1)
    assert torch.equal(beam.best().tokens, greedy.tokens)
    wide = network.beam_search(batch.source, batch.source_lengths, BOS, EOS, 6, beam_width=3)
    for decoded in (greedy, wide.best()):
        inputs = torch.cat([torch.full((5, 1), BOS), decoded.tokens[:, :-1]], 1)
        with torch.no_grad():
            logits = network(batch.source, batch.source_lengths, inputs).logits
        chosen = torch.log_softmax(logits, -1).gather(2, decoded.tokens[..., None])[..., 0]
        width = decoded.tokens.shape[1]
        real = torch.arange(width)[None] < decoded.lengths[:, None]
        torch.testing.assert_close((chosen * real).sum(1), decoded.log_probs)
        assert bool((decoded.tokens[~real] == PAD).all())


def test_the_universal_transformer_has_the_one_layer_count_plus_the_halting_units():
    one_layer, four_layers, universal = (
        model("transformer", 1),
        model("transformer", 4),
        model("universal"),
    )
    blocks = sum(
        parameter.numel() for name, parameter in one_layer.named_parameters() if "_blocks." in name
    )
    # two halting units (W_h: 8 + b_h: 1) and their layer norms (8 + 8), encoder and decoder
    assert universal.num_parameters() == one_layer.num_parameters() + 2 * (9 + 16)
    assert four_layers.num_parameters() == one_layer.num_parameters() + 3 * blocks


def test_carries_of_the_column_addition():
    assert [carries(source) for source in ("123+456", "95+7", "999+1", "5+5", "0+0")] == [
        0, 2, 3, 1, 0,
    ]  # fmt: skip


def test_parity_eval_writes_the_ponder_steps_by_difficulty(tmp_path, capsys):
    run = tmp_path / "parity"
    arguments = [
        "train", "state-tracking", "--model.cell=attention", "--data.group=parity",
        "--steps", "2", "--model.model_size=16", "--model.num_heads=2", "--model.num_blocks=1",
        "--model.depth.recursion=universal", "--model.depth.max_steps=3",
        "--model.depth.halting_bias=0.0", "--data.train_length=8", "--trainer.batch_size=8",
        "--evaluation.sequences=16", "--evaluation.batch_size=5", "--run-dir", str(run),
    ]  # fmt: skip
    assert cli.main(arguments) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert (run / "ponder.png").stat().st_size > 0
    # the reference: every position of the longest held-out words, one word at a time
    _, task, _ = load_run(run, "state-tracking", TASKS["state-tracking"].config_type,
                          TASKS["state-tracking"].build)  # fmt: skip
    batch = task.problem.held_out(TEST_STREAM)[-1]
    length = batch.inputs.shape[1]  # 32 = 4 x 8: buckets of 4 positions
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for word in batch.inputs:
            task.model(word[None])
            steps = task.model.depth.latest_steps[0]
            ones = 0
            for position in range(length):
                ones += int(word[position] > 0)
                for name, value in (("length", position + 1), ("ones", ones)):
                    key = f"ponder_by_{name}_{-(-value // 4) * 4}"
                    sums.setdefault(key, []).append(float(steps[position]))
    expected = {key: sum(values) / len(values) for key, values in sums.items()}
    got = {key: value for key, value in metrics.items() if key.startswith("ponder_by_")}
    assert got == pytest.approx(expected)
    assert set(got) >= {f"ponder_by_length_{upper}" for upper in range(4, 33, 4)}
    assert ponder_by_difficulty(task) == pytest.approx(expected)
