"""Digits: morph one handwritten digit into another (image densities, bandwidth annealing)."""

import streamlit as st

from studio import gallery, inputs, panels, state
from studio.navigation import page_header

PAGE = "digits"

page_header("Digits")
st.markdown(
    "Each image becomes a density on the unit square: a small Gaussian on every lit pixel, weighted by "
    "its brightness. Training anneals the Gaussians' width from blurry to sharp. Draw a digit, upload "
    "a picture, or pick a bundled example for each side."
)
locked = state.is_training(PAGE)
gallery.demo_bar(PAGE, disabled=locked)
images = inputs.side_by_side(lambda side: inputs.digit_input(PAGE, side, disabled=locked))
samples = inputs.truth_samples_input(PAGE, disabled=locked)
problem = inputs.digit_problem(PAGE, images["source"], images["target"], samples)
panels.training_panel(PAGE, problem, preset="digits")
panels.results_panel(PAGE, problem)
