"""The browser session's token: 128 random bits in the page URL (``?session=...``), so that a reload
finds the session's runs again (``studio.store``). Light: imported by every page's header."""

from __future__ import annotations

import re
import secrets
from typing import Any

import streamlit as st

__all__ = ["TOKEN_PARAM", "new_token", "valid_token", "session_token"]

TOKEN_PARAM = "session"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def new_token() -> str:
    """A fresh unguessable session token (128 random bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def valid_token(token: Any) -> bool:
    """Whether ``token`` has the shape ``new_token`` gives (anything else is ignored, never stored)."""
    return isinstance(token, str) and bool(_TOKEN.match(token))


def session_token() -> str:
    """This browser session's token: from the page URL (a reload), else the session's, else a new one;
    written back to the URL, where moving between pages drops it, so that a reload finds it."""
    token = st.query_params.get(TOKEN_PARAM)
    if not valid_token(token):
        token = st.session_state.get("session.token")
        if not valid_token(token):
            token = new_token()
    st.session_state["session.token"] = token
    if st.query_params.get(TOKEN_PARAM) != token:
        st.query_params[TOKEN_PARAM] = token
    return token
