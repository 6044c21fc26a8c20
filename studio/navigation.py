"""The app's pages, and the header every page draws first (layout, tab title, heading, menu).

``PAGES`` is the one list of pages: ``app.py`` hands it to ``st.navigation`` and ``page_header``
draws it as the menu.

Why every page sets itself up and the app draws its own menu: Streamlit treats a ``pages/`` folder
beside the entry script as legacy, auto-discovered pages until some session of the server has run
``st.navigation`` ("As soon as any session of your app executes the st.navigation command, your app
will ignore the pages/ directory (across all sessions)", from its documentation). So a link to
``/digits`` opened on a freshly started server runs ``pages/digits.py`` on its own, without
``app.py``; AppTest runs every page that way. Hence:

- each page's ``url_path`` is its file name, the URL legacy mode gives it, so a link names the same
  page in both modes (and a session that started in legacy mode keeps working after the switch: a
  page's identity is a hash of its ``url_path`` in both);
- ``page_header`` sets the wide layout and the title that ``app.py`` would have set;
- the built-in menu is off (``client.showSidebarNavigation = false`` in ``.streamlit/config.toml``;
  legacy mode would list file names, and "app") and ``page_header`` draws the menu with
  ``st.page_link``, which accepts a file in ``pages/`` in either mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from .session import session_token
from .view import PROJECTOR_KEY, projector_css

__all__ = ["AppPage", "PAGES", "page_header"]


@dataclass(frozen=True)
class AppPage:
    script: str                # path from the repository root (the entry script's folder)
    title: str

    @property
    def url_path(self) -> str:
        """The file's name without ``.py``: what legacy mode serves it under."""
        return Path(self.script).stem


PAGES = (                      # the first is the home page
    AppPage("pages/home.py", "Home"),
    AppPage("pages/gaussians.py", "Gaussians"),
    AppPage("pages/mixtures.py", "Gaussian mixtures"),
    AppPage("pages/digits.py", "Digits"),
    AppPage("pages/color_transfer.py", "Colour transfer"),
    AppPage("pages/paper_results.py", "Paper results"),
)


#: The URL's query parameter that keeps the projector view over a reload (``?projector=1``).
PROJECTOR_PARAM = "projector"


def page_header(title: str) -> None:
    """The wide layout, the tab's title, the menu of ``PAGES`` in the sidebar and the heading."""
    st.set_page_config(page_title=f"{title} · GradNetOT Studio", layout="wide")
    session_token()
    with st.sidebar:
        for page in PAGES:
            st.page_link(page.script, label=page.title)
        st.divider()
        # Kept in the URL too, as the session's token is, so that a reload in front of a class keeps the view.
        if PROJECTOR_KEY not in st.session_state and st.query_params.get(PROJECTOR_PARAM) == "1":
            st.session_state[PROJECTOR_KEY] = True
        on = st.toggle("Projector view", key=PROJECTOR_KEY, persist_state="session",
                       help="Large text and markers, for a class or a talk.")
    if on and st.query_params.get(PROJECTOR_PARAM) != "1":
        st.query_params[PROJECTOR_PARAM] = "1"
    elif not on and PROJECTOR_PARAM in st.query_params:
        del st.query_params[PROJECTOR_PARAM]
    projector_css()
    st.title(title)
