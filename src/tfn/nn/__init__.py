"""Equivariant layers: radial functions, convolution, self-interaction, nonlinearities.

Layers know nothing of tasks; the models built from them are in :mod:`tfn.models`.
"""

from typing import Any

from tfn.nn.block import TFNLayer
from tfn.nn.convolution import Convolution
from tfn.nn.edges import EdgeEmbedding, Edges
from tfn.nn.nonlinearity import Concatenation, Gate, Nonlinearity, activation
from tfn.nn.radial import BesselBasis, GaussianBasis, PolynomialEnvelope, RadialMLP, radial_basis
from tfn.nn.self_interaction import SelfInteraction

__all__ = [
    "BesselBasis",
    "Concatenation",
    "Convolution",
    "EdgeEmbedding",
    "Edges",
    "GaussianBasis",
    "Gate",
    "Nonlinearity",
    "PolynomialEnvelope",
    "RadialMLP",
    "SelfInteraction",
    "TFNLayer",
    "activation",
    "radial_basis",
]


def __getattr__(name: str) -> Any:
    # The network moved up a floor, to tfn.models; old imports keep working, with a warning.
    if name == "TensorFieldNetwork":
        import warnings

        warnings.warn(
            "tfn.nn.TensorFieldNetwork moved to tfn.models.TensorFieldNetwork "
            "(also tfn.TensorFieldNetwork)",
            DeprecationWarning,
            stacklevel=2,
        )
        from tfn.models.network import TensorFieldNetwork

        return TensorFieldNetwork
    raise AttributeError(f"module 'tfn.nn' has no attribute {name!r}")
