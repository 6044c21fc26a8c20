"""The fused CPU kernels (mGradNet-M's softmax blocks, mGradNet-C's cascade, the Sinkhorn loop): equal to torch's
path, and a clean fallback without them."""

import copy
import ctypes
import functools
import math
import os
import shutil

import pytest
import torch

from gradnet_core import MGradNetC, MGradNetM, TrainConfig, Gaussian, GaussianMixture, train
from gradnet_core import _fused
from gradnet_core.networks import _SoftmaxBlocks, autograd_map_and_logdet
from gradnet_core.sample_losses import (_epsilon_schedule, _point_softmin, _sinkhorn_loop, _softmin, _squared_distances,
                                        sinkhorn_divergence)

from helpers import random_parameters

HAS_COMPILER = shutil.which(os.environ.get("CC", "cc")) is not None
needs_kernel = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler here: the fused kernel cannot be built "
                                                           "(.ci/run installs one)")


def blocks(n, blocks_, h, columns, scale, seed=0):
    """Inputs of ``_SoftmaxBlocks`` (x, A, R, signed, weight) and the gradients (dT, dP) of a loss on its outputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([4 * torch.rand(n, 2, generator=g) - 2, torch.ones(n, 1)], 1)
    A = scale * torch.randn(blocks_, h, 3, generator=g)
    R = torch.randn(blocks_, h, columns, generator=g)
    signed, weight = torch.randn(blocks_, generator=g), torch.rand(blocks_, generator=g)
    dT, dP = torch.randn(n, 2, generator=g), torch.randn(n, columns - 2, generator=g)
    return x, A, R, signed, weight, dT, dP


def softmax_blocks(x, A, R, signed, weight, dT, dP, path):
    """T, P and the gradients of A, R, signed and weight of <dT, T> + <dP, P>, computed by ``_SoftmaxBlocks`` on the
    fused or torch path, or (``path="autograd"``) by plain torch operations and autograd: the reference."""
    leaves = [t.clone().requires_grad_() for t in (A, R, signed, weight)]
    if path == "autograd":
        A_, R_, signed_, weight_ = leaves
        m = torch.softmax(x @ A_.transpose(1, 2), -1) @ R_                        # (B, n, C)
        v = m[..., :2]
        T = torch.einsum("b,bnd->nd", signed_, v)
        sq = torch.stack([v[..., 0] * v[..., 0], v[..., 0] * v[..., 1], v[..., 1] * v[..., 1]], -1)
        P = torch.einsum("b,bnc->nc", weight_, m[..., 2:] - sq) if R.shape[-1] == 5 else x.new_zeros(x.shape[0], 0)
    else:
        with _fused.use(path == "fused"):
            T, P = _SoftmaxBlocks.apply(x, *leaves)
    grads = torch.autograd.grad((T * dT).sum() + (P * dP).sum(), leaves, allow_unused=True)
    return (T.detach(), P.detach(), *(torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)))


@needs_kernel
def test_the_kernel_builds_and_is_used_where_a_compiler_is():
    x, A, R, *_ = blocks(5, 2, 4, 5, 1.0)
    assert _fused.applies(x, A, R), _fused.status()
    assert _fused.status().startswith("in use")
    # Only float32 on the CPU with d = 2: anything else keeps torch's path.
    assert not _fused.applies(x.double(), A.double(), R.double())
    assert not _fused.applies(x, A, R[..., :3])
    with _fused.use(False):
        assert not _fused.applies(x, A, R)
        assert _fused.status().startswith("switched off")


@needs_kernel
@pytest.mark.parametrize("n, blocks_, h, columns, scale", [
    (777, 8, 32, 5, 1.0),        # a last tile of 9 samples
    (1, 2, 2, 2, 0.3),           # one sample, two units, the map without its Jacobian
    (300, 4, 5, 5, 30.0),        # sharp softmaxes: most exponents clamped
    (1000, 64, 128, 5, 3.0),     # the paper's MNIST network
])
def test_fused_softmax_blocks_and_their_gradients_match_float64(n, blocks_, h, columns, scale):
    inputs = blocks(n, blocks_, h, columns, scale)
    exact = softmax_blocks(*(t.double() for t in inputs), path="autograd")
    fused = softmax_blocks(*inputs, path="fused")
    plain = softmax_blocks(*inputs, path="torch")
    names = ["T", "P", "grad A", "grad R", "grad signed", "grad weight"]
    for name, f, p, e in zip(names, fused, plain, exact):
        if not e.numel():
            continue
        size = e.abs().max().item()
        error, torch_error = (f.double() - e).abs().max().item(), (p.double() - e).abs().max().item()
        # torch's path is right (to float32's rounding), and the kernel as accurate as it, to a few units in the
        # last place of the largest entry.
        assert torch_error <= 1e-4 * size, (name, torch_error, size)
        assert error <= 4 * torch_error + 1e-6 * size, (name, error, torch_error, size)


@needs_kernel
def test_far_exponents_are_clamped_not_overflowed():
    # Units 1000 apart in their inputs: the softmax is one-hot, every other exponent below -87.
    x = torch.tensor([[0.0, 0.0, 1.0], [1.0, -1.0, 1.0]])
    A = torch.tensor([[[0.0, 0.0, 1000.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1000.0]]])
    R = torch.arange(15.0).reshape(1, 3, 5)
    one = torch.ones(1)
    T, P, grad_a, grad_r, *_ = softmax_blocks(x, A, R, one, one, torch.ones(2, 2), torch.zeros(2, 3), path="fused")
    torch.testing.assert_close(T, R[0, :1, :2].expand(2, 2))              # unit 0's output row, v = (0, 1)
    torch.testing.assert_close(P, torch.tensor([[2.0, 3.0, 3.0]] * 2))    # s - sq(v) = (2 - 0, 3 - 0, 4 - 1)
    assert torch.isfinite(grad_a).all() and torch.isfinite(grad_r).all()
    torch.testing.assert_close(grad_r[0, 0], torch.tensor([2.0, 2.0, 0.0, 0.0, 0.0]))   # both samples on unit 0
    torch.testing.assert_close(grad_r[0, 1:], torch.zeros(2, 5))


@needs_kernel
def test_float32_network_with_the_kernel_matches_autograd_in_float64():
    exact = random_parameters(MGradNetM(2, width=32, modules=4), 0.5, seed=3)
    x = torch.randn(257, 2, generator=torch.Generator().manual_seed(1))
    ref_out, ref_logdet = autograd_map_and_logdet(exact, x.double())
    model = copy.deepcopy(exact).float()
    out, logdet = model.map_and_logdet(x)
    assert _fused.applies(torch.ones(1, 3), model.W.new_ones(1, 1, 3), model.W.new_ones(1, 1, 5))
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logdet.double(), ref_logdet, rtol=1e-4, atol=1e-4)
    # The parameters' gradients of a loss on T and log det, fused against torch's path in float32.
    grads = {}
    for fused in (True, False):
        model.zero_grad()
        with _fused.use(fused):
            out, logdet = model.map_and_logdet(x)
            (out.square().sum() + logdet.sum()).backward()
        grads[fused] = [p.grad.clone() for p in model.parameters()]
    for (name, _), f, p in zip(model.named_parameters(), grads[True], grads[False]):
        torch.testing.assert_close(f, p, rtol=1e-4, atol=1e-4 * p.abs().max().item(), msg=name)


@needs_kernel
@pytest.mark.parametrize("network", ["mGradNet-M", "mGradNet-C"])
def test_training_with_the_kernel_follows_torch_path(network):
    if network == "mGradNet-M":
        source = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [[[0.25, 0], [0, 0.25]]] * 2)
        build = functools.partial(MGradNetM, 2, width=16, modules=4)
    else:
        source = Gaussian([1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]])
        build = functools.partial(MGradNetC, 2, width=16, depth=3)
    target = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    losses = {}
    for fused in (True, False):
        with _fused.use(fused):
            torch.manual_seed(0)
            result = train(build(), source, target, TrainConfig(steps=30, batch_size=256, lr=1e-2, seed=0,
                                                                assess=False))
        losses[fused] = torch.tensor(result.history["loss"])
    # Same batches, same start: the two paths agree to rounding, step after step.
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-3, atol=1e-4)
    assert losses[True][-5:].mean() < losses[True][:5].mean()


def cascade_outputs(model, x, jacobian, seed=0):
    """T and the packed Jacobian of mGradNet-C ``model`` at ``x`` and the parameters' gradients of a random linear
    functional of them (zeros for parameters the functional does not reach), all in float64."""
    model.zero_grad()
    out, packed = model._evaluate(x, jacobian)
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)).sum()
    if jacobian:
        loss = loss + (packed * torch.randn(packed.shape, generator=g, dtype=torch.float64).to(out.dtype)).sum()
    loss.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    return [t.detach().double() for t in [out] + ([packed] if jacobian else []) + grads]


@needs_kernel
@pytest.mark.parametrize("activation", ["weighted-tanh", "tanh"])
@pytest.mark.parametrize("dim, width, depth", [(2, 32, 4), (2, 5, 1), (5, 16, 3)])
@pytest.mark.parametrize("jacobian", [True, False])
def test_fused_cascade_and_its_gradients_match_float64(monkeypatch, activation, dim, width, depth, jacobian):
    # Random parameters and inputs spread so that units saturate (|z| > 9, where tanh is 1 in float32) and pass near 0.
    exact = random_parameters(MGradNetC(dim, width=width, depth=depth, activation=activation), 1.0, seed=dim + depth)
    x = 3 * torch.randn(300, dim, generator=torch.Generator().manual_seed(1))        # 300: tiles of 128 and a rest
    reference = cascade_outputs(exact, x.double(), jacobian)
    calls = []
    monkeypatch.setattr(_fused, "cascade_forward", lambda *a, **k: calls.append(1) or cascade_forward(*a, **k))
    got = cascade_outputs(copy.deepcopy(exact).float(), x, jacobian)
    assert calls, "the float32 network did not run the fused cascade"
    names = ["T"] + (["packed J"] if jacobian else []) + [name for name, _ in exact.named_parameters()]
    for name, a, b in zip(names, got, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()), msg=name)


cascade_forward = _fused.cascade_forward


@needs_kernel
def test_the_cascade_kernel_is_not_given_a_network_of_another_dtype_than_its_input(monkeypatch):
    # float32 points into a float64 network: the kernel would read the float64 weights as float32 ones. Torch's path
    # takes it and refuses the mixed product, as plain torch does.
    monkeypatch.setattr(_fused, "cascade_forward", lambda *a, **k: pytest.fail("the kernel was called"))
    with pytest.raises(RuntimeError, match="dtype"):
        MGradNetC(2, width=4, depth=2).double()(torch.randn(5, 2))


@needs_kernel
def test_fused_cascade_tanh_is_accurate_near_zero_and_saturates():
    # Unit inputs near 0 (tanh z ~ z: no cancellation), moderate and far out (+-1): one unit, one layer, T = tanh(Wx).
    model = MGradNetC(2, width=1, depth=1, activation="tanh")
    with torch.no_grad():
        model.W.copy_(torch.tensor([[1.0, 0.0]]))
        for p in (model.beta, model.alpha):
            p.fill_(math.log(math.e - 1.0))                                           # softplus = 1
        model.bias.zero_()
    z = torch.tensor([1e-6, -3e-4, 0.1, -0.7, 2.0, 8.9, -9.5, 30.0])
    out, packed = model._evaluate(torch.stack([z, torch.zeros_like(z)], 1), True)
    expected = torch.tanh(z.double())
    torch.testing.assert_close(out[:, 0].double(), expected, rtol=4e-7, atol=0.0)
    torch.testing.assert_close(packed[:, 0].double(), 1 - expected ** 2, rtol=1e-6, atol=1e-7)


def test_without_a_compiler_torch_path_is_used_and_status_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setenv("GRADNET_CACHE", str(tmp_path))
    for name, value in [("_tried", False), ("_library", None), ("_enabled", True)]:
        monkeypatch.setattr(_fused, name, value)
    inputs = blocks(50, 4, 8, 5, 1.0)
    assert not _fused.applies(*inputs[:3])
    assert "no C compiler found ('no-such-compiler-here')" in _fused.status()
    fallback = softmax_blocks(*inputs, path="fused")
    exact = softmax_blocks(*(t.double() for t in inputs), path="autograd")
    for f, e in zip(fallback, exact):
        torch.testing.assert_close(f.double(), e, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_the_built_kernel_is_cached_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADNET_CACHE", str(tmp_path))
    first = _fused._build()
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert _fused._build() == first and first.stat().st_mtime_ns == stamp
    assert list(tmp_path.iterdir()) == [first]            # no partial files left behind


@needs_kernel
def test_the_cascade_is_a_library_of_its_own(monkeypatch, tmp_path):
    # mGradNet-M's kernels do not wait for mGradNet-C's to compile: two libraries from one file.
    monkeypatch.setenv("GRADNET_CACHE", str(tmp_path))
    main, cascade = ctypes.CDLL(str(_fused._build())), ctypes.CDLL(str(_fused._build(cascade=True)))
    assert hasattr(main, "gradnet_softmax_average_forward") and not hasattr(main, "gradnet_cascade_forward")
    assert hasattr(cascade, "gradnet_cascade_forward") and not hasattr(cascade, "gradnet_softmax_average_forward")


@needs_kernel
@pytest.mark.parametrize("n, m, epsilon, spread", [(256, 256, 1e-3, 1.0), (200, 131, 1e-2, 5.0), (7, 300, 0.1, 20.0)])
def test_fused_sinkhorn_loop_gives_the_potentials_of_torch_loop(n, m, epsilon, spread):
    g = torch.Generator().manual_seed(n + m)
    x = spread * torch.rand(n, 2, generator=g)
    y = spread * torch.rand(m, 2, generator=g) + 0.1 * spread
    both = torch.cat([x, y])
    schedule = _epsilon_schedule(float((both.amax(0) - both.amin(0)).square().sum()), epsilon, 0.7, 3)
    assert _fused.sinkhorn_applies(x, y)
    fused = _fused.sinkhorn_potentials(x, y, schedule, debias=True)
    xd, yd = x.double(), y.double()
    costs = [_squared_distances(p, q) for p, q in ((xd, yd), (yd, xd), (xd, xd), (yd, yd))]
    exact = _sinkhorn_loop(*costs, torch.full((n,), -math.log(n), dtype=torch.float64),
                           torch.full((m,), -math.log(m), dtype=torch.float64), schedule)
    for name, f, e in zip(["f_ba", "g_ab", "f_aa", "g_bb"], fused, exact):
        # Potentials are costs: float32 keeps them to about 1e-7 of the squared diameter, times the iterations.
        torch.testing.assert_close(f.double(), e, rtol=0, atol=2e-5 * spread ** 2, msg=name)
    # And the divergence with its gradient, fused against torch's loop in float32.
    values = {}
    for use in (True, False):
        xg = x.clone().requires_grad_()
        with _fused.use(use):
            value = sinkhorn_divergence(xg, y, epsilon)
        values[use] = (value.detach(), torch.autograd.grad(value, xg)[0])
    torch.testing.assert_close(values[True][0], values[False][0], rtol=1e-4, atol=1e-6 * spread ** 2)
    torch.testing.assert_close(values[True][1], values[False][1], rtol=1e-3, atol=1e-4 * spread)


@needs_kernel
@pytest.mark.parametrize("n, m, eps, spread", [(256, 256, 1e-3, 1.0), (130, 7, 1e-2, 5.0), (5, 300, 0.5, 20.0)])
def test_fused_point_softmin_and_its_gradient_match_float64_autograd(n, m, eps, spread):
    g = torch.Generator().manual_seed(n * m)
    p = spread * torch.rand(n, 2, generator=g)
    q = spread * torch.rand(m, 2, generator=g)
    h = eps * torch.randn(m, generator=g) - math.log(m)
    weights = torch.randn(n, generator=g)
    pf = p.clone().requires_grad_()
    assert _fused.sinkhorn_applies(pf, q)
    value = _point_softmin(eps, pf, q, h)
    (grad,) = torch.autograd.grad((weights * value).sum(), pf)
    pd = p.double().requires_grad_()
    exact = _softmin(eps, _squared_distances(pd, q.double()), h.double())
    (grad_exact,) = torch.autograd.grad((weights.double() * exact).sum(), pd)
    # A softmin is a cost: float32 keeps it to about 1e-7 of the squared spread; its gradient 2 (p - bary) to
    # about 1e-6 of the spread.
    torch.testing.assert_close(value.double(), exact.detach(), rtol=0, atol=2e-6 * spread ** 2)
    torch.testing.assert_close(grad.double(), grad_exact, rtol=0, atol=2e-5 * spread)
    with torch.no_grad():                                      # the same values without autograd
        torch.testing.assert_close(_point_softmin(eps, p, q, h), value.detach())


@needs_kernel
def test_fused_sinkhorn_divergence_gives_both_clouds_their_gradient():
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(120, 2, generator=g), torch.rand(90, 2, generator=g) + 0.3
    grads = {}
    for use in (True, False):
        xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
        with _fused.use(use):
            grads[use] = torch.autograd.grad(sinkhorn_divergence(xg, yg, 1e-2), (xg, yg))
    for fused, torch_path in zip(grads[True], grads[False]):
        assert fused.abs().max() > 1e-3
        torch.testing.assert_close(fused, torch_path, rtol=1e-3, atol=1e-5)
