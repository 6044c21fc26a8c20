"""Home: what the app does, the few equations behind it, and where training runs."""

import importlib.util
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import streamlit as st

from studio.navigation import page_header
from studio.device import device_label

page_header("GradNetOT Studio")
st.markdown(
    "Learn **optimal transport maps** with **monotone gradient networks** and watch them move mass, "
    "next to the exact answer."
)

st.subheader("The idea in four equations")
st.markdown("**Optimal transport (Monge).** Among all maps $T$ that push the source density $p$ onto the "
            "target $q$ ($T_\\# p = q$), find the one that moves mass least:")
st.latex(r"T^\star = \arg\min_{T_\# p = q} \; \mathbb{E}_{x \sim p} \, \lVert x - T(x) \rVert^2 .")
st.markdown("**Brenier's theorem.** That map exists, is unique, and is the gradient of a convex function:")
st.latex(r"T^\star = \nabla u, \qquad u \text{ convex} \quad\Longleftrightarrow\quad "
         r"J_{T^\star}(x) \text{ symmetric positive semi-definite}.")
st.markdown("**Monotone gradient networks (mGradNets)** are built so that their Jacobian is symmetric "
            "positive semi-definite for every input and every weight, e.g. the modular mGradNet-M:")
# One formula per line: together they were wider than the page at 1280 px.
st.latex(r"T_\theta(x) = \sum_{k=1}^{K} \operatorname{sp}(\alpha_k)\, W_k^\top "
         r"\big[\operatorname{sp}(\gamma_k)\,\mathrm{softmax}(u_k) - \operatorname{sp}(\delta_k)\,"
         r"\mathrm{softmax}(-u_k)\big] + c,")
st.latex(r"u_k = \operatorname{sp}(\beta_k)(W_k x + b_k).")
st.markdown("**The Monge–Ampère loss.** A gradient of a convex function is the OT map exactly when it "
            "satisfies the change-of-variables equation; training penalises its residual on samples "
            "$x \\sim p$:")
st.latex(r"\log\det J_{T_\theta}(x) = \log p(x) - \log q\big(T_\theta(x)\big),")
st.latex(r"\mathcal{L}(\theta) = \mathbb{E}_{x\sim p} \big| \log\det J_{T_\theta}(x) - \log p(x) "
         r"+ \log q(T_\theta(x)) \big| .")

st.subheader("The pages")
st.markdown(
    "- **Gaussians**: source and target from sliders or presets (the paper's "
    "$N([1,-1], [[1,.7],[.7,1]]) \\to N(0, I)$, random pairs); the ground truth is the closed-form "
    "Gaussian map.\n"
    "- **Gaussian mixtures**: components in editable tables; the ground truth is the barycentric "
    "projection of the exact discrete OT plan (POT).\n"
    "- **Digits**: draw, upload or pick two handwritten digits and morph one into the other.\n"
    "- **Colour transfer**: a monotone map between the RGB pixel distributions of two pictures, "
    "learned from samples alone, beside POT's exact-OT colour transfer.\n"
    "- **Paper results**: the GradNetOT paper's Fig. 1 and a small Fig. 2 sweep run live, and the saved "
    "results of the long experiments next to the paper's values.\n\n"
    "On the Gaussians page you can also pick the training objective: the Monge–Ampère loss, the KL "
    "divergence or the constrained Wasserstein gradient flow (explicit or implicit steps); on the mixtures "
    "page the KL divergence, the Monge–Ampère loss or the Sinkhorn divergence, which sees target samples "
    "only (the page says why it offers no other).\n\n"
    "Every page trains live: a progress bar, the loss curve and a preview of the mapped points while it "
    "runs, then an animation of $x_t = (1-t)\\,x + t\\,T(x)$ beside the ground truth (and the "
    "unconstrained MLP baseline, if you train it), the metrics against the ground truth and downloads. "
    "After each training the page also says whether the map is the optimal map, from checks that need no "
    "ground truth (so they work for a digit you draw as well), and what is wrong when it is not."
)

st.subheader("This machine")
st.markdown(f"Training runs on the **{device_label()}**.")


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _library_version() -> str:
    """gradnet_core's ``__version__``, read from the package this app imports without importing it (and torch)."""
    spec = importlib.util.find_spec("gradnet_core")
    found = re.search(r'^__version__ = "([^"]+)"', Path(spec.origin).read_text(), re.M) if spec and spec.origin else None
    if found:
        return found.group(1)
    import gradnet_core

    return gradnet_core.__version__


packages = {"gradnet_core": _library_version(), "torch": _version("torch"), "streamlit": _version("streamlit"),
            "plotly": _version("plotly"), "POT": _version("pot"), "numpy": _version("numpy"),
            "streamlit-drawable-canvas": _version("streamlit-drawable-canvas"), "Pillow": _version("pillow")}
st.dataframe([{"library": k, "version": v} for k, v in packages.items()], hide_index=True, width="content")
