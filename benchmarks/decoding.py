"""Decoding speed: one whole ``Recurrent.forward`` per token against one ``Recurrent.step``.

Both paths run in one process on the same models, interleaved round by round, with one torch
thread, so their ratio is fair on a shared machine. Reported: the median over rounds of the
time per token (character language model of the default config, random weights) and of the
sentences per second of seq2seq beam search (default Seq2SeqConfig, random weights, sources of
``--source-length`` random tokens as in the reverse task).

    python benchmarks/decoding.py --tokens 500 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.nn import Recurrent


def forward_one_step(layer: Recurrent):
    """The path before ``step``: a whole forward over a sequence of one token."""

    def step(inputs, state=None):
        outputs, new_state = Recurrent.forward(layer, inputs.unsqueeze(1), state)
        return outputs[:, 0], new_state

    return step


def sample(model: LanguageModel, prompt: torch.Tensor, tokens: int) -> None:
    """Greedy sampling as ``rnnkit.decoding.sampling.generate`` runs it (step per token)."""
    logits, state = model(prompt.unsqueeze(0))
    last = logits[:, -1]
    for _ in range(tokens):
        last, state = model.step(last.argmax(-1), state)


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def compare(layer: Recurrent, run: Callable[[], None], rounds: int) -> dict[str, list[float]]:
    """Seconds per run of each path, the paths alternating round by round."""
    times: dict[str, list[float]] = {"forward per token": [], "layer step": []}
    for _ in range(rounds):
        for name in times:
            if name == "forward per token":
                layer.step = forward_one_step(layer)  # type: ignore[method-assign]
            try:
                times[name].append(timed(run))
            finally:
                layer.__dict__.pop("step", None)
    return times


def report(times: dict[str, list[float]], units: float, unit: str, per: str) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        if per == "time":
            print(f"  {name:<18} {seconds / units * 1e6:>9.1f} us/{unit}")
        else:
            print(f"  {name:<18} {units / seconds:>9.1f} {unit}/s")
    ratio = medians["forward per token"] / medians["layer step"]
    print(f"  step speed-up: {ratio:.2f}x (median over {len(next(iter(times.values())))} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--source-length", type=int, default=12)
    parser.add_argument("--beam-width", type=int, default=4)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    language_model = LanguageModel(LanguageModelConfig(), vocabulary_size=96).eval()
    prompt = torch.randint(0, 96, (16,))
    seq2seq = Seq2Seq(Seq2SeqConfig(), 16, 16).eval()
    source = torch.randint(3, 16, (arguments.sentences, arguments.source_length))
    lengths = torch.full((arguments.sentences,), arguments.source_length)
    with torch.no_grad():
        print("character language model, greedy sampling:")
        times = compare(
            language_model.recurrent,
            lambda: sample(language_model, prompt, arguments.tokens),
            arguments.rounds,
        )
        report(times, arguments.tokens, "token", "time")
        print(f"seq2seq beam search (width {arguments.beam_width}):")
        times = compare(
            seq2seq.decoder,
            lambda: seq2seq.beam_search(
                source, lengths, 1, 2, arguments.source_length + 2, arguments.beam_width
            ),
            arguments.rounds,
        )
        report(times, arguments.sentences, "sentences", "rate")


if __name__ == "__main__":
    main()
