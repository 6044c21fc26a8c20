"""TrainingJob: background training with thread-safe progress, stop, errors and concurrency."""

import sys
import threading
import time

import numpy as np
import pytest
import torch

from gradnet_core import Gaussian, TrainConfig
from gradnet_core.networks import seeded_map
from studio.jobs import GPU_LOCK, TrainingJob

from helpers import disk_and_two_blobs

TIMEOUT = 120


def _problem(target_mean=(0.0, 0.0)):
    return Gaussian([1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]]), Gaussian(list(target_mean), np.eye(2))


def _params(model):
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])


def test_job_finishes_and_reports_progress():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    preview = source.sample(50)
    job = TrainingJob(model, source, target, TrainConfig(steps=40, batch_size=200, report_seconds=0.0),
                      preview_points=preview, preview_every=10, cpu_threads=1).start()
    assert job.wait(TIMEOUT), "the job did not finish"
    assert job.done and job.error is None
    assert job.result.stopped == "completed" and job.result.steps == 40
    snap = job.snapshot()
    assert snap.phase == "done" and snap.step == snap.total == 40 and snap.fraction == 1.0
    assert snap.loss_steps[-1] == 40 and len(snap.losses) == len(snap.loss_steps) >= 4
    assert snap.steps_per_second > 0 and snap.eta == 0.0
    assert snap.preview.shape == (50, 2) and snap.preview_step == 40
    with torch.no_grad():
        np.testing.assert_allclose(snap.preview, model(preview).double().numpy(), rtol=1e-5, atol=1e-6)


def test_loss_falls_while_training():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=16, modules=4)
    job = TrainingJob(model, source, target, TrainConfig(steps=150, report_seconds=0.0)).start()
    assert job.wait(TIMEOUT) and job.error is None
    losses = job.snapshot().losses
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:3])


def test_stop_keeps_the_partial_model():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    before = _params(model)
    job = TrainingJob(model, source, target, TrainConfig(steps=100_000, batch_size=100, report_seconds=0.01))
    job.start()
    while job.snapshot().step < 5 and not job.done:
        job.wait(0.01)
    job.stop()
    assert job.wait(TIMEOUT)
    assert job.error is None and job.result.stopped == "stopped"
    assert 5 <= job.result.steps < 100_000
    assert job.result.steps == job.snapshot().step == len(job.result.history["loss"])
    assert not torch.equal(before, _params(model)), "the partially trained model was not kept"


def test_two_jobs_at_once_keep_their_own_results():
    jobs = []
    for steps, mean in ((30, (0.0, 0.0)), (50, (3.0, 3.0))):
        source, target = _problem(mean)
        model = seeded_map("mGradNet-M", steps, dim=2, width=8, modules=2)
        jobs.append(TrainingJob(model, source, target, TrainConfig(steps=steps, batch_size=200),
                                finish=lambda m, r, mean=mean: (mean, r.steps), cpu_threads=1))
    for job in jobs:
        job.start()
    assert all(job.wait(TIMEOUT) for job in jobs)
    assert [job.error for job in jobs] == [None, None]
    assert [job.result.steps for job in jobs] == [30, 50]
    assert [len(job.result.history["loss"]) for job in jobs] == [30, 50]
    assert [job.evaluation for job in jobs] == [((0.0, 0.0), 30), ((3.0, 3.0), 50)]
    assert jobs[0].model is not jobs[1].model


def test_cpu_jobs_do_not_wait_for_the_gpu_lock():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    with GPU_LOCK:  # another session "training on the GPU"
        job = TrainingJob(model, source, target, TrainConfig(steps=10, batch_size=100, device="cpu")).start()
        assert job.wait(TIMEOUT) and job.error is None


def test_a_training_exception_becomes_the_error_message():
    source = Gaussian([0.0, 0.0, 0.0], np.eye(3))
    _, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    job = TrainingJob(model, source, target, TrainConfig(steps=10)).start()
    assert job.wait(TIMEOUT)
    assert job.result is None and "3-dimensional" in job.error
    assert job.snapshot().phase == "done"


def test_an_exception_in_finish_becomes_the_error_message():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)

    def finish(model, result):
        raise RuntimeError("ground truth failed")

    job = TrainingJob(model, source, target, TrainConfig(steps=5, batch_size=100), finish=finish).start()
    assert job.wait(TIMEOUT)
    assert job.error == "RuntimeError: ground truth failed"
    assert job.result is not None and job.result.steps == 5


