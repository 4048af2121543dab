"""The file names of a result folder (``quantize_result/``), one copy of each."""
from __future__ import annotations

__all__ = ["QUANT_INFO_FILE", "BIAS_CORR_FILE", "PARAM_FILE", "RESOLVED_CONFIG_FILE",
           "QAT_CONFIG_FILE"]

#: the calibration result: every tensor's fix position / scale (state/quant_info.py)
QUANT_INFO_FILE = "quant_info.json"
#: the bias corrections measured in calibration, ``{node name: [per-channel values] | None}``
BIAS_CORR_FILE = "bias_corr.pth"
#: the fast-finetuned parameters (a state dict of the generated model)
PARAM_FILE = "param.pth"
#: the resolved configuration and every graph rewrite, written by calib and test
RESOLVED_CONFIG_FILE = "resolved_config.json"
#: the configuration a QAT result was trained with (QatProcessor.to_deployable); test mode of a
#: QAT result reads it (``torch_quantizer("test", ..., qat_proc=True)``)
QAT_CONFIG_FILE = "qat_config.json"
