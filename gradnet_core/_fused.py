"""Fused CPU kernels (float32, d = 2), compiled on first use: mGradNet-M from its parameters (its softmax blocks
combined into T and its packed Jacobian), mGradNet-C's cascade (at any d), the image KDE's log-sum-exp, and the
Sinkhorn divergence's softmins.

The softmax kernel (``_fused.c`` beside this file) computes, for every block and sample, the softmax of
the block's units and its average of the block's output rows in one pass over each tile of samples,
and the backward pass by recomputing the softmax instead of storing it (docs/method.md §2.3). torch
does the same in four batched matmuls and a softmax over a (blocks, n, h) tensor written to and read
from memory several times; at the paper's MNIST network that tensor is 33 MB. The image KDE's
log-sum-exp over its pixels is the same computation with one block (``densities.ImageDensity``).
The Sinkhorn loop runs the dozens of softmins of ``sample_losses._sinkhorn_potentials`` without
gradients, each in two passes over the points; in torch each is a handful of operations on a cost
matrix, whose per-call overhead is most of the time at a few hundred points (docs/method.md §3.5).
Its last, differentiable softmins take their gradients from the same pass (``softmin_barycentre``).
mGradNet-C's cascade is a scalar recursion per unit given Wx, which torch runs as some fifty small operations a
layer with their backward; the kernel runs it unit by unit and back, recomputing it (``cascade_forward``,
``cascade_backward``), and at d = 2 takes Wx, T and the packed Jacobian too.

They are built with the system's C compiler (``$CC``, else ``cc``) into a cache folder keyed by the
source, the flags and the CPU, and loaded with ctypes: no Python headers, no build step at install,
about a second once per machine. Where no compiler works, torch's path is used and ``status()``
says why. ``GRADNET_FUSED=0`` in the environment switches the kernels off; ``use(False)`` does so in
a block of code (the benchmarks compare both paths with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["usable", "cascade_usable", "mgradnet_applies", "kde", "mgradnet_forward", "mgradnet_backward",
           "CASCADE_ACTIVATIONS", "cascade_forward", "cascade_backward", "sinkhorn_applies", "sinkhorn_potentials",
           "softmin_barycentre", "status", "use"]

_SOURCE = Path(__file__).with_name("_fused.c")
#: -fno-trapping-math lets the compiler vectorise the exponent's clamp (a compare); it changes no result.
_FLAGS = ["-O3", "-fopenmp-simd", "-fno-trapping-math", "-shared", "-fPIC"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_status = "not built yet: it is built the first time mGradNet-M trains or maps on the CPU"
_tried = False
#: mGradNet-C's cascade, a second library from the same file (-DGRADNET_CASCADE), built when first needed.
_cascade_library: ctypes.CDLL | None = None
_cascade_tried = False
_enabled = os.environ.get("GRADNET_FUSED", "1") != "0"


def status() -> str:
    """Whether the fused kernel is in use, and if not, why."""
    if not _enabled:
        return "switched off (GRADNET_FUSED=0 or use(False)): torch's path is used"
    return _status


@contextlib.contextmanager
def use(enabled: bool) -> Iterator[None]:
    """Within the block, mGradNet-M uses the fused kernel (where it applies) or torch's path."""
    global _enabled
    before, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = before


def _eligible(tensors: tuple[Tensor, ...]) -> bool:
    """The kernels are switched on and every tensor is float32 on the CPU."""
    return _enabled and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def cascade_usable(*tensors: Tensor) -> bool:
    """``usable`` for mGradNet-C's cascade, whose library is built the first time it is asked for."""
    return _eligible(tensors) and _load_cascade() is not None


def usable(*tensors: Tensor) -> bool:
    """True when the kernels are on and built (building them if need be) and every tensor is float32 on the CPU:
    what every kernel needs before its shapes."""
    return _eligible(tensors) and _load() is not None


def mgradnet_applies(x: Tensor, parameters: tuple[Tensor, ...]) -> bool:
    """True when the kernel computes mGradNet-M (``networks._SoftmaxModules``) at these inputs ``(n, 2)`` with these
    parameters (building it if need be)."""
    return x.shape[1] == 2 and usable(x, *parameters)


