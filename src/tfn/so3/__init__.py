"""The maths: irreps, spherical harmonics, Clebsch-Gordan coefficients, Wigner D, rotations."""

from tfn.so3.cartesian import CartesianTensor
from tfn.so3.clebsch_gordan import clebsch_gordan, complex_clebsch_gordan, complex_to_real
from tfn.so3.harmonics import SphericalHarmonics, spherical_harmonics
from tfn.so3.irreps import Irrep, Irreps, MulIrrep
from tfn.so3.wigner import (
    angles_to_matrix,
    axis_angle_to_matrix,
    matrix_to_angles,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    quaternion_to_matrix,
    random_quaternion,
    random_rotation,
    rotation_x,
    rotation_y,
    rotation_z,
    wigner_D,
)

__all__ = [
    "CartesianTensor",
    "Irrep",
    "Irreps",
    "MulIrrep",
    "SphericalHarmonics",
    "angles_to_matrix",
    "axis_angle_to_matrix",
    "clebsch_gordan",
    "complex_clebsch_gordan",
    "complex_to_real",
    "matrix_to_angles",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "random_quaternion",
    "random_rotation",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "spherical_harmonics",
    "wigner_D",
]
