"""Error rates of decoded sequences against their references.

Edit (Levenshtein 1966) distance between a reference r and a hypothesis h: the fewest
substitutions, insertions and deletions turning r into h, by the dynamic programme

    D[i][0] = i,  D[0][j] = j,
    D[i][j] = min(D[i-1][j] + 1, D[i][j-1] + 1, D[i-1][j-1] + [r_i != h_j]).

Over a set of N pairs (the usual speech and handwriting measures, Graves et al. 2006):

    label error rate     LER = sum_n D(r_n, h_n) / sum_n |r_n|
    sequence error rate  SER = (1/N) sum_n [h_n != r_n]
    exact accuracy           = 1 - SER

LER can exceed 1 (a hypothesis with many insertions).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    """Levenshtein distance: substitutions, insertions and deletions all cost 1."""
    previous = list(range(len(hypothesis) + 1))
    for i, reference_item in enumerate(reference, start=1):
        current = [i]
        for j, hypothesis_item in enumerate(hypothesis, start=1):
            substitution = previous[j - 1] + (reference_item != hypothesis_item)
            current.append(min(previous[j] + 1, current[j - 1] + 1, substitution))
        previous = current
    return previous[-1]


def _check_pairs(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(
            f"references and hypotheses must pair up: got {len(references)} references "
            f"and {len(hypotheses)} hypotheses"
        )
    if not references:
        raise ValueError("references must hold at least one sequence, got none")


def label_error_rate(
    references: Sequence[Sequence[Hashable]], hypotheses: Sequence[Sequence[Hashable]]
) -> float:
    """Total edit distance over the total number of reference labels."""
    _check_pairs(references, hypotheses)
    total_labels = sum(len(reference) for reference in references)
    if total_labels == 0:
        raise ValueError("references must hold at least one label in total, got only empty ones")
    edits = sum(
        edit_distance(reference, hypothesis)
        for reference, hypothesis in zip(references, hypotheses, strict=True)
    )
    return edits / total_labels


def sequence_error_rate(
    references: Sequence[Sequence[Hashable]], hypotheses: Sequence[Sequence[Hashable]]
) -> float:
    """The fraction of hypotheses that differ from their reference anywhere."""
    _check_pairs(references, hypotheses)
    wrong = sum(
        list(reference) != list(hypothesis)
        for reference, hypothesis in zip(references, hypotheses, strict=True)
    )
    return wrong / len(references)


def exact_sequence_accuracy(
    references: Sequence[Sequence[Hashable]], hypotheses: Sequence[Sequence[Hashable]]
) -> float:
    """The fraction of hypotheses equal to their reference: 1 - sequence error rate."""
    return 1.0 - sequence_error_rate(references, hypotheses)
