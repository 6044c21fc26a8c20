"""Shared fixtures: a seeded generator and deterministic torch state for every test."""

import numpy as np
import pytest
import torch

# The models under test are small: one thread avoids the oversubscription that makes 2-thread
# runs several times slower when anything else uses the CPU.
torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one torch thread, whatever the test before it set (the experiments'
    --threads option sets the process's count)."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True, scope="session")
def _run_store(tmp_path_factory):
    """The app keeps runs on disk (studio.store): the tests' in a folder of their own."""
    import os

    os.environ["GRADNET_STORE"] = str(tmp_path_factory.mktemp("store") / "runs.sqlite")
    yield
