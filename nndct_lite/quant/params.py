"""Compatibility name: :mod:`nndct_lite.numerics.params` holds ``QuantParams``."""
from ..numerics.params import QuantParams, Role

__all__ = ["QuantParams", "Role"]
