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
from gradnet_core.networks import autograd_map_and_logdet
from gradnet_core.sample_losses import (_epsilon_schedule, _point_softmin, _sinkhorn_loop, _softmin, _squared_distances,
                                        sinkhorn_divergence)

from helpers import random_parameters

HAS_COMPILER = shutil.which(os.environ.get("CC", "cc")) is not None
needs_kernel = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler here: the fused kernel cannot be built "
                                                           "(.ci/run installs one)")


def network_outputs(model, x, jacobian, seed=0):
    """T and (with ``jacobian``) the packed Jacobian of ``model`` at ``x`` and the parameters' gradients of a random
    linear functional of them (zeros for parameters it does not reach), all in float64. mGradNet-M takes its fused
    kernel for float32 inputs on the CPU and torch's autograd through every operation for inputs that take a
    gradient; mGradNet-C likewise."""
    model.zero_grad()
    out, packed = model._evaluate(x, jacobian)
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)).sum()
    if jacobian:
        loss = loss + (packed * torch.randn(packed.shape, generator=g, dtype=torch.float64).to(out.dtype)).sum()
    loss.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    return [t.detach().double() for t in [out] + ([packed] if jacobian else []) + grads]


def mgradnet_m_paths(model, x, jacobian):
    """``network_outputs`` of mGradNet-M ``model`` (float64) by autograd through every operation in float64 (x taking
    a gradient), by the fused kernel in float32, and by torch's float32 path with the kernel off."""
    exact = network_outputs(model, x.double().requires_grad_(), jacobian)
    fused = network_outputs(copy.deepcopy(model).float(), x, jacobian)
    with _fused.use(False):
        plain = network_outputs(copy.deepcopy(model).float(), x, jacobian)
    return exact, fused, plain


@needs_kernel
def test_the_kernel_builds_and_is_used_where_a_compiler_is():
    params = tuple(MGradNetM(2, width=4, modules=2).parameters())
    x = torch.rand(5, 2)
    assert _fused.mgradnet_applies(x, params), _fused.status()
    assert _fused.status().startswith("in use")
    # Only float32 on the CPU with d = 2: anything else keeps torch's path.
    assert not _fused.mgradnet_applies(x.double(), tuple(p.double() for p in params))
    assert not _fused.mgradnet_applies(torch.rand(5, 3), tuple(MGradNetM(3, width=4, modules=2).parameters()))
    with _fused.use(False):
        assert not _fused.mgradnet_applies(x, params)
        assert _fused.status().startswith("switched off")


@needs_kernel
@pytest.mark.parametrize("n, modules, width, scale, jacobian", [
    (777, 4, 32, 0.5, True),      # a last tile of 9 samples
    (1, 1, 2, 0.3, False),        # one sample, two units, the map without its Jacobian
    (300, 2, 5, 6.0, True),       # sharp softmaxes: most exponents clamped
    (1000, 32, 128, 1.0, True),   # the paper's MNIST network
])
def test_fused_network_and_its_parameter_gradients_match_float64(monkeypatch, n, modules, width, scale, jacobian):
    model = random_parameters(MGradNetM(2, width=width, modules=modules), scale, seed=modules)
    x = 4 * torch.rand(n, 2, generator=torch.Generator().manual_seed(n)) - 2
    calls = []
    monkeypatch.setattr(_fused, "mgradnet_forward", lambda *a, **k: calls.append(1) or mgradnet_forward(*a, **k))
    exact, fused, plain = mgradnet_m_paths(model, x, jacobian)
    assert calls, "the float32 network did not run the fused kernel"
    names = ["T"] + (["packed J"] if jacobian else []) + [name for name, _ in model.named_parameters()]
    for name, f, p, e in zip(names, fused, plain, exact):
        size = e.abs().max().item()
        error, torch_error = (f - e).abs().max().item(), (p - e).abs().max().item()
        # torch's path is right (to float32's rounding), and the kernel as accurate as it, to a few units in the
        # last place of the largest entry.
        assert torch_error <= 1e-4 * size + 1e-6, (name, torch_error, size)
        assert error <= 4 * torch_error + 1e-6 * size + 1e-7, (name, error, torch_error, size)


mgradnet_forward = _fused.mgradnet_forward


def largest_unit_input(model, x):
    """Per module of mGradNet-M, the largest |u| = |sp(beta)(W_j x + b_j)| over the box that holds x: the rule by
    which the kernel takes a module's two blocks in one pass (at most 80) or one by one."""
    scale = torch.nn.functional.softplus(model.beta.detach().double())[:, None]
    W, b = model.W.detach().double(), model.bias.detach().double()
    lo, hi = x.double().amin(0), x.double().amax(0)
    return (scale * ((W @ (lo + hi) / 2 + b).abs() + W.abs() @ (hi - lo) / 2)).amax(1)


