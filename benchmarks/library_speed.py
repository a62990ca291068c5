"""What a plain script gets: imports rnnkit, calls layers, no rnnkit.memory call.

    python benchmarks/library_speed.py [--repeats 5]

Prints, per configuration of issue 10 item 8 (float32, forward+backward), the rnnkit and
torch.nn times measured in this one process and their ratio (torch time / rnnkit time).
``rnnkit bench library`` runs the same measurement in fresh processes with the allocator
setting off and on.
"""

from __future__ import annotations

import argparse

from rnnkit.bench.library import CONFIGURATIONS, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    for name, configuration in CONFIGURATIONS.items():
        result = measure(name, repeats)
        ratio = result["torch_s"] / result["rnnkit_s"]
        print(
            f"{name}: rnnkit {result['rnnkit_s']:.3f} s, torch.nn {result['torch_s']:.3f} s, "
            f"ratio {ratio:.2f} (target {configuration[-1]}x)"
        )


if __name__ == "__main__":
    main()
