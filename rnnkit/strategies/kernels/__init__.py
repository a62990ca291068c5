"""The diagonal linear scan ``h_t = a_t * h_{t-1} + b_t`` and its implementations.

All take ``a, b (B, T, N)`` (real or complex; ``a`` may broadcast against ``b``), an optional
``initial (B, N)`` and ``reverse``, and return ``h (B, T, N)`` with gradients for a, b, initial:

- ``loop``: the reference (``reference.py``), autograd through every step;
- ``chunked``: chunked parallel form in PyTorch, any device (``chunked.py``);
- ``compiled``: Numba on the CPU with an explicit backward scan (``numba_cpu.py``);
- ``triton``: Triton on CUDA GPUs (``triton_gpu.py``), imported only when used.

Under ``torch.compile`` the ``compiled`` scan runs as the ``rnnkit::opaque`` custom op
(``custom_ops.py``), target ``scan``.

``auto`` rule (``choose_implementation``): ``triton`` for CUDA tensors when Triton imports,
``compiled`` for CPU tensors when Numba imports, else ``chunked`` (said once as a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from rnnkit.strategies.kernels import custom_ops, numba_cpu
from rnnkit.strategies.kernels.autograd import differentiable
from rnnkit.strategies.kernels.chunked import scan_chunked
from rnnkit.strategies.kernels.reference import scan_loop

Scan = Callable[..., Tensor]

_eager_float_scan = differentiable(numba_cpu.scan_compiled_raw, numba_cpu.scan_compiled_backward)


def _compiled_float_scan(a: Tensor, b: Tensor, initial: Tensor | None, reverse: bool) -> Tensor:
    if not torch.compiler.is_compiling():
        return _eager_float_scan(a, b, initial, reverse)
    if initial is None:
        initial = torch.zeros_like(b[:, 0])
    return custom_ops.call("scan", [a, b, initial], "reverse" if reverse else "")[0]


custom_ops.register_target(
    "scan",
    lambda tensors, text: [_eager_float_scan(*tensors, text == "reverse")],
    lambda tensors, text: [torch.empty_like(tensors[1])],
)
# Numba has no bfloat16 or float16: those are computed in float32 and cast back (the cast is
# differentiable, so gradients come back in the input's dtype too).
HALF_DTYPES = (torch.bfloat16, torch.float16)
_warned: set[str] = set()


def _compiled_scan(a: Tensor, b: Tensor, initial: Tensor | None = None, reverse: bool = False):
    if b.dtype not in HALF_DTYPES:
        return _compiled_float_scan(a, b, initial, reverse)
    wide = None if initial is None else initial.float()
    return _compiled_float_scan(a.float(), b.float(), wide, reverse).to(b.dtype)


def _triton_scan(a: Tensor, b: Tensor, initial: Tensor | None = None, reverse: bool = False):
    from rnnkit.strategies.kernels import triton_gpu

    return differentiable(triton_gpu.scan_triton_raw)(a, b, initial, reverse)


SCAN_IMPLEMENTATIONS: dict[str, Scan] = {
    "loop": scan_loop,
    "chunked": scan_chunked,
    "compiled": _compiled_scan,
    "triton": _triton_scan,
}


def unavailable_reason(implementation: str, device: torch.device) -> str | None:
    """Why ``implementation`` cannot run on ``device``, or None when it can."""
    if implementation == "compiled":
        if device.type != "cpu":
            return f"the compiled scan runs on the CPU, got {device}"
        return numba_cpu.available()
    if implementation == "triton":
        if device.type != "cuda":
            return f"the Triton scan runs on CUDA devices, got {device}"
        from rnnkit.strategies.kernels import triton_gpu

        return triton_gpu.available()
    return None


def choose_implementation(device: torch.device) -> str:
    """The implementation ``auto`` uses on ``device`` (see the module docstring)."""
    preferred = "triton" if device.type == "cuda" else "compiled"
    reason = unavailable_reason(preferred, device)
    if reason is None:
        return preferred
    if preferred not in _warned:
        _warned.add(preferred)
        warnings.warn(
            f"rnnkit: the {preferred} scan is unavailable ({reason}); using the slower "
            "chunked PyTorch scan",
            RuntimeWarning,
            stacklevel=3,
        )
    return "chunked"


def diagonal_scan(
    a: Tensor,
    b: Tensor,
    initial: Tensor | None = None,
    reverse: bool = False,
    implementation: str = "auto",
) -> Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` over ``(B, T, N)``; see the module docstring."""
    if implementation == "auto":
        implementation = choose_implementation(b.device)
    if implementation not in SCAN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown scan implementation {implementation!r}; "
            f"known: auto, {', '.join(SCAN_IMPLEMENTATIONS)}"
        )
    reason = unavailable_reason(implementation, b.device)
    if reason is not None:
        raise RuntimeError(f"scan implementation {implementation!r} cannot run: {reason}")
    if b.dim() != 3:
        raise ValueError(f"b must have shape (batch, time, width), got {tuple(b.shape)}")
    # conjugate and negative views: numpy and the kernels read memory as stored
    a, b = a.resolve_conj().resolve_neg().expand_as(b), b.resolve_conj().resolve_neg()
    if initial is not None:
        initial = initial.resolve_conj().resolve_neg()
    if initial is not None and tuple(initial.shape) != (b.shape[0], b.shape[2]):
        raise ValueError(
            f"initial must have shape {(b.shape[0], b.shape[2])}, got {tuple(initial.shape)}"
        )
    return SCAN_IMPLEMENTATIONS[implementation](a, b, initial, reverse)


__all__ = ["SCAN_IMPLEMENTATIONS", "choose_implementation", "diagonal_scan", "unavailable_reason"]