def kde(x: Tensor, points: Tensor, log_weights: Tensor, half_precision: float, log_norm: float,
        slope: bool) -> tuple[Tensor, Tensor | None]:
    """An image KDE's log-density at ``x (n, 2)`` (``densities.ImageDensity``, pixels ``points (m, 2)`` with
    ``log_weights (m,)``, kernel variance s, ``half_precision`` 1 / 2s, ``log_norm`` -log 2 pi s) and, with
    ``slope``, its gradient in x ``(n, 2)``: ``forward``'s pass with one block, its inputs and outputs formed in C."""
    x, points, log_weights = x.contiguous(), points.contiguous(), log_weights.contiguous()
    logp, grad = x.new_empty(x.shape[0]), (torch.empty_like(x) if slope else None)
    _check(_library.gradnet_kde(x.shape[0], points.shape[0], *_pointers(x, points, log_weights),
                                half_precision, log_norm, logp.data_ptr(), None if grad is None else grad.data_ptr()))
    return logp, grad


def mgradnet_forward(x: Tensor, parameters: tuple[Tensor, ...],
                     jacobian: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """mGradNet-M at ``x (n, 2)`` from its ``parameters`` (W, bias, alpha, beta, softmax_a, softmax_b, out_bias): T
    ``(n, 2)`` and, with ``jacobian``, the packed Jacobian ``(n, 3)`` (else ``(n, 0)``); then the blocks' averages and
    log-normalisers, which ``mgradnet_backward`` reads."""
    x, parameters = x.contiguous(), [t.contiguous() for t in parameters]
    (n, _), (modules, h, _) = x.shape, parameters[0].shape
    c = 5 if jacobian else 2
    out, lse = x.new_empty(2 * modules, n, c), x.new_empty(2 * modules, n)
    T, P = x.new_empty(n, 2), x.new_empty(n, c - 2)
    _check(_library.gradnet_mgradnet_forward(n, modules, h, c, *_pointers(x, *parameters, out, lse, T, P)))
    return T, P, out, lse


def mgradnet_backward(x: Tensor, parameters: tuple[Tensor, ...], out: Tensor, lse: Tensor, grad_T: Tensor,
                      grad_P: Tensor | None) -> tuple[Tensor, ...]:
    """The gradients of the ``parameters`` given those of ``mgradnet_forward``'s T and P (``grad_P`` None without
    the Jacobian)."""
    x, parameters = x.contiguous(), [t.contiguous() for t in parameters]
    (n, _), (modules, h, _), c = x.shape, parameters[0].shape, out.shape[-1]
    grad_P = grad_T.new_zeros(n, 3) if grad_P is None else grad_P.contiguous()
    grads = [torch.empty_like(t) for t in parameters]
    _check(_library.gradnet_mgradnet_backward(n, modules, h, c, *_pointers(x, *parameters[:-1], out, lse,
                                                                         grad_T.contiguous(), grad_P, *grads)))
    return tuple(grads)


#: mGradNet-C's activations the cascade kernel has: the weighted tanh, and tanh as its case a = 1, b = 0.
CASCADE_ACTIVATIONS = ("weighted-tanh", "tanh")


def cascade_forward(inputs: Tensor, W: Tensor | None, layers: tuple[Tensor, ...], jacobian: bool,
                    plain: bool = False, logdet: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """mGradNet-C's cascade, unit by unit, with ``layers = (sb, c, sa, aa, ab)``, each ``(L, h)`` (the weighted
    tanh's scales aa, ab; 1 and 0 for tanh). With ``W`` None, ``inputs`` is ``wx = x W^T (n, h)`` and the outputs S
    and, when ``jacobian``, delta ``(n, h)``, with T = S W + c_L and J = W^T diag(delta) W. At d = 2 with
    ``W (h, 2)``, ``inputs`` is x ``(n, 2)`` and the outputs T - c_L ``(n, 2)`` and the packed Jacobian ``(n, 3)``;
    ``plain`` (tanh itself: aa = 1, ab = 0) lets that kernel skip the weighted tanh's terms. The third output, with
    ``logdet`` (d = 2 and ``jacobian``), is log det J ``(n,)``; else None."""
    inputs, layers = inputs.contiguous(), [t.contiguous() for t in layers]
    n, h, depth = inputs.shape[0], layers[0].shape[1], layers[0].shape[0]
    d = 0 if W is None else 2
    out = inputs.new_empty(n, 2 if d else h)
    packed = inputs.new_empty(n, 3 if d else h) if jacobian else None
    ld = inputs.new_empty(n) if logdet else None
    _check(_cascade_library.gradnet_cascade_forward(n, h, depth, d, int(plain), inputs.data_ptr(),
                                            None if W is None else W.contiguous().data_ptr(), *_pointers(*layers, out),
                                            *(None if t is None else t.data_ptr() for t in (packed, ld))))
    return out, packed, ld


def cascade_backward(inputs: Tensor, W: Tensor | None, layers: tuple[Tensor, ...], grad_out: Tensor,
                     grad_packed: Tensor | None, plain: bool = False, packed: Tensor | None = None,
                     grad_logdet: Tensor | None = None) -> tuple[Tensor, ...]:
    """The gradients of ``inputs`` (``W`` None) or of ``W`` (d = 2; x gets none) and of each of ``layers``, given
    those of ``cascade_forward``'s outputs (``grad_packed`` None when it formed no Jacobian: zeros). With
    ``grad_logdet`` (d = 2), that of its log det instead of ``grad_packed``, and ``packed`` the Jacobians it was
    formed from."""
    inputs, layers, grad_out = inputs.contiguous(), [t.contiguous() for t in layers], grad_out.contiguous()
    n, h, depth = inputs.shape[0], layers[0].shape[1], layers[0].shape[0]
    d = 0 if W is None else 2
    if grad_logdet is None:
        grad_packed = inputs.new_zeros(n, 3 if d else h) if grad_packed is None else grad_packed.contiguous()
        ends = (grad_packed, None, None)
    else:
        ends = (None, packed.contiguous(), grad_logdet.contiguous())
    W = None if W is None else W.contiguous()
    grads = [torch.empty_like(inputs if W is None else W)] + [torch.empty_like(t) for t in layers]
    _check(_cascade_library.gradnet_cascade_backward(n, h, depth, d, int(plain), inputs.data_ptr(),
                                             None if W is None else W.data_ptr(), *_pointers(*layers, grad_out),
                                             *(None if t is None else t.data_ptr() for t in ends), *_pointers(*grads)))
    return tuple(grads)


def sinkhorn_applies(x: Tensor, y: Tensor) -> bool:
    """True when the kernel runs ``sinkhorn_potentials`` for these point clouds (building it if need be)."""
    return x.shape[1] == y.shape[1] == 2 and usable(x, y)


def sinkhorn_potentials(x: Tensor, y: Tensor, schedule: list[float], debias: bool,
                        self_from: int = 0) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The loop of ``sample_losses._sinkhorn_loop`` without gradients: the dual potentials f_ba (n,),
    g_ab (m,) and, when ``debias``, f_aa (n,), g_bb (m,), after the updates at each eps of ``schedule`` (the self
    terms' from step ``self_from`` on)."""
    x, y = x.detach().contiguous(), y.detach().contiguous()
    n, m = x.shape[0], y.shape[0]
    f_ba, g_ab = x.new_empty(n), x.new_empty(m)
    f_aa, g_bb = (x.new_empty(n), x.new_empty(m)) if debias else (f_ba, g_ab)
    steps = torch.tensor(schedule, dtype=torch.float32)
    _check(_library.gradnet_sinkhorn_potentials(n, m, *_pointers(x, y, steps), len(schedule), int(debias),
                                                int(self_from), *_pointers(f_ba, g_ab, f_aa, g_bb)))
    return (f_ba, g_ab, f_aa, g_bb) if debias else (f_ba, g_ab, None, None)


def softmin_barycentre(p: Tensor, q: Tensor, h: Tensor, eps: float,
                       guess: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The softmin -eps log sum_j exp(h_j - |p_i - q_j|^2 / eps) ``(n,)`` for ``p: (n, 2)``, ``q: (m, 2)``,
    ``h: (m,)``, and its weighted mean of the q_j ``(n, 2)``; no gradients. ``guess (n,)``, a softmin near this one
    (the Sinkhorn loop's last), spares the kernel a pass over q; any guess gives the same result."""
    p, q, h = p.detach().contiguous(), q.detach().contiguous(), h.detach().contiguous()
    guess = None if guess is None else guess.detach().contiguous()
    out, bary = p.new_empty(p.shape[0]), torch.empty_like(p)
    _check(_library.gradnet_softmin_barycentre(p.shape[0], q.shape[0], *_pointers(p, q, h), ctypes.c_float(eps),
                                               None if guess is None else guess.data_ptr(), *_pointers(out, bary)))
    return out, bary


def _pointers(*tensors: Tensor) -> list[int]:
    return [t.data_ptr() for t in tensors]


def _check(code: int) -> None:
    """A kernel's return code: 0 done, 1 shapes it does not have, 2 out of memory."""
    if code == 2:
        raise MemoryError("a fused kernel could not allocate its working memory")
    if code != 0:
        raise RuntimeError("a fused kernel was called with shapes it does not have (a bug in gradnet_core)")


def _load() -> ctypes.CDLL | None:
    global _library, _status, _tried
    if _tried:
        return _library
    with _lock:
        if not _tried:
            try:
                _library = _bind(ctypes.CDLL(str(_build())))
                _status = ("in use: mGradNet-M's softmax blocks, the image KDE and the Sinkhorn loop run in the "
                           "fused kernels (float32, d = 2, CPU); mGradNet-C's cascade (any d) is built the first time "
                           "one runs on the CPU")
            except (OSError, subprocess.SubprocessError) as err:
                _status = f"not available ({err}); torch's path is used"
            _tried = True
    return _library


def _load_cascade() -> ctypes.CDLL | None:
    global _cascade_library, _cascade_tried
    if _cascade_tried:
        return _cascade_library
    with _lock:
        if not _cascade_tried:
            try:
                _cascade_library = _bind(ctypes.CDLL(str(_build(cascade=True))), cascade=True)
            except (OSError, subprocess.SubprocessError):
                _cascade_library = None                  # torch's path; status() says why for the main library
            _cascade_tried = True
    return _cascade_library


def _bind(library: ctypes.CDLL, cascade: bool = False) -> ctypes.CDLL:
    """The C signatures of ``library``'s functions: the default library's, or with ``cascade`` the cascade's."""
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    if cascade:
        signatures = {"gradnet_cascade_forward": [i64, i64, i64, i32, i32] + [ptr] * 10,
                      "gradnet_cascade_backward": [i64, i64, i64, i32, i32] + [ptr] * 17}
    else:
        signatures = {"gradnet_mgradnet_forward": [i64, i64, i64, i32] + [ptr] * 12,
                      "gradnet_mgradnet_backward": [i64, i64, i64, i32] + [ptr] * 18,
                      "gradnet_sinkhorn_potentials": [i64, i64, ptr, ptr, ptr, i32, i32, i32] + [ptr] * 4,
                      "gradnet_softmin_barycentre": [i64, i64, ptr, ptr, ptr, ctypes.c_float, ptr, ptr, ptr],
                      "gradnet_kde": [i64, i64, ptr, ptr, ptr, ctypes.c_double, ctypes.c_double, ptr, ptr]}
    for name, argtypes in signatures.items():
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, i32
    return library


def _build(cascade: bool = False) -> Path:
    """The compiled kernel's path, compiling it unless the cache has it; with ``cascade``, mGradNet-C's library."""
    compiler = os.environ.get("CC", "cc")
    source = _SOURCE.read_bytes()
    folder, errors = _cache_folder(), []
    part = ["-DGRADNET_CASCADE"] if cascade else []
    # -march=native first: the sample loops then use the CPU's widest vectors. GCC keeps to 256-bit ones on CPUs with
    # AVX-512 unless told otherwise; told, the Sinkhorn loop and the digits preset's training ran 5-8 % faster on an
    # AVX-512 Xeon (2026-12-04). Compilers or CPUs without the option take the next set of flags.
    native = _FLAGS + part + ["-march=native"]
    wide = [native + ["-mprefer-vector-width=512"]] if platform.machine() in ("x86_64", "AMD64") else []
    for flags in wide + [native, _FLAGS + part]:
        key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(flags).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        target = folder / f"fused-{key}.so"
        if target.exists():
            return target
        partial = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            done = subprocess.run([compiler, *flags, str(_SOURCE), "-o", str(partial), "-lm"],
                                  capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise OSError(f"no C compiler found ({compiler!r})") from None
        if done.returncode == 0:
            os.replace(partial, target)            # atomic: another process may be building the same file
            return target
        partial.unlink(missing_ok=True)
        errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    raise OSError(f"{compiler} could not build {_SOURCE.name}: {'; '.join(errors)}")


def _cache_folder() -> Path:
    base = os.environ.get("GRADNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "gradnet_core")
    try:
        folder = Path(base)
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    # No writable cache (a read-only home): a private folder of this process, so it builds once per process.
    return Path(tempfile.mkdtemp(prefix="gradnet_core-"))


def _cpu_signature() -> str:
    """What -march=native depends on: the machine and, on Linux, the CPU's feature flags."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags.strip()}"
