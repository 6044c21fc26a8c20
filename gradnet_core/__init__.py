"""gradnet_core: optimal transport maps learned with monotone gradient networks (GradNetOT).

Densities, mGradNets with closed-form log-determinants, Monge–Ampère training, ground truth and
metrics. See ``gradnet_core.ground_truth`` and ``gradnet_core.metrics`` for the evaluation tools.
"""

from .densities import Density, Gaussian, GaussianMixture, ImageDensity, covariance_2d
from .files import load_map, save_map
from .images import bundled_digits, canvas_to_image, load_bundled, load_image
from .networks import (NETWORKS, InverseMap, InverseSolution, MGradNetC, MGradNetM, MLPMap, RescaledMap, TransportMap,
                       build_map, seeded_map)
from .objectives import (OBJECTIVES, AdversarialW1, ConstrainedFlow, GaussianMomentKL, MongeAmpere, Objective,
                         ReverseKL, SinkhornLoss)
from .training import Progress, TrainConfig, TrainResult, train
from .pushforward import DensityMorph, Grid, density_morph, monge_ampere_field, pushforward_density
from .baselines import BASELINES, CMGN, MMGN, ICNNMap

# The baselines subclass the networks module's base classes, so they join its registry here rather
# than in networks.py (which would import them circularly).
NETWORKS.update(BASELINES)

__all__ = [
    "Density", "Gaussian", "GaussianMixture", "ImageDensity", "covariance_2d",
    "TransportMap", "MGradNetC", "MGradNetM", "MLPMap", "NETWORKS", "build_map", "seeded_map", "InverseSolution",
    "InverseMap", "RescaledMap",
    "CMGN", "MMGN", "ICNNMap",
    "TrainConfig", "TrainResult", "Progress", "train",
    "Objective", "OBJECTIVES", "MongeAmpere", "ReverseKL", "GaussianMomentKL", "SinkhornLoss", "AdversarialW1",
    "ConstrainedFlow",
    "Grid", "DensityMorph", "density_morph", "pushforward_density", "monge_ampere_field",
    "save_map", "load_map",
    "load_image", "canvas_to_image", "load_bundled", "bundled_digits",
]

__version__ = "0.1.0"
