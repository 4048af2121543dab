"""``from nndct_lite.apis import torch_quantizer`` (the original's import path)."""
from .api import torch_quantizer

__all__ = ["torch_quantizer"]