@needs_kernel
def test_modules_taken_in_one_pass_or_block_by_block_both_match_float64():
    # Module 0 reaches |u| = 79 (e^{+-u} near the ends of float32, in one pass), module 1 |u| = 120 (its blocks one
    # by one, each row's largest input first), module 2 small (one pass).
    model = random_parameters(MGradNetM(2, width=6, modules=3), 0.5, seed=3)
    x = 4 * torch.rand(400, 2, generator=torch.Generator().manual_seed(1)) - 2
    with torch.no_grad():
        reach = largest_unit_input(model, x)
        model.W[:2] *= (torch.tensor([79.0, 120.0], dtype=torch.float64) / reach[:2])[:, None, None]
        model.bias[:2] *= (torch.tensor([79.0, 120.0], dtype=torch.float64) / reach[:2])[:, None]
        reach = largest_unit_input(model, x)
    assert reach[0] <= 80 < reach[1] and reach[2] < 20, reach
    exact, fused, plain = mgradnet_m_paths(model, x, jacobian=True)
    for name, f, p, e in zip(["T", "packed J"] + [name for name, _ in model.named_parameters()], fused, plain, exact):
        size, torch_error = e.abs().max().item(), (p - e).abs().max().item()
        assert (f - e).abs().max().item() <= 4 * torch_error + 1e-6 * size + 1e-7, name


@needs_kernel
def test_far_exponents_are_clamped_not_overflowed():
    # Units 1000 apart in their inputs: each block's softmax is one-hot, every other exponent below -87. The block of
    # +u takes unit 0 (bias 1000), the block of -u unit 2 (bias -1000); a one-hot softmax has no Jacobian.
    model = MGradNetM(2, width=3, modules=1)
    with torch.no_grad():
        model.W.copy_(torch.tensor([[[0.5, 1.0], [2.0, -1.0], [-1.0, 3.0]]]))
        model.bias.copy_(torch.tensor([[1000.0, 0.0, -1000.0]]))
        for p in (model.alpha, model.beta, model.softmax_a, model.softmax_b):
            p.fill_(math.log(math.e - 1.0))                                           # softplus = 1
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    assert _fused.mgradnet_applies(x, tuple(model.parameters()))
    T, packed, *grads = network_outputs(model, x, jacobian=True)
    # T = W_0 - W_2 (g = g' = 1), the same for both samples.
    torch.testing.assert_close(T, torch.tensor([[1.5, -2.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(packed, torch.zeros(2, 3, dtype=torch.float64))
    assert all(torch.isfinite(g).all() for g in grads)
    grad_W = grads[0][0]
    # The unit no block takes gets none of the gradient (its clamped weight e^-87 leaves ~1e-37).
    assert grad_W[1].abs().max() < 1e-30 and grad_W[0].abs().max() > 1e-3


@needs_kernel
def test_float32_network_with_the_kernel_matches_autograd_in_float64():
    exact = random_parameters(MGradNetM(2, width=32, modules=4), 0.5, seed=3)
    x = torch.randn(257, 2, generator=torch.Generator().manual_seed(1))
    ref_out, ref_logdet = autograd_map_and_logdet(exact, x.double())
    model = copy.deepcopy(exact).float()
    out, logdet = model.map_and_logdet(x)
    assert _fused.mgradnet_applies(x, tuple(model.parameters()))
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logdet.double(), ref_logdet, rtol=1e-4, atol=1e-4)
    # The parameters' gradients of a loss on T and log det, fused and on torch's path in float32, against autograd
    # through every operation in float64 (x taking a gradient keeps the network off both).
    ref_out, ref_logdet = autograd_map_and_logdet(exact, x.double().requires_grad_())
    exact_grads = torch.autograd.grad(ref_out.square().sum() + ref_logdet.sum(), list(exact.parameters()))
    grads = {}
    for fused in (True, False):
        model.zero_grad()
        with _fused.use(fused):
            out, logdet = model.map_and_logdet(x)
            (out.square().sum() + logdet.sum()).backward()
        grads[fused] = [p.grad.clone() for p in model.parameters()]
    for (name, _), f, p, e in zip(model.named_parameters(), grads[True], grads[False], exact_grads):
        torch.testing.assert_close(f, p, rtol=1e-4, atol=1e-4 * p.abs().max().item(), msg=name)
        torch.testing.assert_close(f.double(), e, rtol=1e-4, atol=1e-4 * e.abs().max().item(), msg=name)


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


@needs_kernel
@pytest.mark.parametrize("activation", ["weighted-tanh", "tanh"])
@pytest.mark.parametrize("dim, width, depth", [(2, 32, 4), (2, 5, 1), (5, 16, 3)])
@pytest.mark.parametrize("jacobian", [True, False])
def test_fused_cascade_and_its_gradients_match_float64(monkeypatch, activation, dim, width, depth, jacobian):
    # Random parameters and inputs spread so that units saturate (|z| > 9, where tanh is 1 in float32) and pass near 0.
    exact = random_parameters(MGradNetC(dim, width=width, depth=depth, activation=activation), 1.0, seed=dim + depth)
    x = 3 * torch.randn(300, dim, generator=torch.Generator().manual_seed(1))        # 300: tiles of 128 and a rest
    reference = network_outputs(exact, x.double(), jacobian)
    calls = []
    monkeypatch.setattr(_fused, "cascade_forward", lambda *a, **k: calls.append(1) or cascade_forward(*a, **k))
    got = network_outputs(copy.deepcopy(exact).float(), x, jacobian)
    assert calls, "the float32 network did not run the fused cascade"
    names = ["T"] + (["packed J"] if jacobian else []) + [name for name, _ in exact.named_parameters()]
    for name, a, b in zip(names, got, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()), msg=name)


cascade_forward = _fused.cascade_forward


@needs_kernel
@pytest.mark.parametrize("activation", ["weighted-tanh", "tanh"])
def test_fused_cascade_log_det_and_its_gradients_match_float64(monkeypatch, activation):
    # At d = 2 the kernel also takes log det J and its gradient (MGradNetC.map_and_logdet): against autograd through
    # every operation in float64, of a loss weighing each sample's T and log det at random.
    exact = random_parameters(MGradNetC(2, width=32, depth=4, activation=activation), 1.0, seed=3)
    x = 3 * torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    weights = torch.randn(300, 2, generator=g, dtype=torch.float64), torch.randn(300, generator=g, dtype=torch.float64)

    def outputs(model, points):
        model.zero_grad()
        out, logdet = model.map_and_logdet(points)
        ((out * weights[0].to(out.dtype)).sum() + (logdet * weights[1].to(out.dtype)).sum()).backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
        return [t.detach().double() for t in (out, logdet, *grads)]

    reference = outputs(exact, x.double())
    calls = []
    monkeypatch.setattr(_fused, "cascade_forward", lambda *a, **k: calls.append(k.get("logdet", a[5:6] == (True,)))
                        or cascade_forward(*a, **k))
    got = outputs(copy.deepcopy(exact).float(), x)
    assert calls == [True], "the float32 network did not take its log det in the fused cascade"
    names = ["T", "log det"] + [name for name, _ in exact.named_parameters()]
    for name, a, b in zip(names, got, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()), msg=name)


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
    model = random_parameters(MGradNetM(2, width=8, modules=2), 0.5)
    x = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))
    assert not _fused.mgradnet_applies(x, tuple(model.float().parameters()))
    assert "no C compiler found ('no-such-compiler-here')" in _fused.status()
    exact, fallback, _ = mgradnet_m_paths(model.double(), x, jacobian=True)
    for f, e in zip(fallback, exact):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-5)


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
    assert hasattr(main, "gradnet_mgradnet_forward") and not hasattr(main, "gradnet_cascade_forward")
    assert hasattr(cascade, "gradnet_cascade_forward") and not hasattr(cascade, "gradnet_mgradnet_forward")


