"""Gaussian mixtures: source and target as editable tables, ground truth by barycentric projection."""

import streamlit as st

from gradnet_core import presets
from studio import gallery, inputs, panels, state
from studio.navigation import page_header

PAGE = "mixtures"

page_header("Gaussian mixtures")
st.markdown(
    "Each row is a component: weight, mean, standard deviations and correlation. Weights that do not "
    "sum to 1 are rescaled. There is no closed form here, so the ground truth is the barycentric "
    "projection of the exact discrete OT plan between $n$ source and $n$ target samples, "
    "$\\hat T(x_i) = \\sum_j G_{ij} y_j / \\sum_j G_{ij}$."
)
locked = state.is_training(PAGE)
gallery.demo_bar(PAGE, disabled=locked)
rows = inputs.mixture_inputs(PAGE, disabled=locked)
samples = inputs.truth_samples_input(PAGE, disabled=locked)
problem = inputs.mixture_problem(PAGE, rows, samples)
panels.training_panel(PAGE, problem, preset="mixture", objectives=presets.MIXTURE_OBJECTIVES,
                      withheld=presets.MIXTURE_WITHHELD)
panels.results_panel(PAGE, problem)
