"""Equivariant layers and the Tensor Field Network."""

from tfn.nn.convolution import Convolution
from tfn.nn.network import TensorFieldNetwork, TFNLayer
from tfn.nn.nonlinearity import Concatenation, Gate, Nonlinearity, activation
from tfn.nn.radial import BesselBasis, GaussianBasis, PolynomialEnvelope, RadialMLP, radial_basis
from tfn.nn.self_interaction import SelfInteraction

__all__ = [
    "BesselBasis",
    "Concatenation",
    "Convolution",
    "GaussianBasis",
    "Gate",
    "Nonlinearity",
    "PolynomialEnvelope",
    "RadialMLP",
    "SelfInteraction",
    "TFNLayer",
    "TensorFieldNetwork",
    "activation",
    "radial_basis",
]
