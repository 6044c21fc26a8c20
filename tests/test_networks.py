"""Networks: closed-form Jacobian and log det == autograd, symmetric PSD Jacobians, validation."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gradnet_core import NETWORKS, InverseMap, MGradNetC, MGradNetM, MLPMap, build_map
from gradnet_core.networks import (ACTIVATIONS, autograd_jacobian, autograd_map_and_logdet, logdet_packed,
                                  unpack_jacobian)

from helpers import random_parameters


def perturbed(model, scale=0.5, seed=0):
    """float64 copy with random parameters, not just the initialisation."""
    return random_parameters(model, scale, seed)


def closed_form_models(d):
    return [
        MGradNetC(d, width=max(d, 8), depth=3),
        MGradNetC(d, width=6, depth=2, activation="tanh", strict=True),
        MGradNetC(d, width=max(d, 4), depth=2, activation="softplus"),
        MGradNetM(d, width=8, modules=max(2, d // 4 + 1)),
        MGradNetM(d, width=5, modules=2, strict=True),
    ]


@pytest.mark.parametrize("d", [1, 2, 3, 8, 32])
def test_closed_form_matches_autograd(d):
    x = torch.randn(7, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    for i, model in enumerate(closed_form_models(d)):
        model = perturbed(model, seed=i)
        out, logdet = model.map_and_logdet(x)
        ref_out, ref_logdet = autograd_map_and_logdet(model, x)
        torch.testing.assert_close(out, model(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
        jac, ref_jac = model.jacobian(x), autograd_jacobian(model, x)
        torch.testing.assert_close(jac, ref_jac, rtol=1e-6, atol=1e-9 * ref_jac.abs().max().item())
        finite = torch.isfinite(ref_logdet)
        assert finite.any(), f"{type(model).__name__} d={d}: reference log det is singular everywhere"
        torch.testing.assert_close(logdet[finite], ref_logdet[finite], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_logdet_gradients_match_autograd(d):
    """The closed form is also right to first order in the parameters (it is what training uses); at d <= 2
    mGradNet-M's parameters take their gradients by hand (networks._SoftmaxModules), with and without the strict
    term, and of T as well as of log det."""
    x = torch.randn(5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    weights = torch.randn(5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + d))
    for model in (perturbed(MGradNetM(d, width=6, modules=3)), perturbed(MGradNetM(d, width=5, modules=2, strict=True)),
                  perturbed(MGradNetC(d, width=6, depth=3))):
        params = list(model.parameters())

        def loss(out_logdet):
            return (out_logdet[0] * weights).sum() + out_logdet[1].sum()

        g_closed = torch.autograd.grad(loss(model.map_and_logdet(x)), params, allow_unused=True)
        g_auto = torch.autograd.grad(loss(autograd_map_and_logdet(model, x)), params, allow_unused=True)
        # The map alone (sample objectives train through it), without the Jacobian's columns.
        g_map = torch.autograd.grad((model(x) * weights).sum(), params, allow_unused=True)
        g_map_auto = torch.autograd.grad((model(x.clone().requires_grad_()) * weights).sum(), params,
                                         allow_unused=True)
        for p, a, b, c, e in zip(params, g_closed, g_auto, g_map, g_map_auto):
            for closed, auto in ((a, b), (c, e)):
                closed = torch.zeros_like(p) if closed is None else closed
                auto = torch.zeros_like(p) if auto is None else auto
                torch.testing.assert_close(closed, auto, rtol=1e-6, atol=1e-10)



@pytest.mark.parametrize("kind", ["C", "M"])
@pytest.mark.parametrize("scale", [0.5, 4.0])
def test_low_rank_logdet_matches_the_full_jacobian(kind, scale):
    # mGradNet-C with the strict term and width < d, and mGradNet-M with modules x width < d, take
    # log det J by the matrix determinant lemma; it must equal the log det of the full Jacobian, with
    # the same parameter gradients, also where saturated units or softmax blocks make parts of the
    # network's curvature vanish (scale 4).
    network = (MGradNetC(12, width=4, depth=3, activation="tanh", strict=True) if kind == "C"
               else MGradNetM(12, width=4, modules=2, strict=True))
    model = perturbed(network, scale=scale, seed=3)
    x = 2.0 * torch.randn(9, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = list(model.parameters())
    _, logdet = model.map_and_logdet(x)
    reference = torch.linalg.slogdet(autograd_jacobian(model, x))[1]
    torch.testing.assert_close(logdet, reference, rtol=1e-9, atol=1e-9)
    g_lemma = torch.autograd.grad(logdet.sum(), params, allow_unused=True)
    g_full = torch.autograd.grad(autograd_map_and_logdet(model, x)[1].sum(), params, allow_unused=True)
    for p, a, b in zip(params, g_lemma, g_full):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_the_paper_sized_modular_network_matches_autograd():
    # The paper's 32 x 128 mGradNet-M (64 softmax blocks of 128 units through _SoftmaxBlocks): map,
    # log det and every parameter gradient against the autograd path.
    model = perturbed(MGradNetM(2, width=128, modules=32), scale=1.0, seed=5)
    x = torch.rand(70, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = list(model.parameters())
    out, logdet = model.map_and_logdet(x)
    ref_out, ref_logdet = autograd_map_and_logdet(model, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logdet, ref_logdet, rtol=1e-8, atol=1e-10)
    weights = torch.linspace(0.5, 1.5, 70, dtype=torch.float64)
    ours = torch.autograd.grad((weights * logdet).sum() + out.square().sum(), params, allow_unused=True)
    reference = torch.autograd.grad((weights * ref_logdet).sum() + ref_out.square().sum(), params, allow_unused=True)
    for p, a, b in zip(params, ours, reference):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000), st.sampled_from(["C", "M"]), st.floats(0.1, 3.0),
       st.booleans())
def test_jacobian_symmetric_psd_for_random_parameters(d, seed, kind, scale, strict):
    torch.manual_seed(seed)
    model = (MGradNetC(d, width=5, depth=3, activation=list(ACTIVATIONS)[seed % 3], strict=strict)
             if kind == "C" else MGradNetM(d, width=5, modules=3, strict=strict))
    model = perturbed(model, scale=scale, seed=seed)
    x = 3.0 * torch.randn(20, d, dtype=torch.float64)
    jac = autograd_jacobian(model, x)       # independent of the closed form
    torch.testing.assert_close(jac, jac.transpose(1, 2), rtol=0, atol=1e-10 * (1 + jac.abs().max().item()))
    eig = torch.linalg.eigvalsh(jac)
    assert eig.min().item() >= -1e-9 * (1 + eig.abs().max().item())
    if strict:
        assert eig.min().item() >= model.eps * (1 - 1e-6)


def test_strict_term_keeps_logdet_finite_when_width_below_dim():
    x = torch.randn(10, 16)
    narrow = MGradNetC(16, width=4)          # rank <= 4: |det| at rounding level (or exactly 0)
    singular = narrow.map_and_logdet(x)[1]
    assert ((singular < -100) | torch.isneginf(singular)).all()
    strict = MGradNetC(16, width=4, strict=True)
    assert (strict.map_and_logdet(x)[1] > -60).all()


def test_logdet_falls_back_to_lu_where_cholesky_fails():
    # Rounding can leave a Jacobian that should be PSD slightly indefinite; Cholesky then fails.
    # Those rows take log |det| and its gradient J^-1 by LU, the rest keep the Cholesky path.
    torch.manual_seed(0)
    d = 5
    spd = torch.randn(3, d, d, dtype=torch.float64)
    spd = spd @ spd.transpose(1, 2) + 0.5 * torch.eye(d, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    indefinite = q @ torch.diag(torch.tensor([2.0, 1.0, 0.5, 0.1, -1e-9], dtype=torch.float64)) @ q.T
    matrices = torch.cat([spd, indefinite[None]])
    rows, cols = torch.triu_indices(d, d)
    packed = matrices[:, rows, cols].clone().requires_grad_(True)
    logdet = logdet_packed(packed, d)
    reference = torch.linalg.slogdet(unpack_jacobian(packed, d))[1]
    torch.testing.assert_close(logdet, reference)
    assert logdet[-1].item() == pytest.approx(math.log(2.0 * 1.0 * 0.5 * 0.1 * 1e-9), rel=1e-6)
    weights = torch.arange(1.0, 5.0, dtype=torch.float64)
    (ours,) = torch.autograd.grad((weights * logdet).sum(), packed)
    (expected,) = torch.autograd.grad((weights * reference).sum(), packed)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_mlp_baseline_is_not_monotone_but_has_a_logdet():
    model = MLPMap(2)
    assert not model.monotone and MGradNetM.monotone and MGradNetC.monotone
    x = torch.randn(4, 2)
    out, logdet = model.map_and_logdet(x)
    assert out.shape == (4, 2) and logdet.shape == (4,)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(model.jacobian(x))[1])


def test_registry_builds_every_network():
    for name in NETWORKS:
        model = build_map(name, dim=2)
        assert model(torch.zeros(3, 2)).shape == (3, 2)
    with pytest.raises(ValueError, match="unknown map"):
        build_map("ResNet", dim=2)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(dim=0), "dimension"), (dict(dim=2, width=0), "width"), (dict(dim=2, depth=-1), "depth"),
    (dict(dim=2, activation="relu6"), "activation"),
])
def test_bad_architecture_is_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        MGradNetC(**kwargs)


def test_modular_network_computes_the_gradient_of_its_potential():
    """T = grad u with u(x) = sum_k sp(alpha_k)/sp(beta_k) [sp(a_k) LSE(u_k) + sp(b_k) LSE(-u_k)] + c.x."""
    model = perturbed(MGradNetM(3, width=4, modules=2))
    sp = torch.nn.functional.softplus

    def potential(x):
        u = (torch.einsum("nd,khd->nkh", x, model.W) + model.bias) * sp(model.beta)[:, None]
        terms = sp(model.softmax_a) * torch.logsumexp(u, -1) + sp(model.softmax_b) * torch.logsumexp(-u, -1)
        return (sp(model.alpha) / sp(model.beta) * terms).sum(-1) + x @ model.out_bias

    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(potential(x).sum(), x)
    torch.testing.assert_close(model(x), grad)


# --------------------------------------------------------------------------------------------
# Inverse
# --------------------------------------------------------------------------------------------
def monotone_models(d):
    """Every monotone map of the library, with random float64 parameters."""
    from gradnet_core import CMGN, ICNNMap, MMGN
    models = closed_form_models(d) + [CMGN(d, width=8, depth=2), MMGN(d, width=6, modules=2), ICNNMap(d, width=8)]
    return [perturbed(m, 0.5, seed=i) for i, m in enumerate(models)]


@pytest.mark.parametrize("d", [1, 2, 5])
def test_inverse_undoes_the_map_both_ways(d):
    g = torch.Generator().manual_seed(d)
    for model in monotone_models(d):
        x = torch.randn(300, d, generator=g, dtype=torch.float64)
        with torch.no_grad():
            y = model(x)
        back = model.inverse(y)
        name = type(model).__name__
        torch.testing.assert_close(back, x, atol=1e-5, rtol=0, msg=f"T^-1(T(x)) != x for {name}")
        with torch.no_grad():
            torch.testing.assert_close(model(back), y, atol=1e-5, rtol=0, msg=f"T(T^-1(y)) != y for {name}")


def test_inverse_of_the_interpolant_solves_its_equation():
    model = perturbed(MGradNetM(2, width=8, modules=3), 0.5)
    y = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for t in (0.0, 0.3, 0.8):
        solution = model.solve_inverse(y, t=t)
        assert solution.converged.all()
        with torch.no_grad():
            torch.testing.assert_close((1 - t) * solution.x + t * model(solution.x), y, atol=1e-8, rtol=0)
            torch.testing.assert_close(solution.mapped, model(solution.x))
            torch.testing.assert_close(solution.jacobian, model.jacobian(solution.x))
    # A solution for a nearby t is a start that needs few steps and no recomputation.
    near = model.solve_inverse(y, model.solve_inverse(y, t=0.8), t=0.82)
    assert near.converged.all() and near.iterations <= 3


@pytest.mark.parametrize("inverse", [lambda model: model.inverse, lambda model: InverseMap(model)],
                         ids=["solve_inverse", "InverseMap"])
def test_inverse_of_an_affine_map_is_the_closed_form_inverse(inverse):
    """With W = 0 an mGradNet-C with the strict term is T(x) = c + A x, A = eps I + V^T V; both ways of
    inverting it (Newton from the map, and the InverseMap of it) give A^-1 (y - c)."""
    model = MGradNetC(2, width=4, depth=2, strict=True).double()
    with torch.no_grad():
        model.W.zero_()
        model.V.copy_(torch.tensor([[1.2, 0.3], [-0.4, 0.7]]))
        model.out_bias.copy_(torch.tensor([0.5, -1.0]))
    A = model._quadratic(torch.float64, torch.device("cpu"))
    y = torch.randn(100, 2, dtype=torch.float64)
    expected = torch.linalg.solve(A, (y - model.out_bias.detach()).T).T
    torch.testing.assert_close(inverse(model)(y), expected, atol=1e-9, rtol=0)


def test_points_outside_the_range_are_reported_not_invented():
    # Without the strict term mGradNet-M's range is bounded: a far point has no preimage.
    model = perturbed(MGradNetM(2, width=4, modules=2), 0.3)
    y = torch.tensor([[0.0, 0.0], [1e3, 1e3]], dtype=torch.float64)
    with torch.no_grad():
        y[0] = model(torch.zeros(1, 2, dtype=torch.float64))[0]
    solution = model.solve_inverse(y, max_iter=40)
    assert solution.converged.tolist() == [True, False]
    assert solution.residual[1] > 1.0
    with pytest.raises(ValueError, match="did not converge for 1 of 2 points"):
        model.inverse(y, max_iter=40)


def test_points_outside_the_range_cost_few_evaluations_each_iteration():
    """A point with no preimage creeps towards the range's edge in ever shorter steps; the line search
    starts near the step it took last, so it costs a few evaluations an iteration, not the thirty
    halvings from a full step that it took before."""
    torch.manual_seed(0)
    model = perturbed(MGradNetM(2, width=4, modules=2), 0.3)
    g = torch.linspace(-6, 6, 21, dtype=torch.float64)
    y = torch.cartesian_prod(g, g)
    calls = []
    evaluate = model.map_and_jacobian
    model.map_and_jacobian = lambda points: (calls.append(len(points)), evaluate(points))[1]
    solution = model.solve_inverse(y, max_iter=100)
    assert 0 < int(solution.converged.sum()) < len(y)            # some points in the range, most not
    assert len(calls) < 15 * solution.iterations              # 556 in 41 iterations; 1193 before
    with torch.no_grad():
        solved = solution.converged
        torch.testing.assert_close(model(solution.x[solved]), y[solved], atol=1e-8, rtol=0)


def test_inverse_is_refused_for_a_map_that_is_not_monotone():
    with pytest.raises(ValueError, match="not monotone"):
        MLPMap(2).inverse(torch.zeros(3, 2))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"y": torch.zeros(3, 3)}, "shape"),
    ({"y": torch.tensor([[0.0, math.nan]])}, "finite"),
    ({"y": torch.zeros(3, 2), "t": 1.5}, "t must lie"),
    ({"y": torch.zeros(3, 2), "start": torch.zeros(2, 2)}, "start must have"),
])
def test_bad_inverse_input_is_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        MGradNetM(2).solve_inverse(**kwargs)


def test_learned_gaussian_map_inverts_to_the_closed_form_inverse():
    from gradnet_core import Gaussian, train
    from gradnet_core.ground_truth import gaussian_map
    from gradnet_core.metrics import map_mse
    from gradnet_core.presets import PAPER_GAUSSIAN, train_preset

    p = PAPER_GAUSSIAN
    source, target = (Gaussian(p[side]["mean"], p[side]["cov"]) for side in ("source", "target"))
    model = MGradNetM(2)
    train(model, source, target, train_preset("gaussian"))
    y = target.sample(1000, torch.Generator().manual_seed(5))
    back = model.inverse(y)
    assert map_mse(back, gaussian_map(target, source)(y)) <= 1e-3


# --- InverseMap: the map a network trained in reverse gives ---------------------------------------

def test_inverse_map_undoes_its_network_with_the_inverse_jacobian():
    network = perturbed(MGradNetM(2, width=8, modules=3, strict=True), 0.5)
    inverse = InverseMap(network)
    x = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mapped, jac = inverse.map_and_jacobian(x)
    with torch.no_grad():
        torch.testing.assert_close(network(mapped), x, atol=1e-8, rtol=0)
        network_jac = network.jacobian(mapped)
    torch.testing.assert_close(jac @ network_jac, torch.eye(2, dtype=torch.float64).expand(200, 2, 2), atol=1e-8,
                               rtol=0)
    torch.testing.assert_close(jac, jac.transpose(1, 2))                      # the gradient of a convex function:
    assert (torch.linalg.eigvalsh(jac) > 0).all()                             # symmetric, positive definite
    _, logdet = inverse.map_and_logdet(x)
    torch.testing.assert_close(logdet, -torch.linalg.slogdet(network_jac).logabsdet)
    assert inverse.monotone and list(inverse.parameters()) == list(network.parameters())


def test_inverse_map_solves_the_interpolant_through_its_network():
    inverse = InverseMap(perturbed(MGradNetM(2, width=8, modules=3, strict=True), 0.5))
    y = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    for t in (0.0, 0.4, 1.0):
        solution = inverse.solve_inverse(y, t=t)
        assert solution.converged.all()
        torch.testing.assert_close((1 - t) * solution.x + t * inverse(solution.x), y, atol=1e-7, rtol=0)
        torch.testing.assert_close(solution.mapped, inverse(solution.x), atol=1e-7, rtol=0)
        torch.testing.assert_close(solution.jacobian, inverse.jacobian(solution.x), atol=1e-6, rtol=0)
    # at t = 1 the inverse of the inverse is the network itself, without a solve
    with torch.no_grad():
        torch.testing.assert_close(inverse.solve_inverse(y).x, inverse.base(y))


def test_inverse_map_needs_a_monotone_network():
    for base in (MLPMap(2), InverseMap(MGradNetM(2))):
        with pytest.raises(ValueError, match="only a monotone network has an inverse map"):
            InverseMap(base)


def test_strict_term_makes_the_range_the_whole_plane():
    network = perturbed(MGradNetM(2, width=4, modules=2), 0.3)
    far = torch.tensor([[1e2, 1e2]], dtype=torch.float64)
    assert not network.solve_inverse(far, max_iter=40).converged.all()
    network.add_strict_term()
    network.double()
    assert network.strict and network.solve_inverse(far, max_iter=100).converged.all()
