"""Instant demos: pre-trained maps shipped in ``assets/gallery/``, opened with one click.

Each file is a map written by ``scripts/make_gallery.py`` with ``save_map``; its description says which
page it belongs to, its title, and the page inputs that set its problem up (a Gaussian or mixture
preset's name, or the two MNIST digits). Opening a demo sets those inputs (in the button's callback,
before the widgets are drawn), and the page's training panel then files the map as a run measured on
the problem the inputs give (``open_pending``): the results appear at once, and Train retrains live.
No Streamlit here but for ``demo_bar``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from gradnet_core.files import load_map_file

from . import inputs
from .state import key, page_state

__all__ = ["Demo", "GALLERY_DIR", "demos", "demo_bar", "apply_inputs"]

GALLERY_DIR = Path(__file__).resolve().parents[1] / "assets" / "gallery"


@dataclass(frozen=True)
class Demo:
    """One pre-trained map of the gallery."""

    page: str                  # the page it opens on
    title: str                 # "0 -> 4 (MNIST)"
    path: Path
    inputs: dict[str, Any]     # the page inputs of its problem


@functools.lru_cache(maxsize=1)
def _all_demos() -> tuple[Demo, ...]:
    found = []
    for path in sorted(GALLERY_DIR.glob("*.safetensors")):
        demo = (load_map_file(path).extra or {}).get("demo") or {}
        if {"page", "title", "inputs"} <= set(demo):
            found.append(Demo(page=demo["page"], title=demo["title"], path=path, inputs=demo["inputs"]))
    return tuple(found)


def demos(page: str) -> list[Demo]:
    """The gallery's demos for ``page``, in file-name order."""
    return [demo for demo in _all_demos() if demo.page == page]


def apply_inputs(page: str, demo_inputs: dict[str, Any]) -> None:
    """Set the page's input widgets to a demo's problem (call from a callback, before they are drawn)."""
    if "preset" in demo_inputs:
        st.session_state[key(page, "preset")] = demo_inputs["preset"]
        (inputs.on_gaussian_preset if page == "gaussians" else inputs.on_mixture_preset)(page)
    for side in ("source", "target"):
        if side in demo_inputs:
            digit, index = demo_inputs[side]
            st.session_state[key(page, side, "mode")] = "Example"
            st.session_state[key(page, side, "set")] = demo_inputs.get("set", "mnist")
            st.session_state[key(page, side, "digit")] = int(digit)
            st.session_state[key(page, side, "index")] = int(index)


def _open(page: str, demo: Demo) -> None:
    apply_inputs(page, demo.inputs)
    page_state(page).pending_demo = demo.path


def demo_bar(page: str, disabled: bool) -> None:
    """A picker of the page's demos and an Open button: a trained map on screen at once, no waiting."""
    found = demos(page)
    if not found:
        return
    # one row, the button as wide as its words (in a fifth of a 900 px window it read "Open …": a review)
    row = st.container(horizontal=True, vertical_alignment="bottom")
    by_title = {demo.title: demo for demo in found}
    title = row.selectbox("Instant demo: a map trained in advance, shown at once (Train retrains it live)",
                          list(by_title), key=key(page, "demo"), disabled=disabled)
    row.button("Open demo", key=key(page, "open_demo"), disabled=disabled, on_click=_open,
               args=(page, by_title[title]), type="secondary")
