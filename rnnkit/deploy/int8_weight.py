"""An int8 weight matrix whose products (``functional.linear``) run torch's dynamic int8 kernel.

``Int8DynamicWeight`` stands in for a cell's float weight matrix ``W (out, in)`` after
quantization (``rnnkit.deploy.quantize``): it stores ``W`` as int8 with one scale per output
row (symmetric, zero point 0; the fbgemm / x86 packed layout) and reports the float ``shape``,
``dtype`` and ``device`` of the weight it replaces, so a cell's code runs unchanged:

- ``functional.linear(x, W, b)`` with ``x`` float32 runs ``quantized::linear_dynamic``, the
  kernel of torch's dynamic ``nn.quantized.dynamic.Linear``: ``x`` is quantized on the fly
  (7 bits, ``reduce_range`` as torch sets it for x86), multiplied in int8 with int32
  accumulation, and the result is float; ``b`` is added in float. Unlike torch's Linear, each
  row of ``x`` (each token) gets its own activation scale: rows are divided by their largest
  magnitude before the kernel and the products multiplied back after. One scale per call let
  a few large rows (late steps of a growing state) swamp the rest: on random 2-layer GLA and
  DeltaNet layers per-row scales halve the output error (10% -> 6% and 9% -> 5% of the mean
  output), for two elementwise passes over ``x`` and the output. No gradient flows through
  this product (inference only, like torch's quantized modules);
- shape, dtype and device queries (``W.shape``, ``W.size(0)``, ``W.dtype``, ...) read the
  metadata and never touch the values;
- ``W.detach()`` is ``W`` itself (so ``state_dict`` keeps the int8 weight), and so are
  conversions that change nothing (``W.cpu()``, ``W.float()``, ``W.to("cpu")``: so
  ``model.cpu()`` keeps it); a real conversion (``model.double()``) dequantizes it for good;
- ``W.t()`` is an ``Int8WeightTranspose`` (no copy): ``torch.addmm(b, x, W.t())`` and
  ``x @ W.t()`` (how the LSTM, GRU and Elman cells write their recurrence) run the same int8
  product as ``functional.linear(x, W, b)``;
- any other use (``W @ h``, ``W * 2``, ``torch.stack([W])``, the fused strategy's kernels that
  read the weight as an array) sees the dequantized float matrix, computed afresh for that
  use; ``int8_uses`` and ``dequantized_uses`` count the two kinds.

``torch.save`` stores the int8 values and their scales (a quantized tensor, one byte per value)
and ``torch.load(..., weights_only=False)`` packs them again; ``copy.deepcopy`` copies them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional
from torch.utils._pytree import tree_map

# Tensor attributes and methods that read only metadata: answered without dequantizing.
METADATA_FUNCTIONS: frozenset[Callable] = frozenset(
    {
        Tensor.shape.__get__,  # type: ignore[attr-defined]
        Tensor.dtype.__get__,  # type: ignore[attr-defined]
        Tensor.device.__get__,  # type: ignore[attr-defined]
        Tensor.ndim.__get__,  # type: ignore[attr-defined]
        Tensor.layout.__get__,  # type: ignore[attr-defined]
        Tensor.requires_grad.__get__,  # type: ignore[attr-defined]
        Tensor.is_cuda.__get__,  # type: ignore[attr-defined]
        Tensor.is_sparse.__get__,  # type: ignore[attr-defined]
        Tensor.is_quantized.__get__,  # type: ignore[attr-defined]
        Tensor.is_meta.__get__,  # type: ignore[attr-defined]
        Tensor.is_leaf.__get__,  # type: ignore[attr-defined]
        Tensor.grad.__get__,  # type: ignore[attr-defined,union-attr]
        Tensor.size,
        Tensor.dim,
        Tensor.numel,
        Tensor.nelement,
        Tensor.element_size,
        Tensor.is_floating_point,
        Tensor.is_complex,
        Tensor.get_device,
        Tensor.__len__,
    }
)
LINEAR_FUNCTIONS: frozenset[Callable] = frozenset({functional.linear, torch._C._nn.linear})


def _quantized_per_row(weight: Tensor) -> Tensor:
    """``weight (out, in)`` float -> a per-row symmetric ``torch.qint8`` tensor (scale
    ``max |row| / 127``, zero point 0), as torch's per-channel dynamic quantization."""
    matrix = weight.detach().float()
    scales = (matrix.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero_points = torch.zeros(matrix.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.quantize_per_channel(matrix, scales, zero_points, 0, torch.qint8)


class _Int8Tensor(Tensor):
    """What both int8 stand-ins answer alike: metadata without touching the values, ``detach``
    as themselves, and operators reached below ``__torch_function__`` (C++ callers) on the
    float matrix."""

    @classmethod
    def _common(cls, func: Callable, args: tuple, kwargs: dict) -> Any:
        """The answer to ``func`` when it is a metadata query or ``detach``, else
        ``NotImplemented``."""
        if func in METADATA_FUNCTIONS:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func is Tensor.detach and len(args) == 1 and isinstance(args[0], cls):
            return args[0]
        return NotImplemented

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls,
        func: Callable,
        types: Any,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        return _dequantized_call(func, args, kwargs or {}, disable=False)


class Int8DynamicWeight(_Int8Tensor):
    """A float weight matrix ``(out, in)`` stored as int8, see the module docstring.

    Build one with ``Int8DynamicWeight.from_float(weight)``; ``quantized`` is the
    ``torch.qint8`` tensor (per-row scales), ``dequantize()`` the float matrix it stands for.
    """

    quantized: Tensor
    packed: Any
    int8_uses: int
    dequantized_uses: int

    @staticmethod
    def __new__(cls, quantized: Tensor, dtype: torch.dtype = torch.float32) -> Int8DynamicWeight:
        return Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, quantized.shape, dtype=dtype, device=quantized.device, requires_grad=False
        )

    def __init__(self, quantized: Tensor, dtype: torch.dtype = torch.float32) -> None:
        if quantized.dim() != 2 or quantized.dtype != torch.qint8:
            raise ValueError(
                f"Int8DynamicWeight takes a 2-D torch.qint8 tensor, got {quantized.dim()}-D "
                f"{quantized.dtype}"
            )
        self.quantized = quantized
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.int8_uses = 0
        self.dequantized_uses = 0

    @classmethod
    def from_float(cls, weight: Tensor) -> Int8DynamicWeight:
        """``weight (out, in)`` float32 on the CPU -> its int8 stand-in."""
        if weight.dim() != 2 or weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError(
                "Int8DynamicWeight quantizes 2-D float32 CPU weights, got "
                f"{weight.dim()}-D {weight.dtype} on {weight.device}"
            )
        return cls(_quantized_per_row(weight), weight.dtype)

    def dequantize(self) -> Tensor:  # type: ignore[override]
        """The float ``(out, in)`` matrix the int8 values and scales stand for."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.quantized.dequantize().to(self.dtype)

    def linear(self, inputs: Tensor, bias: Tensor | None = None) -> Tensor:
        """``inputs (..., in)`` float32 -> ``(..., out)``: the int8 dynamic product, plus bias.

        One activation scale per row (token), not per call: each row is divided by its
        largest magnitude before the kernel's per-tensor quantization and the product
        multiplied back after; a single row (generation) needs no division.
        """
        self.int8_uses += 1
        with torch._C.DisableTorchFunctionSubclass():
            matrix = inputs.reshape(-1, inputs.shape[-1])
            if matrix.shape[0] == 1:
                outputs = torch.ops.quantized.linear_dynamic(matrix.contiguous(), self.packed, True)
            else:
                row_scales = matrix.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30)
                normalized = (matrix / row_scales).contiguous()
                outputs = torch.ops.quantized.linear_dynamic(normalized, self.packed, True)
                outputs = outputs * row_scales
            outputs = outputs.reshape(*inputs.shape[:-1], outputs.shape[-1])
            return outputs if bias is None else outputs + bias

    def storage_bytes(self) -> int:
        """Bytes of the int8 values and their per-row scales and zero points (float64, int64)."""
        return self.numel() + 16 * self.shape[0]

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"Int8DynamicWeight(shape={tuple(self.shape)}, int8 per-row scales)"

    def __deepcopy__(self, memo: dict) -> Int8DynamicWeight:
        copied = type(self)(self.quantized.clone(), self.dtype)
        memo[id(self)] = copied
        return copied

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (_rebuild, (self.quantized, self.dtype))

    @classmethod
    def __torch_function__(
        cls,
        func: Callable,
        types: Any,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in LINEAR_FUNCTIONS:
            result = _int8_linear(*args, **kwargs)
            if result is not None:
                return result
        answer = cls._common(func, args, kwargs)
        if answer is not NotImplemented:
            return answer
        if func in CONVERSION_FUNCTIONS and _converts_to_itself(func, args, kwargs):
            return args[0]  # model.cpu(), model.float(), model.to("cpu") keep it int8
        if func in TRANSPOSE_FUNCTIONS and _is_plain_transpose(func, args, kwargs):
            return Int8WeightTranspose(args[0])
        return _dequantized_call(func, args, kwargs)


class Int8WeightTranspose(_Int8Tensor):
    """``W.t()`` of an ``Int8DynamicWeight`` ``W (out, in)``: shape ``(in, out)``, no copy.

    ``torch.addmm(b, x, W.t())``, ``torch.mm(x, W.t())``, ``torch.matmul(x, W.t())`` and
    ``x @ W.t()`` run as ``W``'s int8 ``linear(x, b)`` (the form the LSTM, GRU and Elman cells
    write their recurrence in); ``.t()`` gives ``W`` back; any other use dequantizes.
    """

    base: Int8DynamicWeight

    @staticmethod
    def __new__(cls, base: Int8DynamicWeight) -> Int8WeightTranspose:
        shape = (base.shape[1], base.shape[0])
        return Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, shape, dtype=base.dtype, device=base.device, requires_grad=False
        )

    def __init__(self, base: Int8DynamicWeight) -> None:
        self.base = base

    def dequantize(self) -> Tensor:  # type: ignore[override]
        """The float ``(in, out)`` matrix."""
        return self.base.dequantize().t()

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"Int8WeightTranspose(shape={tuple(self.shape)})"

    @classmethod
    def __torch_function__(
        cls,
        func: Callable,
        types: Any,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        answer = cls._common(func, args, kwargs)
        if answer is not NotImplemented:
            return answer
        if func in TRANSPOSE_FUNCTIONS and _is_plain_transpose(func, args, kwargs):
            return args[0].base
        if func in PRODUCT_FUNCTIONS and not kwargs and len(args) == 2:
            result = _int8_linear(args[0], _base(args[1]))
            if result is not None:
                return result
        if func is torch.addmm and not kwargs and len(args) == 3:
            bias = args[0]
            if isinstance(bias, Tensor) and not isinstance(bias, INT8_TYPES):
                result = _int8_linear(args[1], _base(args[2]), bias)
                if result is not None:
                    return result
        return _dequantized_call(func, args, kwargs)


INT8_TYPES = (Int8DynamicWeight, Int8WeightTranspose)
TRANSPOSE_FUNCTIONS: frozenset[Callable] = frozenset(
    {Tensor.t, torch.t, Tensor.T.__get__, Tensor.mT.__get__}  # type: ignore[attr-defined]
)
PRODUCT_FUNCTIONS: frozenset[Callable] = frozenset(
    {torch.mm, torch.matmul, Tensor.mm, Tensor.matmul, Tensor.__matmul__}
)


CONVERSION_FUNCTIONS: frozenset[Callable] = frozenset({Tensor.to, Tensor.cpu, Tensor.float})


def _converts_to_itself(func: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether the conversion ``func(weight, ...)`` keeps the weight's dtype and device (then
    it is the weight itself; a real conversion, to float64 or another device, dequantizes)."""
    if not args or not isinstance(args[0], Int8DynamicWeight):
        return False
    weight = args[0]
    with torch._C.DisableTorchFunctionSubclass():
        empty = torch.empty(0, dtype=weight.dtype, device=weight.device)
        converted = func(empty, *args[1:], **kwargs)
    return bool(converted.dtype == weight.dtype and converted.device == weight.device)


