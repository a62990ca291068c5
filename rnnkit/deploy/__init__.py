"""Deployment: export with explicit state (ONNX) and int8 dynamic quantization for CPU.

``torch.compile(model, fullgraph=True)`` (backends ``aot_eager`` and ``inductor``, CPU) works
for every layer and model with the strategies ``sequential``, ``scan`` (every CPU
implementation), ``fused`` and ``native``: the compiled CPU kernels (Numba) and torch's ``_VF``
recurrent kernels run as the ``rnnkit::opaque`` custom op with fake implementations and autograd
(``rnnkit/strategies/kernels/custom_ops.py``; a compiled training step runs the kernel's forward
once more in the backward). Compiled equals eager (``tests/deploy/test_compile.py``). Not
supported under compile: the Newton strategies (their convergence loop branches on the
residual), ``native`` with ``lengths`` (raises; use ``fused``), ``resets`` with ``native`` (its
segments need host values), Triton strategies (untested, no GPU). Value checks (NaN inputs,
lengths out of range) become in-graph asserts that raise ``RuntimeError`` when the graph runs.
Compile time and speed-up: ``benchmarks/compile_speed.py``.
"""

from rnnkit.deploy.export import StateGraph, export_onnx
from rnnkit.deploy.quantize import quantize_int8
from rnnkit.deploy.traced import ExportError

__all__ = ["ExportError", "StateGraph", "export_onnx", "quantize_int8"]