@needs_kernel
@pytest.mark.parametrize("n, m, epsilon, spread", [(256, 256, 1e-3, 1.0), (200, 131, 1e-2, 5.0), (7, 300, 0.1, 20.0)])
def test_fused_sinkhorn_loop_gives_the_potentials_of_torch_loop(n, m, epsilon, spread):
    g = torch.Generator().manual_seed(n + m)
    x = spread * torch.rand(n, 2, generator=g)
    y = spread * torch.rand(m, 2, generator=g) + 0.1 * spread
    both = torch.cat([x, y])
    schedule = _epsilon_schedule(float((both.amax(0) - both.amin(0)).square().sum()), epsilon, 0.7, 3)
    assert _fused.sinkhorn_applies(x, y)
    self_from = len(schedule) - 3          # as sinkhorn_divergence runs it: the self terms at the last eps only
    fused = _fused.sinkhorn_potentials(x, y, schedule, debias=True, self_from=self_from)
    xd, yd = x.double(), y.double()
    costs = [_squared_distances(p, q) for p, q in ((xd, yd), (yd, xd), (xd, xd), (yd, yd))]
    exact = _sinkhorn_loop(*costs, torch.full((n,), -math.log(n), dtype=torch.float64),
                           torch.full((m,), -math.log(m), dtype=torch.float64), schedule, self_from)
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
def test_a_softmin_does_not_depend_on_the_guess_that_spares_a_pass():
    # The kernel shifts the exponents by the guess in one pass; a tile where that loses the largest term or nears
    # float32's top is taken again from its rows' largest exponents. Guesses exact, close, far either way, NaN.
    g = torch.Generator().manual_seed(5)
    p, q = torch.rand(300, 2, generator=g), torch.rand(200, 2, generator=g)
    eps = 1e-3
    h = eps * torch.randn(200, generator=g) - math.log(200)
    assert _fused.sinkhorn_applies(p, q)
    out, bary = _fused.softmin_barycentre(p, q, h, eps)
    exact = _softmin(eps, _squared_distances(p.double(), q.double()), h.double())
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=2e-6)
    far = torch.where(torch.arange(300) % 3 == 0, 1.0, -1.0)          # tiles with some lanes far off, some not
    for guess in (out, out + 0.003, out + 0.2 * far, torch.full_like(out, math.nan)):
        got, got_bary = _fused.softmin_barycentre(p, q, h, eps, guess)
        torch.testing.assert_close(got, out, rtol=0, atol=1e-6)
        torch.testing.assert_close(got_bary, bary, rtol=0, atol=1e-6)


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