def _is_plain_transpose(func: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether ``func(*args, **kwargs)`` is the transpose of one int8 matrix, nothing more."""
    return len(args) == 1 and not kwargs and isinstance(args[0], INT8_TYPES)


def _base(value: Any) -> Any:
    """The ``Int8DynamicWeight`` behind a transpose, else None (no int8 product)."""
    return value.base if isinstance(value, Int8WeightTranspose) else None


def _dequantized_call(func: Callable, args: tuple, kwargs: dict, disable: bool = True) -> Any:
    """``func`` on the float matrices the int8 arguments stand for (each use counted)."""

    def dequantized(value: Any) -> Any:
        if isinstance(value, INT8_TYPES):
            owner = value.base if isinstance(value, Int8WeightTranspose) else value
            owner.dequantized_uses += 1
            return value.dequantize()
        return value

    args, kwargs = tree_map(dequantized, (args, kwargs))
    if not disable:
        return func(*args, **kwargs)
    with torch._C.DisableTorchFunctionSubclass():
        return func(*args, **kwargs)


def _int8_linear(
    input: Any, weight: Any, bias: Any = None, *extra: Any, **options: Any
) -> Tensor | None:
    """``functional.linear(input, weight, bias)`` as the int8 kernel when ``weight`` is the
    int8 stand-in and ``input`` a plain float32 CPU tensor; None for anything else (which
    then runs on the dequantized weight)."""
    if extra or options or not isinstance(weight, Int8DynamicWeight):
        return None
    if isinstance(input, INT8_TYPES) or isinstance(bias, INT8_TYPES):
        return None
    if not isinstance(input, Tensor) or input.dtype != torch.float32 or input.device.type != "cpu":
        return None
    if input.dim() == 0 or input.numel() == 0 or input.shape[-1] != weight.shape[1]:
        return None  # let torch raise its shape error on the float weight
    return weight.linear(input, bias)


def _rebuild(quantized: Tensor, dtype: torch.dtype) -> Int8DynamicWeight:
    """``torch.load``'s constructor for a saved ``Int8DynamicWeight``."""
    return Int8DynamicWeight(quantized, dtype)
