"""Experiments of the papers behind the library, as small tested functions.

:mod:`pyroflows.experiments.linear_couplings`: how many fixed-partition linear affine couplings
make an arbitrary invertible linear map (Koehler, Mehta & Risteski, 2021).
:mod:`pyroflows.experiments.padding`: no padding, zero padding and Gaussian padding of 2-D data,
their conditioning and samples (Koehler, Mehta & Risteski, 2021).
:mod:`pyroflows.experiments.depth`: the depth a flow needs to fit a mixture of Gaussians on a
sphere, against a non-invertible generator (Koehler, Mehta & Risteski, 2021).
"""

from . import depth, linear_couplings, padding

__all__ = ["depth", "linear_couplings", "padding"]
