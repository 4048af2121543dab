"""Deploy exports of a test-mode quantization session.

- ``torchscript.export_torch_script``: ``<Model>_int.pt``, a traced TorchScript module whose
  fake-quant steps are plain aten ops (bit-identical to the test-mode model);
- ``onnx_qdq.export_onnx_model``: ``<Model>_int.onnx`` with QuantizeLinear/DequantizeLinear pairs;
- ``xmodel``: the XIR ``serial_v2`` writer and reader.

Nothing is imported here, so each exporter loads only the libraries it needs.
"""
