"""Small helpers shared by the network tests."""

import torch


def random_parameters(model: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    """The model in float64 with every parameter moved by ``scale`` x N(0, 1): random parameters, not
    just the initialisation, so that properties are checked away from the starting point."""
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model
