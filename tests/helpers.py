"""Small helpers shared by the tests."""

import numpy as np
import torch

from gradnet_core import ImageDensity


def random_parameters(model: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    """The model in float64 with every parameter moved by ``scale`` x N(0, 1): random parameters, not
    just the initialisation, so that properties are checked away from the starting point."""
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def disk_and_two_blobs():
    """A disk onto two blobs left and right of it, as 28 x 28 images: the forward map must tear the disk in two
    (a non-convex target); the map back merges the blobs into the disk, which a smooth monotone map does
    easily, and the disk is bounded, so its inverse has no far tail to reach (a Gaussian source has one:
    test_training.test_an_inverse_that_flings_the_source_tails_away_is_flagged_and_not_kept)."""
    rows, cols = np.mgrid[0:28, 0:28]
    disk = ((rows - 13.5) ** 2 + (cols - 13.5) ** 2 < 36).astype(float)
    blobs = (((rows - 13.5) ** 2 + (cols - 5) ** 2 < 16) | ((rows - 13.5) ** 2 + (cols - 22) ** 2 < 16)).astype(float)
    return ImageDensity(disk, bandwidth=1e-2), ImageDensity(blobs, bandwidth=1e-2)


def after_prewarm() -> None:
    """Wait for the app's background import of the training stack, as app.py does at the start of every run: AppTest
    runs a page switched to without app.py, and a page that imports POT beside that thread can get it half
    initialised ("partially initialized module 'ot' has no attribute 'gaussian'", the paper page's live Fig. 1 run
    alone)."""
    from studio.device import after_prewarm as wait

    wait()
