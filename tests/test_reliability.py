"""Reliability: out-of-memory fallback, concurrent sessions that never mix, no memory growth."""

import gc

import numpy as np
import pytest
import torch

from gradnet_core import Gaussian, MGradNetM, TrainConfig, train
from gradnet_core.networks import seeded_map
from studio.jobs import TrainingJob


def paper_pair(shift=0.0):
    return (Gaussian([1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]]),
            Gaussian([shift, -shift], [[1.0, 0.0], [0.0, 1.0]]))


class RunsOutOfMemory:
    """Wraps a model's map_and_logdet so batches larger than ``limit`` raise OutOfMemoryError."""

    def __init__(self, model, limit):
        self.inner, self.limit, self.calls = model.map_and_logdet, limit, []
        model.map_and_logdet = self

    def __call__(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_splits_the_batch_with_the_same_gradients():
    source, target = paper_pair()
    config = TrainConfig(steps=6, batch_size=200, assess=False)     # the training steps' calls only
    torch.manual_seed(1)
    reference = MGradNetM(2, width=8, modules=2).double()
    ref = train(reference, source, target, config)
    torch.manual_seed(1)
    model = MGradNetM(2, width=8, modules=2).double()
    oom = RunsOutOfMemory(model, limit=60)
    result = train(model, source, target, config)
    assert result.stopped == "completed" and "ran out of memory" in result.message
    assert max(oom.calls[-4:]) <= 60           # settled on 4 chunks of 50
    np.testing.assert_allclose(result.history["loss"], ref.history["loss"], rtol=1e-10)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    judged = train(MGradNetM(2, width=8, modules=2).double(), source, target, TrainConfig(steps=2, batch_size=200))
    assert judged.verdict is not None
    RunsOutOfMemory(model, limit=60)
    unjudged = train(model, source, target, TrainConfig(steps=2, batch_size=200))
    assert unjudged.verdict is None and "No verdict" in unjudged.message


def test_out_of_memory_with_single_samples_is_reported():
    source, target = paper_pair()
    model = MGradNetM(2, width=8, modules=2)
    RunsOutOfMemory(model, limit=0)
    with pytest.raises(RuntimeError, match="out of memory even with one sample"):
        train(model, source, target, TrainConfig(steps=2, batch_size=8))


def _job(i, steps=40):
    source, target = paper_pair(shift=float(i))
    model = seeded_map("mGradNet-M", seed=i, dim=2, width=8, modules=2)
    # no verdict: the runs are compared by their losses, and the verdict would be most of each run's time
    return TrainingJob(model, source, target, TrainConfig(steps=steps, batch_size=128, seed=i, device="cpu",
                                                          assess=False))


def test_eight_concurrent_sessions_each_get_their_own_result():
    alone = []
    for i in range(8):
        job = _job(i).start()
        assert job.wait(120)
        alone.append(job.result.history["loss"])
    jobs = [_job(i) for i in range(8)]
    for job in jobs:
        job.start()
    for job in jobs:
        assert job.wait(300) and job.error is None and job.result.stopped == "completed"
    # Same seeds, same problems: concurrent runs reproduce the lone runs exactly, so nothing mixed.
    for i, job in enumerate(jobs):
        assert job.result.history["loss"] == alone[i]
    assert len({tuple(h) for h in alone}) == 8


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_fifty_trainings_do_not_grow_memory():
    source, target = paper_pair()

    def one_run(seed):
        torch.manual_seed(seed)
        model = MGradNetM(2, width=16, modules=4)
        # the verdict on every fifth run: it is most of a short run's time, and what it allocates is checked so
        result = train(model, source, target, TrainConfig(steps=20, batch_size=256, assess=seed % 5 == 0))
        assert (result.verdict is not None) == (seed % 5 == 0)
        with torch.no_grad():
            model(source.sample(500))

    for seed in range(5):                       # warm up allocators and caches
        one_run(seed)
    gc.collect()
    before = _rss_bytes()
    for seed in range(50):
        one_run(seed)
    gc.collect()
    assert _rss_bytes() <= 1.10 * before
