"""Cost accounting and latency model of compressed weights on Apple devices.

Public API:

* :func:`layer_cost` and :class:`LayerCost`: MACs, activation bytes and stored weight bytes of
  one layer; :func:`costs_from_package` for every weight layer of an ``.mlpackage``.
* :func:`predict`: per-layer and total latency of a cost list or a package on a device profile,
  with the bound of each layer and extrapolation flags; :func:`compare` for two of them.
* :func:`list_profiles` and :func:`load_profile`: the shipped device profiles.
"""

from __future__ import annotations

from .costs import LayerCost, WeightBytes, layer_cost
from .masks import MaskStats, mask_stats
from .model import Comparison, LayerPrediction, Prediction, compare, predict
from .package_costs import costs_from_package
from .profiles import DeviceProfile, list_profiles, load_profile

__all__ = [
    "LayerCost",
    "WeightBytes",
    "layer_cost",
    "MaskStats",
    "mask_stats",
    "costs_from_package",
    "DeviceProfile",
    "list_profiles",
    "load_profile",
    "Prediction",
    "LayerPrediction",
    "Comparison",
    "predict",
    "compare",
]
