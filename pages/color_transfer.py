"""Colour transfer: learn a monotone map between two images' RGB pixel distributions (sample-only losses),
recolour the source, and compare with POT's EMD colour transfer."""

import streamlit as st

from studio import inputs, panels, state
from studio.navigation import page_header

PAGE = "color"

page_header("Colour transfer")
st.markdown(
    "Every pixel is a point in the RGB cube. A monotone gradient network $T$ learns to move the source "
    "image's cloud of colours onto the target's from **samples only** (no densities), then recolours every "
    "source pixel. Because $T$ is the gradient of a convex function, colour order is kept, and because it "
    "is continuous, smooth gradients stay smooth. POT's exact-OT (EMD) colour transfer on a subsample of "
    "pixels runs beside it."
)
locked = state.is_training(PAGE)
images = inputs.side_by_side(lambda side: inputs.color_image_input(PAGE, side, disabled=locked))
panels.color_training_panel(PAGE, images["source"], images["target"])
panels.color_results_panel(PAGE)