def test_snapshots_are_safe_to_read_while_training():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    job = TrainingJob(model, source, target, TrainConfig(steps=200, batch_size=100, report_seconds=0.0),
                      preview_points=source.sample(20), preview_every=20).start()
    seen = []
    while not job.done:
        snap = job.snapshot()
        assert len(snap.losses) == len(snap.loss_steps)
        seen.append(snap.step)
        # A reader polls (the app's live panel every 0.25 s). A loop that never sleeps keeps the GIL
        # from the training thread at each of its hand-overs, and 200 steps take minutes.
        time.sleep(0.001)
    assert seen == sorted(seen)
    assert job.error is None


def test_seeded_map_is_reproducible_and_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = seeded_map("mGradNet-C", 7, dim=2, width=8, depth=2)
    after = torch.rand(3)
    b = seeded_map("mGradNet-C", 7, dim=2, width=8, depth=2)
    assert torch.equal(_params(a), _params(b))
    assert torch.equal(expected, after)


def test_bad_arguments_and_double_start_are_refused():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    with pytest.raises(ValueError, match="preview_every"):
        TrainingJob(model, source, target, TrainConfig(steps=5), preview_every=0)
    with pytest.raises(ValueError, match="cpu_threads"):
        TrainingJob(model, source, target, TrainConfig(steps=5), cpu_threads=0)
    job = TrainingJob(model, source, target, TrainConfig(steps=5, batch_size=50)).start()
    with pytest.raises(RuntimeError, match="already been started"):
        job.start()
    assert job.wait(TIMEOUT)


def test_the_job_thread_is_a_daemon():
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    job = TrainingJob(model, source, target, TrainConfig(steps=5, batch_size=50)).start()
    assert job._thread.daemon and isinstance(job._thread, threading.Thread)
    assert job.wait(TIMEOUT)


def test_a_closed_session_abandons_its_job_and_a_brief_drop_does_not():
    from studio.jobs import watch_session

    source, target = _problem()
    finished = []

    def long_job():
        model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
        return TrainingJob(model, source, target, TrainConfig(steps=10**7, batch_size=100, report_seconds=0.05),
                           finish=lambda m, r: finished.append(r), cpu_threads=1).start()

    closed = long_job()
    started = time.monotonic()
    watch_session(closed, lambda: time.monotonic() - started < 0.3, grace=1.0, poll=0.1)   # tab closed at 0.3 s
    assert closed.wait(TIMEOUT) and closed.abandoned
    assert closed.result.stopped == "stopped" and 0 < closed.result.steps < 10**7
    assert finished == []                                                  # nobody left: no ground truth computed

    blip = long_job()
    started = time.monotonic()
    watch_session(blip, lambda: not 0.2 < time.monotonic() - started < 0.5, grace=1.0, poll=0.1)
    time.sleep(1.5)
    assert not blip.done and not blip.abandoned                            # a 0.3 s drop keeps it running
    blip.stop()
    assert blip.wait(TIMEOUT) and not blip.abandoned and finished           # an ordinary Stop still finishes


def test_slots_run_jobs_in_order_within_the_workers_and_refuse_past_the_queue():
    from studio.scheduler import Slots

    source, target = _problem()
    line = Slots(workers=1, queue_limit=2)

    def job(steps):
        model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
        return TrainingJob(model, source, target, TrainConfig(steps=steps, batch_size=100, report_seconds=0.05),
                           cpu_threads=1, slots=line)

    first = job(10**7).start()
    second, third = job(20).start(), job(20).start()
    time.sleep(0.5)
    assert first.snapshot().phase == "training"
    assert second.snapshot().phase == third.snapshot().phase == "queued"
    assert line.place(second)[:2] == (1, 2) and line.place(third)[:2] == (2, 2)
    with pytest.raises(ValueError, match="The server is full: 1 trainings are running and 2 are waiting"):
        job(20).start()
    third.stop()                                                        # out of the line, never trained
    assert third.wait(TIMEOUT) and third.result is None and "cancelled before it started" in third.error
    assert line.place(second)[:2] == (1, 1)
    first.stop()
    assert first.wait(TIMEOUT) and second.wait(TIMEOUT)
    assert second.result.stopped == "completed" and second.result.steps == 20    # its turn came


