"""frogcore: the library behind the frog-companion book.

Forward gradients from K random tangents (FROG, Flügel et al., arXiv 2410.17764) and second-order
forward mode (FoMoH, Cobb et al., arXiv 2408.10419), built on ``torch.func``.
"""
from .config import PROFILES, DEVICES, check_choice, check_profile, resolve_device
from .estimators import AGGREGATIONS, aggregate, directional_derivatives, forward_gradient, scale_factor
from .linalg import project
from .tangents import SAMPLERS, sample_tangents

from ._version import __version__

__all__ = [
    "PROFILES", "DEVICES", "AGGREGATIONS", "SAMPLERS",
    "check_choice", "check_profile", "resolve_device",
    "aggregate", "directional_derivatives", "forward_gradient", "scale_factor", "project",
    "sample_tangents", "__version__",
]
