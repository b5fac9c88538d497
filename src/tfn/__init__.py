"""tfn: Tensor Field Networks, equivariant to 3D rotations, reflections and translations."""

__version__ = "0.1.0"