# --- in worker processes (studio.workers) -------------------------------------------------------------
@pytest.fixture(scope="module")
def pool():
    from studio.workers import WorkerPool

    workers = WorkerPool(1)
    workers.warm()
    yield workers
    workers.close()


def _pid_of_training(model, result):
    import os
    return os.getpid(), result.steps


def test_a_job_in_a_worker_process_trains_the_callers_model_and_reports_as_a_thread_does(pool):
    import os
    from functools import partial

    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    twin = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    preview = source.sample(30)
    config = TrainConfig(steps=60, batch_size=200, report_seconds=0.0)
    job = TrainingJob(model, source, target, config, preview_points=preview, preview_every=20, cpu_threads=1,
                      pool=pool, finish=partial(_pid_of_training)).start()
    here = TrainingJob(twin, source, target, config, preview_points=preview, preview_every=20, cpu_threads=1).start()
    assert job.wait(TIMEOUT) and here.wait(TIMEOUT)
    assert job.error is None and job.result.stopped == "completed" and job.result.steps == 60
    pid, steps = job.evaluation
    assert pid != os.getpid() and pid in pool.pids() and steps == 60          # trained elsewhere, worker kept
    torch.testing.assert_close(_params(model), _params(twin))                 # same seed, same map as in a thread
    snap = job.snapshot()
    assert snap.phase == "done" and snap.step == 60 and snap.loss_steps[-1] == 60
    assert snap.losses == here.snapshot().losses and snap.preview_step == 60
    with torch.no_grad():
        np.testing.assert_allclose(snap.preview, model(preview).double().numpy(), rtol=1e-5, atol=1e-6)


def _assert_stop_and_errors_cross(pool):
    """Stop keeps the partial model trained in ``pool``'s worker; an error there becomes the job's message."""
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    before = _params(model)
    job = TrainingJob(model, source, target, TrainConfig(steps=10**7, batch_size=100, report_seconds=0.01),
                      pool=pool).start()
    while job.snapshot().step < 5 and not job.done:
        job.wait(0.01)
    job.stop()
    assert job.wait(TIMEOUT) and job.error is None and job.result.stopped == "stopped"
    assert 5 <= job.result.steps < 10**7 and not torch.equal(before, _params(model))

    flat = Gaussian([0.0, 0.0, 0.0], np.eye(3))
    failed = TrainingJob(model, flat, target, TrainConfig(steps=10), pool=pool).start()
    assert failed.wait(TIMEOUT) and failed.result is None and "3-dimensional" in failed.error


def test_stop_and_errors_cross_to_the_worker_process(pool):
    _assert_stop_and_errors_cross(pool)


def test_an_abandoned_job_that_does_not_stop_has_its_worker_killed_and_replaced(pool):
    import time as clock

    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    # No progress report for 1000 s: the worker never reads the abandon, so only killing it frees it.
    job = TrainingJob(model, source, target, TrainConfig(steps=10**8, batch_size=100, report_seconds=1000.0),
                      pool=pool).start()
    (busy,) = pool.pids() or [None]
    while job.snapshot().phase != "training":
        assert not job.wait(0.05)
    clock.sleep(0.3)
    start = clock.monotonic()
    job.abandon()
    assert job.wait(TIMEOUT) and clock.monotonic() - start < 5
    assert job.result is None and "abandoned" in job.error
    pool.warm()
    replacement = TrainingJob(model, source, target, TrainConfig(steps=5, batch_size=50), pool=pool).start()
    assert replacement.wait(TIMEOUT) and replacement.error is None and replacement.result.steps == 5
    assert busy not in pool.pids()


def test_a_worker_that_dies_mid_training_ends_the_job_with_a_message(pool):
    import os
    import signal

    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    pool.warm()
    job = TrainingJob(model, source, target, TrainConfig(steps=10**7, batch_size=100, report_seconds=0.05),
                      pool=pool)
    while not pool.pids():
        time.sleep(0.05)
    (pid,) = pool.pids()
    job.start()
    while job.snapshot().step == 0:
        assert not job.wait(0.05)
    os.kill(pid, signal.SIGKILL)
    assert job.wait(TIMEOUT) and job.result is None
    assert "worker process ended unexpectedly (exit code -9)" in job.error


