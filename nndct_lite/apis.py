"""``from nndct_lite.apis import torch_quantizer`` (the original's import path)."""
from .api import torch_quantizer
from .qat import QatProcessor

__all__ = ["torch_quantizer", "QatProcessor"]
