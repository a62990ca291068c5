"""Deployment: export with explicit state (ONNX) and int8 dynamic quantization for CPU.

int8: ``quantize_int8`` rebuilds standard LSTM/GRU/Elman stacks as torch's dynamic quantized
layers and stores every other cell's product weights as ``Int8DynamicWeight``
(``int8_weight.py``); ``quantize_report`` lists each weight as int8 or float, and why.

``torch.compile(model, fullgraph=True)`` (backends ``aot_eager`` and ``inductor``, CPU) works
for every layer and model under every CPU strategy: the compiled CPU kernels (Numba), torch's
``_VF`` recurrent kernels and the Newton solves (whose loop stops on the residual's value) run
as the ``rnnkit::opaque`` custom op with fake implementations and autograd
(``rnnkit/strategies/kernels/custom_ops.py``, ``strategies/newton_op.py``; a compiled training
step runs the op's forward once more in its backward). ``native`` with ``lengths`` runs one
unpacked kernel call per distinct length there, and its ``resets`` cut segments inside the op.
Compiled equals eager for every (cell, strategy) pair and every model class (teacher-forced
forwards, ACT and routing included): ``tests/deploy/test_compile.py``,
``test_compile_models.py``. Not supported under compile, with a
clear error: ``resets`` with the matrix-state scans (gla, the delta rules: their segments have
data-dependent sizes; ``sequential`` compiles them). Triton strategies are untested (no GPU).
Value checks (NaN inputs, lengths out of range) become in-graph asserts that raise
``RuntimeError`` when the graph runs.
Compile time and speed-up: ``benchmarks/compile_speed.py``.
"""

from rnnkit.deploy.export import StateGraph, export_onnx
from rnnkit.deploy.quantize import quantize_int8, quantize_report
from rnnkit.deploy.traced import ExportError

__all__ = ["ExportError", "StateGraph", "export_onnx", "quantize_int8", "quantize_report"]
