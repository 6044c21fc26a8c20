"""Digits: morph one handwritten digit into another (image densities, bandwidth annealing)."""

import streamlit as st

from gradnet_core import ui

PAGE = "digits"

ui.page_header("Digits")
st.markdown(
    "Each image becomes a density on the unit square: a small Gaussian on every lit pixel, weighted by "
    "its brightness. Training anneals the Gaussians' width from blurry to sharp. Draw a digit, upload "
    "a picture, or pick a bundled example for each side."
)
locked = ui.is_training(PAGE)
images = {}
for side, col in zip(("source", "target"), st.columns(2)):
    with col:
        images[side] = ui.digit_input(PAGE, side, disabled=locked)
samples = ui.truth_samples_input(PAGE, disabled=locked)
problem = ui.digit_problem(PAGE, images["source"], images["target"], samples)
ui.training_panel(PAGE, problem, preset="digits")
ui.results_panel(PAGE, problem)
