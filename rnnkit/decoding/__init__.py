"""Decoding: sampling with temperature and top-k, greedy (beam search, CTC later)."""

from rnnkit.decoding.sampling import generate, next_token

__all__ = ["generate", "next_token"]
