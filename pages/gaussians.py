"""Gaussians: a 2-D source and target from sliders or presets, ground truth in closed form."""

import streamlit as st

from gradnet_core import presets
from studio import gallery, inputs, panels, state
from studio.navigation import page_header

PAGE = "gaussians"

page_header("Gaussians")
st.markdown(
    "Transport one 2-D Gaussian onto another. The exact optimal map is affine, "
    "$T^*(x) = m_t + A(x - m_s)$ with $A = \\Sigma_s^{-1/2}(\\Sigma_s^{1/2}\\Sigma_t\\Sigma_s^{1/2})^{1/2}"
    "\\Sigma_s^{-1/2}$ (whitening when the target is $N(0, I)$), so the learned map can be checked exactly."
)
locked = state.is_training(PAGE)
gallery.demo_bar(PAGE, disabled=locked)
rows = inputs.gaussian_inputs(PAGE, disabled=locked)
problem = inputs.gaussian_problem(PAGE, rows)
panels.training_panel(PAGE, problem, preset="gaussian", objectives=tuple(presets.OBJECTIVE_CHOICES)[:4])
panels.results_panel(PAGE, problem)
