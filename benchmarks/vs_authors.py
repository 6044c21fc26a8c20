"""Our training against the GradNetOT authors' own code, side by side in one run (issue 14).

    python benchmarks/vs_authors.py                       # per-step table, then time to accuracy
    python benchmarks/vs_authors.py --only step --rounds 3
    python benchmarks/vs_authors.py --only accuracy --cap 600

**The authors' column** is the method as published in github.com/cShreyas/GradNetOT by its authors:
their networks (``utils/models.py``: ``mGradNet_M`` of ``GNM_Module`` and ``WSoftmax``, ``mGradNet_C``
with ``nn.Tanh`` as their notebooks build it), their densities (``utils/pdfs.py``: the Cholesky
``MultivariateNormal`` and the ``torch.distributions`` pixel mixture of ``img2density``, rebuilt at
every step as ``main_morph.py`` does) and their loop (Jacobian by ``vmap(jacrev(model))``,
``slogdet``, ``F.l1_loss(logabsdet, log_p - log_q)``, ``clip_grad_norm_``, Adam or AdamW with
``StepLR``). Their formulas are rewritten here with the same computational structure (one
``F.linear`` per module or layer, their Python loops); no file of theirs is copied. The per-step
diagnostics of their high-dimensional notebook (a test MSE at every step) are left out.

**Our column** is ``gradnet_core.train`` with the preset of the same settings (``digits-paper``,
``digits``, ``gaussian-paper``), on a model whose weights are copied from the authors' model and
checked to give the same T(x) and log det J before anything is timed (at d >= 64 ours adds the
strict-convexity term, without which both Jacobians are singular: the weights are then copied but
not compared). **The autograd column** is our model through the authors' Jacobian path
(``MongeAmpere(jacobian="autograd")``), the comparison ``step_speed.py`` reports. Each draws its own
batches from the same densities with the same batch size.

Every figure is a median over interleaved rounds, one torch thread, wall and CPU seconds of this
thread. Time to accuracy: seconds until the map is within MSE 1e-3 of the truth (whitening, or the
barycentric projection of the exact plan for the digits), the error measured every ``--every`` steps
off the clock; the authors' runs are capped at ``--cap`` CPU seconds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch
import torch.distributions as D
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacrev, vmap
from torch.nn.utils import clip_grad_norm_

from _common import digit_images, interleaved, machine, table, time_train, with_steps
from gradnet_core import MGradNetC, MGradNetM, ImageDensity, train
from gradnet_core.experiments.highdim import highdim_problem
from gradnet_core.experiments.gaussian2d import paper_gaussian_pair
from gradnet_core.presets import train_preset
from time_to_accuracy import TARGET_MSE, digit_problem, gaussian_problem

# ------------------------------------------------------------------------------------------------
# The authors' method, rewritten (see the module docstring)
# ------------------------------------------------------------------------------------------------


def _xavier(rows: int, cols: int) -> Tensor:
    return nn.init.xavier_uniform_(torch.zeros(rows, cols))


class AuthorsM(nn.Module):
    """Their mGradNet-M: per module k, z = W_k^T WSoftmax(sp(beta_k)(W_k x + b_k)); T = sum sp(alpha_k) z_k + c."""

    def __init__(self, dim: int, width: int, modules: int):
        super().__init__()
        self.W = nn.ParameterList([nn.Parameter(_xavier(width, dim)) for _ in range(modules)])
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(width)) for _ in range(modules)])
        self.beta = nn.ParameterList([nn.Parameter(torch.rand(1)) for _ in range(modules)])
        self.sa = nn.ParameterList([nn.Parameter(torch.tensor(0.5)) for _ in range(modules)])
        self.sb = nn.ParameterList([nn.Parameter(torch.tensor(0.5)) for _ in range(modules)])
        self.alpha = nn.Parameter(torch.rand(modules))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        z = 0
        for k in range(len(self.W)):
            u = F.linear(x, self.W[k], self.b[k]) * F.softplus(self.beta[k])
            s = (F.softplus(self.sa[k].view(1, -1)) * F.softmax(u, dim=-1)
                 - F.softplus(self.sb[k].view(1, -1)) * F.softmin(u, dim=-1))
            z += F.softplus(self.alpha[k]) * F.linear(s, self.W[k].T)
        return z + self.bias

    def copy_to(self, ours: MGradNetM) -> MGradNetM:
        with torch.no_grad():
            ours.W.copy_(torch.stack(list(self.W)))
            ours.bias.copy_(torch.stack(list(self.b)))
            ours.beta.copy_(torch.cat(list(self.beta)))
            ours.softmax_a.copy_(torch.stack(list(self.sa)))
            ours.softmax_b.copy_(torch.stack(list(self.sb)))
            ours.alpha.copy_(self.alpha)
            ours.out_bias.copy_(self.bias)
        return ours


class AuthorsC(nn.Module):
    """Their mGradNet-C with tanh: z_0 = sp(beta_0)(Wx + b_0), z_l = sp(beta_l)(Wx + b_l) + sp(alpha_{l-1}) tanh z_{l-1},
    T = W^T sp(alpha_L) tanh z_L + c."""

    def __init__(self, dim: int, width: int, layers: int):
        super().__init__()
        self.W = nn.Parameter(_xavier(width, dim))
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(width)) for _ in range(layers)] + [nn.Parameter(torch.zeros(dim))])
        self.beta = nn.ParameterList([nn.Parameter(torch.rand(width)) for _ in range(layers)])
        self.alpha = nn.ParameterList([nn.Parameter(torch.rand(width)) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        z = F.softplus(self.beta[0]).view(1, -1) * F.linear(x, self.W, self.b[0])
        for i in range(len(self.beta) - 1):
            skip = F.softplus(self.beta[i + 1]).view(1, -1) * F.linear(x, self.W, self.b[i + 1])
            z = skip + F.softplus(self.alpha[i]).view(1, -1) * torch.tanh(z)
        z = F.softplus(self.alpha[-1]).view(1, -1) * torch.tanh(z)
        return F.linear(z, self.W.T, self.b[-1])

    def copy_to(self, ours: MGradNetC) -> MGradNetC:
        with torch.no_grad():
            ours.W.copy_(self.W)
            ours.bias.copy_(torch.stack(list(self.b)[:-1]))
            ours.out_bias.copy_(self.b[-1])
            ours.alpha.copy_(torch.stack(list(self.alpha)))
            ours.beta.copy_(torch.stack(list(self.beta)))
        return ours


class AuthorsGaussian:
    """Their MultivariateNormal: Cholesky once, log pdf by einsum with the inverse covariance."""

    def __init__(self, mean: Tensor, cov: Tensor):
        self.mean, self.d = mean, mean.shape[0]
        self.L = torch.linalg.cholesky(cov)
        self.log_det_cov = 2 * torch.log(torch.diag(self.L)).sum()
        self.cov_inv = torch.cholesky_inverse(self.L)
        self.norm = -0.5 * self.d * math.log(2 * math.pi)

    def sample(self, n: int) -> Tensor:
        return self.mean + torch.randn(n, self.d) @ self.L.T

    def log_pdf(self, x: Tensor) -> Tensor:
        diff = x - self.mean
        return self.norm - 0.5 * self.log_det_cov - 0.5 * torch.einsum("...i,ij,...j->...", diff, self.cov_inv, diff)


class AuthorsImage:
    """Their img2density: a torch.distributions mixture of one full-covariance Gaussian per lit pixel."""

    def __init__(self, img: Tensor, bandwidth: float):
        n = img.shape[0]
        gy, gx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        grid = torch.stack([gx, (n - 1) - gy], dim=-1).reshape(-1, 2).float() / (n - 1)
        w = img.reshape(-1) / img.sum()
        keep = w > 1e-3
        covs = torch.eye(2).unsqueeze(0).repeat(int(keep.sum()), 1, 1) * bandwidth
        self.cat = D.Categorical(w[keep])
        self.components = D.MultivariateNormal(loc=grid[keep], covariance_matrix=covs)

    def sample(self, n: int) -> Tensor:
        idx = self.cat.sample((n,))
        return self.components.sample((n,))[torch.arange(n), idx]

    def log_pdf(self, x: Tensor) -> Tensor:
        return torch.logsumexp(torch.log(self.cat.probs) + self.components.log_prob(x.unsqueeze(-2)), dim=-1)


class AuthorsRun:
    """Their training loop, one step at a time: ``densities(i)`` gives (source, target) at step i."""

    def __init__(self, model: nn.Module, densities: Callable[[int], tuple[Any, Any]], batch: int, optimizer: str,
                 lr: float, clip: float, step_size: int = 10**9, gamma: float = 1.0, total: int = 1000):
        self.model, self.densities, self.batch, self.clip, self.total = model, densities, batch, clip, total
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4) if optimizer == "adamw" else \
            torch.optim.Adam(model.parameters(), lr=lr)
        self.opt, self.sch = opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
        self.jacobian = vmap(jacrev(model))
        self.i = 0

    def step(self) -> float:
        self.opt.zero_grad()
        source, target = self.densities(self.i)
        samples = source.sample(self.batch)
        _, logabsdet = torch.linalg.slogdet(self.jacobian(samples).squeeze(1))
        out = self.model(samples)
        loss = F.l1_loss(logabsdet, source.log_pdf(samples) - target.log_pdf(out))
        loss.backward()
        clip_grad_norm_(self.model.parameters(), max_norm=self.clip)
        self.opt.step()
        self.sch.step()
        self.i += 1
        return loss.item()

    def timed(self, steps: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - wall) / steps, (time.thread_time() - cpu) / steps


def _annealed_images(src: Tensor, tgt: Tensor, total: int, start: float = 1e-2, end: float = 1e-4):
    def densities(i: int) -> tuple[AuthorsImage, AuthorsImage]:
        bw = start * (end / start) ** (i / total)
        return AuthorsImage(src, bw), AuthorsImage(tgt, bw)
    return densities


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------
#: label -> (network kind, dim, width, modules or layers, batch, problem, our preset, their settings)
CASES: dict[str, tuple[str, int, int, int, int, str, str, dict[str, Any]]] = {
    "paper MNIST: M 32 x 128, batch 1000": ("M", 2, 128, 32, 1000, "digits", "digits-paper",
                                             {"optimizer": "adamw", "lr": 1.0, "clip": 10.0, "step_size": 1000,
                                              "gamma": 0.5, "total": 10000}),
    "digit preset: M 4 x 32, batch 500": ("M", 2, 32, 4, 500, "digits", "digits",
                                          {"optimizer": "adamw", "lr": 1.0, "clip": 10.0, "step_size": 1000,
                                           "gamma": 0.5, "total": 10000}),
    **{f"Gaussian d={d}: {kind} 4 x 32, batch 1000": (kind, d, 32, 4, 1000, "gaussian", "gaussian-paper",
                                                       {"optimizer": "adam", "lr": 1e-2, "clip": 2.0})
       for d in (2, 16, 64, 128) for kind in ("M", "C")},
}


#: Our model through autograd (vmap of jacrev over our batched softmax blocks) needs more than this
#: machine's 24 GiB for mGradNet-M from this dimension on: the process was killed at d = 128.
AUTOGRAD_M_MAX_DIM = 128


def _problem(kind: str, dim: int):
    """(our source, our target, the authors' densities(i)) for a problem."""
    if kind == "digits":
        src, tgt = digit_images()
        ours = ImageDensity(src, bandwidth=1e-2), ImageDensity(tgt, bandwidth=1e-2)
        return (*ours, _annealed_images(torch.from_numpy(src), torch.from_numpy(tgt), total=10000))
    source, target = paper_gaussian_pair() if dim == 2 else highdim_problem(dim)
    theirs = tuple(AuthorsGaussian(g.mean.float(), g.cov.float()) for g in (source, target))
    return source, target, lambda i: theirs


def build_pair(kind: str, dim: int, width: int, size: int, seed: int) -> tuple[nn.Module, nn.Module, bool]:
    """(authors' model, ours with the same weights, whether the two must agree exactly)."""
    torch.manual_seed(seed)
    strict = dim > 32
    if kind == "M":
        theirs = AuthorsM(dim, width, size)
        ours = theirs.copy_to(MGradNetM(dim, width=width, modules=size, strict=strict))
    else:
        theirs = AuthorsC(dim, width, size)
        ours = theirs.copy_to(MGradNetC(dim, width=width, depth=size, activation="tanh", strict=strict))
    return theirs, ours, not strict


def check_same(theirs: nn.Module, ours: nn.Module, source, dim: int) -> None:
    """Raise unless the two models give the same T(x) and log det J on source samples."""
    x = source.sample(64, torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        t_ours, ld_ours = ours.map_and_logdet(x)
    t_theirs = theirs(x)
    ld_theirs = torch.linalg.slogdet(vmap(jacrev(theirs))(x).squeeze(1))[1]
    torch.testing.assert_close(t_ours, t_theirs.detach(), rtol=1e-4, atol=1e-5)
    finite = torch.isfinite(ld_theirs)
    torch.testing.assert_close(ld_ours[finite], ld_theirs[finite].detach(), rtol=1e-3, atol=1e-3)


def step_table(rounds: int, budget: float, only: str | None) -> str:
    rows = []
    for label, (kind, dim, width, size, batch, problem, preset, settings) in CASES.items():
        if only and only not in label:
            continue
        source, target, theirs_densities = _problem(problem, dim)
        theirs, ours, compare = build_pair(kind, dim, width, size, seed=0)
        if compare:
            check_same(theirs, ours, source, dim)
        autograd_model = build_pair(kind, dim, width, size, seed=0)[1]
        run = AuthorsRun(theirs, theirs_densities, batch, **settings)
        config = train_preset(preset, device="cpu", batch_size=batch)
        runs = {
            "authors": run.timed,
            "ours": lambda steps: time_train(ours, source, target, with_steps(config, steps)),
        }
        if not (kind == "M" and dim >= AUTOGRAD_M_MAX_DIM):
            runs["autograd"] = lambda steps: time_train(autograd_model, source, target,
                                                        with_steps(config.with_objective(jacobian="autograd"), steps))
        t = interleaved(runs, rounds, budget)
        a, o, g = t["authors"], t["ours"], t.get("autograd")
        rows.append([label, 1e3 * a.cpu, 1e3 * o.cpu, f"**{a.cpu / o.cpu:.1f}x**",
                     1e3 * g.cpu if g else "not run (memory)", f"{g.cpu / o.cpu:.1f}x" if g else "—",
                     f"{a.wall / o.wall:.1f}x", "yes" if compare else "copied (strict term)"])
        print(f"  {label}: authors {1e3 * a.cpu:.1f} ms, ours {1e3 * o.cpu:.1f} ms ({a.cpu / o.cpu:.1f}x), "
              f"autograd {1e3 * g.cpu if g else math.nan:.1f} ms", flush=True)
    return table(["training step", "authors CPU ms", "ours CPU ms", "authors / ours", "our model, autograd CPU ms",
                  "autograd / ours", "authors / ours (wall)", "same T and log det"], rows)


# ------------------------------------------------------------------------------------------------
# Time to accuracy
# ------------------------------------------------------------------------------------------------
def authors_time_to(run: AuthorsRun, score: Callable[[nn.Module], float], steps: int, every: int,
                    cap: float) -> dict[str, Any]:
    """CPU seconds of the authors' loop until ``score`` <= TARGET_MSE (scored off the clock)."""
    cpu, best = 0.0, math.inf
    for i in range(1, steps + 1):
        t = time.thread_time()
        run.step()
        cpu += time.thread_time() - t
        if i % every == 0 or i == steps or cpu > cap:
            mse = score(run.model)
            best = min(best, mse)
            if mse <= TARGET_MSE:
                return {"reached": True, "cpu": cpu, "step": i, "mse": mse}
            if cpu > cap:
                break
    return {"reached": False, "cpu": cpu, "step": i, "mse": mse, "best": best}


def ours_time_to(model: nn.Module, source, target, config, score, every: int) -> dict[str, Any]:
    """CPU seconds of ``train`` until ``score`` <= TARGET_MSE: a scored run for the curve, a plain run for the clock."""
    curve: list[tuple[int, float]] = []
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate(progress) -> None:
        if progress.step % every == 0 or progress.step == progress.total:
            curve.append((progress.step, score(progress.model)))

    config = replace(config, report_seconds=0.0, assess=False)
    train(model, source, target, config, evaluate)
    model.load_state_dict(start)
    clock = [(0, 0.0)]
    cpu = time.thread_time()
    train(model, source, target, config, lambda p: clock.append((p.step, time.thread_time() - cpu)))
    first = next((s for s, m in curve if m <= TARGET_MSE), None)
    steps, seconds = zip(*clock)
    return {"reached": first is not None, "step": first, "mse": curve[-1][1],
            "cpu": float(np.interp(first, steps, seconds)) if first else seconds[-1]}


def accuracy_table(seeds: int, every: int, cap: float) -> str:
    rows = []
    cases = {
        "2-D Gaussian, M 4 x 32 (ours: gaussian preset; authors: their notebook)":
            ("M", 2, 32, 4, "gaussian", gaussian_problem, {"batch": 1000, "optimizer": "adam", "lr": 1e-2, "clip": 2.0},
             1000),
        "digits 0 -> 4 (ours: digit preset, M 4 x 32; authors: main_morph.py, M 32 x 128)":
            ("M", 2, 128, 32, "digits", lambda: digit_problem(((0, 0), (4, 1))),
             {"batch": 1000, "optimizer": "adamw", "lr": 1.0, "clip": 10.0, "step_size": 1000, "gamma": 0.5,
              "total": 10000}, 10000),
    }
    for label, (kind, dim, width, size, preset, make, settings, their_steps) in cases.items():
        source, target, score = make()
        ours_runs, theirs_runs = [], []
        for seed in range(seeds):
            if preset == "digits":
                src, tgt = digit_images()
                densities = _annealed_images(torch.from_numpy(src), torch.from_numpy(tgt), total=10000)
                torch.manual_seed(seed)
                theirs = AuthorsM(2, 128, 32)
                ours = AuthorsM(2, 32, 4).copy_to(MGradNetM(2, width=32, modules=4))
                ours_source, ours_target = (ImageDensity(i, bandwidth=1e-2) for i in (src, tgt))
            else:
                theirs, ours, _ = build_pair(kind, dim, width, size, seed)
                g = tuple(AuthorsGaussian(d.mean.float(), d.cov.float()) for d in (source, target))
                densities = lambda i, g=g: g
                ours_source, ours_target = source, target
            config = train_preset(preset, device="cpu", seed=seed)
            ours_runs.append(ours_time_to(ours, ours_source, ours_target, config, score, every))
            theirs_runs.append(authors_time_to(AuthorsRun(theirs, densities, **settings), score, their_steps, every, cap))
            print(f"  {label}, seed {seed}: ours {ours_runs[-1]}, authors {theirs_runs[-1]}", flush=True)
        o = statistics.median(r["cpu"] for r in ours_runs)
        reached = [r for r in theirs_runs if r["reached"]]
        a = statistics.median(r["cpu"] for r in theirs_runs)
        if len(reached) == len(theirs_runs):
            ratio = f"**{a / o:.0f}x**"
            theirs_text = f"{a:.1f} s (steps {', '.join(str(r['step']) for r in theirs_runs)})"
        else:
            ratio = f"**> {a / o:.0f}x**"
            mses = ", ".join(f"{r['mse']:.1e}" for r in theirs_runs)
            theirs_text = (f"not reached by {len(theirs_runs) - len(reached)} of {len(theirs_runs)} seeds in "
                           f"{a:.0f} s (step {max(r['step'] for r in theirs_runs)}, MSE {mses})")
        rows.append([label, f"{o:.2f} s (steps {', '.join(str(r['step']) for r in ours_runs)})", theirs_text, ratio])
    return table(["problem", f"ours: CPU s to MSE <= {TARGET_MSE:g}", "authors", "authors / ours"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("step", "accuracy"))
    parser.add_argument("--case", help="only step cases whose label contains this text")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per timed call")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--cap", type=float, default=600.0, help="CPU seconds per authors' run to accuracy")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"Machine: {machine()}\n", flush=True)
    if args.only != "accuracy":
        print(step_table(args.rounds, args.budget, args.case) + "\n", flush=True)
    if args.only != "step":
        print(accuracy_table(args.seeds, args.every, args.cap) + "\n", flush=True)
    print(f"Load average at the end: {machine().rsplit('load average', 1)[1].strip()}")


if __name__ == "__main__":
    main()