@pytest.mark.slow
def test_the_app_trains_the_same_map_on_ray_actors_as_in_a_local_worker(pool):
    """GRADNET_BACKEND=ray / RAY_ADDRESS: the server's workers are Ray actors (a local Ray instance here)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install -r requirements-ray.txt); "
                                            "CI installs it")
    from functools import partial

    from studio.workers import WorkerPool

    source, target = _problem()
    config = TrainConfig(steps=60, batch_size=200, report_seconds=0.0)
    preview = source.sample(20)

    def trained(pool):
        model = seeded_map("mGradNet-M", 3, dim=2, width=8, modules=2)
        job = TrainingJob(model, source, target, config, preview_points=preview, preview_every=20,
                          cpu_threads=1, pool=pool, finish=partial(_pid_of_training)).start()
        assert job.wait(TIMEOUT) and job.error is None, job.error
        return model, job

    local_model, local = trained(pool)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the finish hook above, for Ray's workers
    on_ray = WorkerPool(1, backend="ray")
    try:
        ray_model, remote = trained(on_ray)
        assert remote.evaluation[0] != local.evaluation[0] and remote.result.steps == 60
        torch.testing.assert_close(_params(ray_model), _params(local_model), rtol=0, atol=0)
        assert remote.snapshot().losses == local.snapshot().losses
        np.testing.assert_array_equal(remote.snapshot().preview, local.snapshot().preview)
        _assert_stop_and_errors_cross(on_ray)
    finally:
        on_ray.close()
        ray.shutdown()


def test_a_job_with_a_slot_waiting_for_the_gpu_says_so(monkeypatch):
    import studio.jobs
    from studio.scheduler import Slots

    class Cuda:                                    # the device a GPU server resolves "auto" to
        type = "cuda"

        def __str__(self):
            return "cuda"

    monkeypatch.setattr(studio.jobs, "resolve_device", lambda device, *size: Cuda())
    source, target = _problem()
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    with GPU_LOCK:                                 # another session trains on the GPU
        job = TrainingJob(model, source, target, TrainConfig(steps=10, batch_size=100),
                          slots=Slots(workers=2, queue_limit=2)).start()
        deadline = time.monotonic() + TIMEOUT
        while job.snapshot().phase != "waiting":
            assert time.monotonic() < deadline and not job.done, job.snapshot().phase
            time.sleep(0.01)
    assert job.wait(TIMEOUT) and job.error is None and job.result.steps == 10


def _what_finish_got(model, result):
    return type(model).__name__, model is result.map


@pytest.mark.parametrize("in_pool", [False, True])
def test_a_job_whose_map_is_an_inverse_hands_that_map_on(in_pool, request):
    from functools import partial

    from gradnet_core import InverseMap, MongeAmpere

    source, target = disk_and_two_blobs()     # trained forward the map is flagged, so direction 'auto' trains back
    model = seeded_map("mGradNet-M", 0, dim=2, width=16, modules=4)
    config = TrainConfig(steps=200, lr=3e-2, batch_size=256, seed=0, report_seconds=0.0, direction="auto",
                         objective=MongeAmpere(bandwidth_start=1e-2, bandwidth_end=1e-3))
    notes, preview = [], source.sample(20)
    job = TrainingJob(model, source, target, config, preview_points=preview, preview_every=50, cpu_threads=1,
                      finish=partial(_what_finish_got), pool=request.getfixturevalue("pool") if in_pool else None)
    job.start()
    while not job.wait(0.05):
        notes.append((job.snapshot().step, job.snapshot().total, job.snapshot().note))
    assert job.error is None and job.result.direction == "reverse"
    assert isinstance(job.model, InverseMap) and job.evaluation == ("InverseMap", True)
    snap = job.snapshot()
    assert snap.step == snap.total == 400 and snap.fraction == 1.0 and "flagged" in snap.note
    assert any(total == 400 and note for step, total, note in notes)
    with torch.no_grad():                   # the last preview shows the inverse map, not the network trained back
        np.testing.assert_allclose(snap.preview, job.model(preview).double().numpy(), rtol=1e-4, atol=1e-5)


def test_the_device_label_says_small_networks_train_on_the_cpu_of_a_gpu_server(monkeypatch):
    import studio.device

    monkeypatch.setattr(studio.device, "_cpu_only_torch", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert studio.device.device_label() == "GPU (NVIDIA H200) for large networks and the CPU for small ones"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert studio.device.device_label() == "CPU"
