"""Baselines: C-MGN / M-MGN closed-form Jacobians == autograd, ICNN Hessian symmetric PSD, registry, files."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gradnet_core import CMGN, MMGN, NETWORKS, ICNNMap, build_map
from gradnet_core.baselines import CMGN_ACTIVATIONS
from gradnet_core.files import map_from_bytes, map_to_bytes
from gradnet_core.networks import autograd_jacobian

from helpers import random_parameters


def perturbed(model, scale=0.3, seed=0):
    """float64 copy with random parameters, not just the initialisation."""
    return random_parameters(model, scale, seed)


def icassp_models(d):
    return [CMGN(d, width=6, depth=3, activation=act) for act in CMGN_ACTIVATIONS] + [
        CMGN(d, width=5, depth=1, eps=0.1), MMGN(d, width=6, modules=3), MMGN(d, width=4, modules=1, eps=0.2)]


@pytest.mark.parametrize("d", [1, 2, 5])
def test_icassp_closed_form_jacobian_matches_autograd(d):
    x = 1.5 * torch.randn(9, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    for i, model in enumerate(icassp_models(d)):
        model = perturbed(model, seed=i)
        out, logdet = model.map_and_logdet(x)
        torch.testing.assert_close(out, model(x), rtol=1e-12, atol=1e-12)
        jac, ref = model.jacobian(x), autograd_jacobian(model, x)
        torch.testing.assert_close(jac, ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(logdet, torch.linalg.slogdet(ref)[1], rtol=1e-6, atol=1e-6)


def test_icassp_formulas_by_hand():
    """T(x) written out from docs/method.md §2 for one input, against the networks."""
    torch.manual_seed(3)
    d = 3
    x = torch.randn(1, d, dtype=torch.float64)
    c = perturbed(CMGN(d, width=4, depth=3), seed=1)
    z = x @ c.W.T + c.bias[0]
    for layer in (1, 2):
        z = x @ c.W.T + torch.tanh(z) + c.bias[layer]
    expected = torch.tanh(z) @ c.W + x @ (c.V.T @ c.V) + c.out_bias
    torch.testing.assert_close(c(x), expected)
    m = perturbed(MMGN(d, width=4, modules=2), seed=2)
    expected = m.out_bias + x @ (m.V.T @ m.V)
    for k in range(2):
        zk = x @ m.W[k].T + m.bias[k]
        expected = expected + torch.log(torch.cosh(zk)).sum() * torch.tanh(zk) @ m.W[k]
    torch.testing.assert_close(m(x), expected)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 4), depth=st.integers(1, 3), scale=st.floats(0.1, 2.0))
def test_icnn_hessian_is_symmetric_psd_for_random_parameters(seed, d, depth, scale):
    model = perturbed(ICNNMap(d, width=8, depth=depth, strict=False), scale=scale, seed=seed)
    x = 2.0 * torch.randn(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    hess = model.jacobian(x)
    torch.testing.assert_close(hess, hess.transpose(1, 2), rtol=1e-10, atol=1e-10)
    eig = torch.linalg.eigvalsh(hess)
    assert eig.min() >= -1e-9 * max(1.0, eig.abs().max().item())


# torch.func.hessian's forward-mode AD loads decompositions that torch itself scripts with torch.jit
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_icnn_map_is_gradient_of_its_potential_and_hessian_matches_functorch():
    model = perturbed(ICNNMap(3, width=8, depth=3), seed=5)
    x = torch.randn(4, 3, dtype=torch.float64)
    single = lambda xi: model.potential(xi[None])[0]  # noqa: E731
    torch.testing.assert_close(model(x), torch.func.vmap(torch.func.grad(single))(x))
    torch.testing.assert_close(model.jacobian(x), torch.func.vmap(torch.func.hessian(single))(x))
    out, logdet = model.map_and_logdet(x)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(model.jacobian(x))[1])
    assert torch.isfinite(logdet).all()      # the strict quadratic makes the Hessian definite


def test_icnn_works_under_no_grad_and_trains():
    model = ICNNMap(2, width=8, depth=2)
    x = torch.randn(5, 2)
    with torch.no_grad():
        y = model(x)
        hess = model.jacobian(x)
    assert not y.requires_grad and not hess.requires_grad
    torch.testing.assert_close(y, model(x).detach())
    # create_graph: a loss on T(x) (and on log det) reaches every parameter
    loss = model(x).square().sum() + model.map_and_logdet(x)[1].sum()
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", ["C-MGN", "M-MGN", "ICNN"])
def test_baselines_are_monotone_maps(name):
    model = perturbed(build_map(name, dim=3), seed=7)
    assert model.monotone
    x, y = torch.randn(200, 3, dtype=torch.float64), torch.randn(200, 3, dtype=torch.float64)
    with torch.no_grad():
        inner = ((x - y) * (model(x) - model(y))).sum(-1)
    assert inner.min() >= -1e-9


@pytest.mark.parametrize("name, cls", [("C-MGN", CMGN), ("M-MGN", MMGN), ("ICNN", ICNNMap)])
def test_registry_and_file_round_trip(name, cls):
    assert NETWORKS[name] is cls
    assert isinstance(build_map(cls.__name__, dim=2), cls)
    model = perturbed(build_map(name, dim=2), seed=1).float()
    x = torch.randn(10, 2)
    loaded = map_from_bytes(map_to_bytes(model))
    assert type(loaded) is cls and loaded.config() == model.config()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="activation"):
        CMGN(2, activation="relu")
    with pytest.raises(ValueError, match="width"):
        MMGN(2, width=0)
    with pytest.raises(ValueError, match="eps"):
        CMGN(2, eps=-1.0)
    with pytest.raises(ValueError, match="depth"):
        ICNNMap(2, depth=0)
