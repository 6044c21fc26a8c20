"""GradNetOT Studio: learn optimal transport maps with monotone gradient networks, live.

Run with ``streamlit run app.py``. The pages live in ``pages/``; their shared pieces in ``studio/``
(``studio.navigation`` says why every page's URL is its file name and why the pages draw the menu).
"""

import streamlit as st

from studio.device import after_prewarm, prewarm
from studio.navigation import PAGES

st.set_page_config(page_title="GradNetOT Studio", layout="wide")
after_prewarm()  # no page imports beside the background import below (a module could come half initialised)

pages = [st.Page(page.script, title=page.title, url_path=page.url_path, default=page is PAGES[0]) for page in PAGES]
st.navigation(pages, position="hidden").run()
prewarm()       # the training stack, imported in the background once the first page is out
