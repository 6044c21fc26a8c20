"""How charts and tables are drawn, and the projector view: large text and markers for a room.

``chart`` draws every Plotly figure of the transport pages. With the projector view on (a toggle in
the sidebar, drawn by ``navigation.page_header``) it draws the figure with 20 px text and markers
1.8 times larger, then puts the figure back as it was: figures are cached per run, so the view must
not change them. The page's own text grows with the root font size (``projector_css``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import streamlit as st

if TYPE_CHECKING:                  # the Home page draws no chart: keep Plotly out of its first render
    import plotly.graph_objects as go

__all__ = ["PROJECTOR_KEY", "projector", "projector_css", "chart", "table"]

PROJECTOR_KEY = "view.projector"
PROJECTOR_FONT = 20            # px, for chart text
PROJECTOR_MARKERS = 1.8        # times the usual marker size
PROJECTOR_CSS = "<style>html { font-size: 20px; }</style>"   # Streamlit sizes its text in rem
EMPTY_CELL = "\u2014"          # what a table shows where a value is missing (the grid's own default is "None")


def projector() -> bool:
    """Whether the projector view is on in this session."""
    return bool(st.session_state.get(PROJECTOR_KEY))


def projector_css() -> None:
    """Larger page text when the projector view is on."""
    if projector():
        st.html(PROJECTOR_CSS)


def chart(fig: "go.Figure", key: str, **kwargs: Any) -> None:
    """``st.plotly_chart(fig, key=key, ...)``, larger in the projector view (``fig`` is left unchanged)."""
    kwargs.setdefault("config", {"displayModeBar": False})
    if not projector():
        st.plotly_chart(fig, key=key, **kwargs)
        return
    layout = fig.layout
    # Each font's projector size: the text, the slider's labels and its "t = ..." value, and the annotations that
    # carry their own size (the panels' titles, 16 px: they stayed small beside 20 px text, as "t =" did at 14 px).
    fonts = [(layout.font, PROJECTOR_FONT)]
    fonts += [(slider.font, PROJECTOR_FONT - 4) for slider in layout.sliders]
    fonts += [(slider.currentvalue.font, PROJECTOR_FONT) for slider in layout.sliders]
    fonts += [(note.font, min(round(note.font.size * PROJECTOR_FONT / 13), PROJECTOR_FONT + 2))
              for note in layout.annotations if note.font.size]
    saved_fonts = [(font, font.size) for font, _ in fonts]
    markers = [(trace, trace.marker.size) for trace in fig.data
               if getattr(trace, "marker", None) is not None and isinstance(trace.marker.size, (int, float))]
    try:
        for font, size in fonts:
            font.size = size
        for trace, size in markers:
            trace.marker.size = size * PROJECTOR_MARKERS
        st.plotly_chart(fig, key=key, **kwargs)
    finally:
        for font, size in saved_fonts:
            font.size = size
        for trace, size in markers:
            trace.marker.size = size


#: Tables of up to this many rows are shown whole; longer ones scroll inside ten rows' height.
WHOLE_TABLE_ROWS = 30


def table(data: Any, column_config: dict[str, Any] | None = None) -> None:
    """``st.dataframe`` without the index, a dash in empty cells (a loaded map has no training time, a diverged run
    no MSE, and the grid would write "None" there), and every row in view up to ``WHOLE_TABLE_ROWS``: Table I's 25
    pairs scrolled inside ten rows, and a projector's audience saw two source digits of five (a review)."""
    import pandas as pd             # here: the Home page, which imports this module, draws no table

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    st.dataframe(frame, hide_index=True, column_config=column_config, placeholder=EMPTY_CELL,
                 height="content" if len(frame) <= WHOLE_TABLE_ROWS else "auto")
