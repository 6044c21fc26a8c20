"""The training loop's optimisers and schedules: the same updates as torch.optim's fused optimisers and
schedulers, bit for bit on the fused path, to rounding on the plain one."""

import math

import pytest
import torch

from gradnet_core.optim import SGD, Adam, learning_rate


def _problem(dtype):
    """Three parameters of a smooth non-quadratic loss; the third gets no gradient at odd steps."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 3, generator=gen, dtype=dtype), torch.randn(7, generator=gen, dtype=dtype),
              torch.randn(2, generator=gen, dtype=dtype)]
    mix = torch.randn(3, 3, generator=gen, dtype=dtype)

    def loss(ps, step):
        value = (ps[0] @ mix).sin().square().sum() + (ps[1] - 0.5).square().mul(ps[1].cos()).sum()
        return value + (ps[2].square().sum() if step % 2 == 0 else 0.0)
    return params, loss


def _pair(kind, params, lr=0.05, weight_decay=0.01):
    ours = [p.clone().requires_grad_(True) for p in params]
    theirs = [p.clone().requires_grad_(True) for p in params]
    if kind == "sgd":
        return (ours, SGD(ours, lr, weight_decay, momentum=0.9),
                theirs, torch.optim.SGD(theirs, lr=lr, weight_decay=weight_decay, momentum=0.9, fused=True))
    reference = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return (ours, Adam(ours, lr, weight_decay, decoupled=kind == "adamw"),
            theirs, reference(theirs, lr=lr, weight_decay=weight_decay, fused=True))


def _run(pair, loss, steps=150):
    ours, mine, theirs, reference = pair
    for step in range(steps):
        for params, opt in ((ours, mine), (theirs, reference)):
            opt.zero_grad()
            loss(params, step).backward()
            opt.step()
    return ours, theirs


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_path_matches_torch_optim_bit_for_bit(kind, dtype):
    params, loss = _problem(dtype)
    ours, theirs = _run(_pair(kind, params), loss)
    for a, b, start in zip(ours, theirs, params):
        assert torch.isfinite(a).all() and not torch.equal(a.detach(), start)    # it moved
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_the_plain_path_makes_the_same_updates(kind):
    # The updates written out in tensor operations (devices without fused kernels) against torch.optim.
    params, loss = _problem(torch.float64)
    pair = _pair(kind, params)
    pair[1]._fused = pair[1]._plain
    ours, theirs = _run(pair, loss)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_wrong_update_is_caught():
    # The comparison above can fail: Adam against AdamW with the same weight decay.
    params, loss = _problem(torch.float64)
    ours, mine, theirs, _ = _pair("adam", params)
    ours, theirs = _run((ours, mine, theirs, torch.optim.AdamW(theirs, lr=0.05, weight_decay=0.01)), loss)
    assert not torch.allclose(ours[0], theirs[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_learning_rates_follow_torch_schedulers(schedule):
    total, base = 100, 0.3
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base)
    scheduler = {"constant": None, "step": torch.optim.lr_scheduler.StepLR(opt, 30, 0.5),
                 "cosine": torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)}[schedule]
    for step in range(total):
        expected = opt.param_groups[0]["lr"]
        assert learning_rate(base, step, schedule, total, step_size=30, gamma=0.5) == pytest.approx(expected, rel=1e-12)
        opt.step()
        if scheduler is not None:
            scheduler.step()
    assert learning_rate(base, 65, "step", total, 30, 0.5) == pytest.approx(base / 4)
    assert learning_rate(base, total // 2, "cosine", total) == pytest.approx(base / 2)
    assert learning_rate(base, total, "cosine", total) == pytest.approx(0.0, abs=1e-15)
    assert math.isclose(learning_rate(base, 0, schedule, total), base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("max_norm", [0.3, 1e6])
def test_clip_grad_norm_matches_torch_bit_for_bit(dtype, max_norm):
    """Optimizer.clip_grad_norm_ gives torch.nn.utils.clip_grad_norm_'s gradients exactly, clipping (0.3) or not
    (1e6); a parameter without a gradient is left out of the norm and stays without one."""
    params, loss = _problem(dtype)
    ours = [p.clone().requires_grad_(True) for p in params]
    theirs = [p.clone().requires_grad_(True) for p in params]
    for ps in (ours, theirs):
        loss(ps, step=1).backward()                # the third parameter gets no gradient at odd steps
    assert ours[2].grad is None
    before = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours[:2]]))
    Adam(ours, lr=0.1).clip_grad_norm_(max_norm)
    torch.nn.utils.clip_grad_norm_(theirs, max_norm, foreach=True)
    for p, q in zip(ours, theirs):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours[:2]]))
    assert float(after) == pytest.approx(min(float(before), max_norm), rel=1e-5)
