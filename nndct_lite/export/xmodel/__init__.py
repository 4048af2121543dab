"""XModel export: the test-mode quantization result -> an XGraph written by :mod:`nndct_lite.xmodel`."""
from .build import build_xgraph, export_xmodel, xir_name

__all__ = ["build_xgraph", "export_xmodel", "xir_name"]
