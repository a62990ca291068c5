"""Decoding speed: one whole ``Recurrent.forward`` per token against one ``Recurrent.step``.

Both paths run in the same process on the same model (a randomly initialized character
language model of the default config), so their ratio is fair on a shared machine.

    python benchmarks/decoding.py --tokens 2000
"""

from __future__ import annotations

import argparse
import time

import torch

from rnnkit.models.language_model import LanguageModel, LanguageModelConfig


def by_forward(model: LanguageModel, prompt: torch.Tensor, tokens: int) -> None:
    logits, state = model(prompt.unsqueeze(0))
    for _ in range(tokens):
        token = logits[:, -1].argmax(-1)
        logits, state = model(token.view(1, 1), state)


def by_step(model: LanguageModel, prompt: torch.Tensor, tokens: int) -> None:
    logits, state = model(prompt.unsqueeze(0))
    last = logits[:, -1]
    for _ in range(tokens):
        embedded = model.embedding(last.argmax(-1))  # (1, E)
        outputs, state = model.recurrent.step(embedded, state)  # (1, O)
        last = model.head(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(), vocabulary_size=96).eval()
    prompt = torch.randint(0, 96, (16,))
    with torch.no_grad():
        for name, run in [("forward per token", by_forward), ("layer step", by_step)]:
            best = float("inf")
            for _ in range(arguments.repeats):
                start = time.perf_counter()
                run(model, prompt, arguments.tokens)
                best = min(best, time.perf_counter() - start)
            print(f"{name:<18} {arguments.tokens / best:>10.0f} characters/s")


if __name__ == "__main__":
    main()
