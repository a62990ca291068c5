"""Deployment: export with explicit state (ONNX) and int8 dynamic quantization for CPU."""

from rnnkit.deploy.export import StateGraph, export_onnx
from rnnkit.deploy.quantize import quantize_int8
from rnnkit.deploy.traced import ExportError

__all__ = ["ExportError", "StateGraph", "export_onnx", "quantize_int8"]
