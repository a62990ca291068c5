"""The compiled CPU kernels as ``torch.library`` custom ops, so ``torch.compile(fullgraph=True)``
traces through them (Dynamo cannot trace Numba calls, thread pools or locks).

One pair of ops serves every kernel: ``rnnkit::opaque(target, tensors, text) -> list[Tensor]``
runs a registered target (the same eager code path: the kernel's ``autograd.Function`` under
``no_grad``, so compiled and eager give the same numbers) and ``rnnkit::opaque_backward(target,
tensors, text, grads) -> list[Tensor]`` its backward. Both have fake (meta) implementations:
forward output shapes come from the target's ``fake``; backward gradients have the shapes of
the inputs. ``tensors`` is a flat list (``None`` where an optional tensor is absent) and
``text`` the non-tensor arguments, both encoded by the target's caller.

The backward recomputes the forward before running the kernel's backward (the kernel's saved
buffers, sized by the thread split, are not op outputs): under ``torch.compile`` a training step
costs one extra forward pass of the kernel. A target with its own ``backward`` (Newton's
adjoint) gets the forward's outputs instead and recomputes nothing. Eager runs do not go
through these ops.

Targets (``register_target``): ``fused`` (``strategies/fused.py``), ``scan`` (the Numba diagonal
scan), ``gated_scan`` (minGRU/minLSTM, ``gated_scan_cpu.py``), ``native`` (torch's ``_VF``
recurrent kernels, whose host-side length packing runs inside the op).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

Tensors = list[Tensor | None]


@dataclass(frozen=True)
class Target:
    """``run(tensors, text)``: differentiable eager outputs; ``fake(tensors, text)``: empty
    outputs of the same shapes and dtypes (called on fake tensors); ``backward(tensors, text,
    grads, outputs)``, when given: the gradient of each tensor (None for none) from the forward's
    outputs, instead of autograd through a recomputed ``run``."""

    run: Callable[[Tensors, str], list[Tensor]]
    fake: Callable[[Tensors, str], list[Tensor]]
    functional: bool = False
    backward: Callable[[Tensors, str, list[Tensor], list[Tensor]], list[Tensor | None]] | None = (
        None
    )


TARGETS: dict[str, Target] = {}


def register_target(
    name: str,
    run: Callable,
    fake: Callable,
    functional: bool = False,
    backward: Callable | None = None,
) -> None:
    """Make ``name`` callable through ``rnnkit::opaque``. An op's implementation runs below
    autograd, where only ``autograd.Function`` records a graph: a target made of plain torch
    operators says ``functional=True`` and is differentiated by ``torch.func.vjp`` instead, and
    a target with its own gradient formula gives ``backward``."""
    TARGETS[name] = Target(run, fake, functional, backward)


# the dispatch keys a plain eager call runs with (taken at import, outside any transform)
_EAGER_KEYS = (
    torch._C._dispatch_tls_local_include_set(),
    torch._C._dispatch_tls_local_exclude_set(),
)


@contextmanager
def _eager_dispatch() -> Iterator[None]:
    """Run an op's implementation with the dispatch keys of a plain eager call. Inside a custom
    op, ``torch.library`` excludes the autograd keys, and a compiled graph's runtime also the
    functorch and view keys: ``torch.func`` transforms (Newton's ``vmap(jacrev(...))``) then
    fail on view operators ("Cannot access storage of TensorWrapper") and ``autograd.grad``
    finds no graph. The op's inputs are plain tensors, so nothing outside is bypassed."""
    with torch._C._ForceDispatchKeyGuard(*_EAGER_KEYS):
        yield


def _differentiable(tensor: Tensor | None) -> bool:
    return tensor is not None and (tensor.is_floating_point() or tensor.is_complex())


def _restore(tensors: list[Tensor], text: str) -> tuple[Tensors, str]:
    """``tensors`` with the placeholders ``call`` put for None back to None, and the target's
    own text. A None inside a tensor list argument turns the op's autograd off in this torch
    version, so ``call`` passes empty tensors and their positions in ``text``
    (``"0,3;rest"``)."""
    absent, _, rest = text.partition(";")
    restored: Tensors = list(tensors)
    for index in absent.split(",") if absent else ():
        restored[int(index)] = None
    return restored, rest


@torch.library.custom_op("rnnkit::opaque", mutates_args=())
def opaque(target: str, given: list[Tensor], text: str) -> list[Tensor]:
    """Run ``TARGETS[target]`` on ``tensors`` (see the module docstring)."""
    with _eager_dispatch(), torch.no_grad():
        outputs = TARGETS[target].run(*_restore(given, text))
    # fresh contiguous memory (as the fakes say): kernels may hand out workspace buffers, views
    return [output.clone(memory_format=torch.contiguous_format) for output in outputs]


@opaque.register_fake
def _opaque_fake(target: str, given: list[Tensor], text: str) -> list[Tensor]:
    fakes = TARGETS[target].fake(*_restore(given, text))
    return [torch.empty(fake.shape, dtype=fake.dtype, device=fake.device) for fake in fakes]


@torch.library.custom_op("rnnkit::opaque_backward", mutates_args=())
def opaque_backward(
    target: str, given: list[Tensor], text: str, grads: list[Tensor], outputs: list[Tensor]
) -> list[Tensor]:
    """Gradients of ``TARGETS[target]`` for each floating tensor (an empty tensor for the
    others): by the target's own ``backward`` from the forward's ``outputs`` where it has one,
    else by the kernel's backward after recomputing its forward (``outputs`` empty)."""
    tensors, own_text = _restore(given, text)
    if TARGETS[target].functional:
        return _functional_backward(target, tensors, own_text, grads)
    own_backward = TARGETS[target].backward
    if own_backward is not None:
        with _eager_dispatch():
            found_by_tensor = own_backward(tensors, own_text, grads, outputs)
        return [
            torch.empty(0)
            if tensor is None or not _differentiable(tensor)
            else torch.zeros_like(tensor, memory_format=torch.contiguous_format)
            if grad is None
            else grad.clone(memory_format=torch.contiguous_format)
            for tensor, grad in zip(tensors, found_by_tensor, strict=True)
        ]
    with torch.enable_grad():
        leaves = [
            tensor.detach().requires_grad_()
            if tensor is not None and _differentiable(tensor)
            else tensor
            for tensor in tensors
        ]
        outputs = TARGETS[target].run(leaves, own_text)
        pairs = [
            (output, grad)
            for output, grad in zip(outputs, grads, strict=True)
            if output.requires_grad
        ]
        wanted = [leaf for leaf in leaves if leaf is not None and leaf.requires_grad]
        found: tuple[Tensor | None, ...] = ()
        if pairs and wanted:
            found = torch.autograd.grad(
                [output for output, _ in pairs],
                wanted,
                [grad for _, grad in pairs],
                allow_unused=True,
            )
    by_leaf = dict(zip(map(id, wanted), found, strict=False))
    result = []
    for tensor, leaf in zip(tensors, leaves, strict=True):
        if not _differentiable(tensor):
            result.append(torch.empty(0))
            continue
        assert tensor is not None and leaf is not None
        grad = by_leaf.get(id(leaf))
        result.append(
            torch.zeros_like(tensor)
            if grad is None
            else grad.clone(memory_format=torch.contiguous_format)
        )
    return result


def _functional_backward(
    target: str, tensors: Tensors, text: str, grads: list[Tensor]
) -> list[Tensor]:
    """``opaque_backward`` by ``torch.func.vjp`` (see ``register_target``)."""
    positions = [index for index, tensor in enumerate(tensors) if _differentiable(tensor)]

    def function(*floating: Tensor) -> list[Tensor]:
        arguments = list(tensors)
        for index, tensor in zip(positions, floating, strict=True):
            arguments[index] = tensor
        return TARGETS[target].run(arguments, text)

    pullback = torch.func.vjp(function, *(tensors[index] for index in positions))[1]
    found = pullback(grads)
    result = [torch.empty(0) for _ in tensors]  # distinct: an op's returns may not alias
    for index, grad in zip(positions, found, strict=True):
        result[index] = grad.clone(memory_format=torch.contiguous_format)
    return result


@opaque_backward.register_fake
def _opaque_backward_fake(
    target: str, given: list[Tensor], text: str, grads: list[Tensor], outputs: list[Tensor]
) -> list[Tensor]:
    tensors, _ = _restore(given, text)
    return [
        torch.empty_like(tensor, memory_format=torch.contiguous_format)
        if _differentiable(tensor) and tensor is not None
        else torch.empty(0)
        for tensor in tensors
    ]


def _setup_context(ctx, inputs, output) -> None:
    target, given, text = inputs
    # a target with its own backward reads the outputs instead of recomputing them
    kept = list(output) if TARGETS[target].backward is not None else []
    ctx.save_for_backward(*given, *kept)
    ctx.layout = (target, text, len(given))
    ctx.outputs = [(tuple(item.shape), item.dtype, item.device) for item in output]


def _backward(ctx, grads):
    target, text, count = ctx.layout
    given, kept = list(ctx.saved_tensors[:count]), list(ctx.saved_tensors[count:])
    filled = [
        torch.zeros(shape, dtype=dtype, device=device) if grad is None else grad
        for grad, (shape, dtype, device) in zip(grads, ctx.outputs, strict=True)
    ]
    found = opaque_backward(target, given, text, filled, kept)
    tensors, _ = _restore(given, text)
    return (
        None,
        [
            grad if _differentiable(tensor) else None
            for tensor, grad in zip(tensors, found, strict=True)
        ],
        None,
    )


opaque.register_autograd(_backward, setup_context=_setup_context)


def encode_options(options: dict) -> tuple[Tensors, str]:
    """A dict of tensors, None and constants as (tensor slots, text): ``name`` for a tensor slot,
    ``name=b1``, ``name=i3``, ``name=f0.5``, ``name=stanh`` for constants."""
    tensors: Tensors = []
    entries = []
    for name, value in options.items():
        if value is None or isinstance(value, Tensor):
            tensors.append(value)
            entries.append(name)
        elif isinstance(value, bool):
            entries.append(name + ("=b1" if value else "=b0"))
        elif isinstance(value, int):
            entries.append(name + "=i" + str(value))
        elif isinstance(value, float):
            entries.append(name + "=f" + repr(value))
        else:
            entries.append(name + "=s" + str(value))
    return tensors, ",".join(entries)


def decode_options(tensors: Tensors, text: str) -> dict:
    """The inverse of ``encode_options``."""
    options: dict = {}
    slots = iter(tensors)
    for entry in text.split(",") if text else ():
        name, _, value = entry.partition("=")
        if not _:
            options[name] = next(slots)
        elif value[0] == "b":
            options[name] = value == "b1"
        elif value[0] == "i":
            options[name] = int(value[1:])
        elif value[0] == "f":
            options[name] = float(value[1:])
        else:
            options[name] = value[1:]
    return options


def call(target: str, tensors: Tensors, text: str = "") -> list[Tensor]:
    """``rnnkit::opaque``: what a compiled region calls instead of the kernel."""
    absent = ",".join(str(index) for index, tensor in enumerate(tensors) if tensor is None)
    given = [torch.empty(0) if tensor is None else tensor for tensor in tensors]
    return torch.ops.rnnkit.opaque(target, given, absent + ";" + text)


__all__ = ["TARGETS", "call", "decode_options", "encode_options", "register_target"]
