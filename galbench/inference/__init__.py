"""Inference: ONNX export, calibration, quantisation, and catalog classification."""
