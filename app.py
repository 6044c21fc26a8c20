"""GradNetOT Studio: learn optimal transport maps with monotone gradient networks, live.

Run with ``streamlit run app.py``. The pages live in ``pages/``; their shared pieces in
``gradnet_core.ui``.
"""

import streamlit as st

st.set_page_config(page_title="GradNetOT Studio", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", default=True),
    st.Page("pages/gaussians.py", title="Gaussians"),
    st.Page("pages/mixtures.py", title="Gaussian mixtures"),
    st.Page("pages/digits.py", title="Digits"),
    st.Page("pages/color_transfer.py", title="Colour transfer"),
    st.Page("pages/paper_results.py", title="Paper results"),
]
st.navigation(pages).run()
