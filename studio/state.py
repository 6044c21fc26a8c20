"""What a page keeps in the session, and the life of its training job.

Per page, everything lives in ``st.session_state[f"{page}.state"]`` (a ``PageState``): the running
job, what the finished jobs produced and the inputs worth keeping across pages. Views (toggles,
downloads) only read it, so changing a view never retrains.

A job is started with ``start_job`` and collected by ``is_training``, which every page calls before
drawing its inputs: a finished job's ``store`` files its result in the state and its message becomes
a notice.
"""

from __future__ import annotations

import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import streamlit as st

from gradnet_core.training import TrainResult

from .jobs import TrainingJob, watch_session
from .problems import Reference, Run
from .store import store

__all__ = ["PageState", "RunsAside", "page_state", "key", "kept_runs", "kept_result", "start_job", "is_training", "release_closed"]

#: How a finished job's result is filed in the page state: ``store(state, job)``.
Store = Callable[["PageState", TrainingJob], None]


@dataclass
class RunsAside:
    """Runs set aside when a run on other inputs joined the page (``panels.add_run``), to be brought back with the
    inputs they were trained on: a review lost a live run to an opened demo, told only after."""

    runs: list[Run]                  # oldest first
    problem: dict[str, Any]          # Problem.describe() of the problem they were trained on
    reference: Reference | None = None   # its ground truth; None until computed (runs brought back by a reload)
    words: str = ""                  # its inputs in a few words (inputs.inputs_summary), once computed

    @property
    def signature(self) -> str:
        return self.runs[-1].signature


@dataclass
class PageState:
    """What one page keeps in the session."""

    job: TrainingJob | None = None
    job_label: str = ""                    # what trains, for the live panel ("mGradNet-M")
    job_finishing: str = ""                # what the live panel says while the job's finish hook runs
    job_store: Store | None = None         # files the job's result in this state when it ends
    pinned: dict[str, Any] = field(default_factory=dict)  # the inputs' values the running job started with
    preview_points: np.ndarray | None = None  # source points the live preview maps, if any
    preview_target: np.ndarray | None = None  # target samples drawn beside them
    runs: list[Run] = field(default_factory=list)        # transport pages: runs on the problem, oldest first
    shown: list[int] = field(default_factory=list)       # the numbers of the (up to two) runs shown
    runs_version: int = 0                                 # changes with the list (resets its widgets)
    run_counter: int = 0                                  # numbers runs #1, #2, ...
    reference: Reference | None = None                    # transport pages: the ground truth
    pending_demo: Any = None                              # a gallery map to file once the inputs are set
    token: str = ""                                       # the session token its runs are kept under (store)
    page: str = ""                                        # the page it belongs to
    outcome: Any = None                                   # other pages: their last result
    notices: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) from the last job
    set_aside: str = ""                                   # what the last run added set aside (panels.add_run)
    earlier: list[RunsAside] = field(default_factory=list)  # runs on earlier inputs, the latest set aside first
    inputs_version: int = 0                               # renews the canvas and uploaders when inputs are restored
    cache: dict[Any, Any] = field(default_factory=dict)  # figures and files of the current results
    tables: dict[str, Any] = field(default_factory=dict)  # mixture tables: base and edited
    drawings: dict[str, Any] = field(default_factory=dict)  # canvas drawings, kept across pages
    uploads: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # side -> (file name, image)
    uploaded_here: set[str] = field(default_factory=set)  # sides whose upload is a file in the uploader on screen
    kept: tuple[str, list[tuple[Run, dict[str, Any]]]] | None = None  # (token, its runs on disk): kept_runs's load
    kept_result: tuple[str, Any] | None = None            # (token, its one result on disk): kept_result's load
    # random presets drawn so far, from a random start: from 0 in every session, the first pair after a reload was the
    # first before it, and its run joined the runs set aside on it (a review)
    counter: int = field(default_factory=lambda: secrets.randbelow(2**31))


def page_state(page: str) -> PageState:
    """The page's state in this session, created on first use."""
    name = f"{page}.state"
    if name not in st.session_state:
        st.session_state[name] = PageState()
        _SESSIONS.setdefault(_session_id(), []).append(weakref.ref(st.session_state[name]))
    return st.session_state[name]


def kept_runs(page: str, keep: bool = True) -> list[tuple[Run, dict[str, Any]]]:
    """The runs of ``page`` this session's token kept on disk (a reload brings them back), each with its problem's
    description, loaded from the store once: the inputs (to show the problem the runs were trained on) and the results
    panel (to file the runs) both read them when a page starts afresh. ``keep`` False drops the loaded runs after."""
    state = page_state(page)
    token = st.session_state.get("session.token")
    if not token:
        return []
    if state.kept is None or state.kept[0] != token:
        state.kept = (token, store().load(token, page))
    runs = state.kept[1]
    if not keep:
        state.kept = None
    return runs


def kept_result(page: str) -> tuple[Any, TrainResult, dict[str, Any]] | None:
    """The one result of ``page`` this session's token kept on disk (the Colour transfer page's: ``RunStore.save_result``),
    loaded once: the inputs (to show the pictures it was trained on) and the training panel (to file it) read it."""
    state = page_state(page)
    token = st.session_state.get("session.token")
    if not token:
        return None
    if state.kept_result is None or state.kept_result[0] != token:
        state.kept_result = (token, store().load_result(token, page))
    return state.kept_result[1]


#: Each session's page states (weakly), so that a closed session's can be released (``release_closed``).
_SESSIONS: dict[str, list[weakref.ref]] = {}
_GONE_SINCE: dict[str, float] = {}


def _session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def release_closed(is_active: Callable[[str], bool], after: float, now: float | None = None) -> int:
    """Empty the page states of sessions gone (``is_active(id)`` False) for ``after`` seconds or more: their
    runs, pictures and ground truth, and abandon their trainings. Returns how many sessions were released.

    Streamlit keeps a closed tab's session for a reconnect (``server.disconnectedSessionTTL``), then forgets
    it only when another tab closes: after a class had left, its sessions' trained maps and figures stayed
    in the server's memory indefinitely (issue 17). Called with that TTL, this frees them on time."""
    now = time.monotonic() if now is None else now
    released = 0
    for session in list(_SESSIONS):
        if is_active(session):
            _GONE_SINCE.pop(session, None)
            continue
        if now - _GONE_SINCE.setdefault(session, now) < after:
            continue
        for ref in _SESSIONS.pop(session):
            state = ref()
            if state is not None:
                if state.job is not None:
                    state.job.abandon()
                state.__dict__.update(PageState().__dict__)
        _GONE_SINCE.pop(session, None)
        released += 1
    return released


def key(page: str, *parts: Any) -> str:
    """A widget key of the page: ``"page.part.part"``."""
    return ".".join([page, *map(str, parts)])


def start_job(page: str, job: TrainingJob, *, label: str, finishing: str, store: Store,
              preview: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Start ``job`` for the page. The live panel names it ``label`` and shows ``finishing`` while its
    finish hook runs; ``preview`` is (source points, target samples) for the live preview, if any."""
    state = page_state(page)
    busy = [name.removesuffix(".state") for name, other in st.session_state.items()
            if str(name).endswith(".state") and isinstance(other, PageState) and other is not state
            and other.job is not None and not other.job.done]
    if busy:
        raise ValueError(f"This browser session is already training on its {busy[0].replace('_', ' ')} page; one "
                         "training at a time per session. Wait for it, or press Stop there.")
    state.preview_points, state.preview_target = preview if preview is not None else (None, None)
    state.job = job.start()
    state.pinned = _input_values(page)
    _watch_this_session(job)
    state.job_label, state.job_finishing, state.job_store = label, finishing, store
    state.notices = []
    state.cache.pop("live", None)


def _watch_this_session(job: TrainingJob) -> None:
    """A closed tab abandons its training within a few seconds (``jobs.watch_session``), freeing the CPU;
    under a running server only (AppTest has no runtime to ask)."""
    from streamlit import runtime

    session = _session_id()
    if not session or not runtime.exists():
        return
    server = runtime.get_instance()
    watch_session(job, lambda: server.is_active_session(session))


def _collect(state: PageState) -> None:
    """Move a finished job's outcome into the page state."""
    job = state.job
    if job is None or not job.done:
        return
    state.job = None
    if state.token:
        store().end_training(state.token, state.page)
    if job.error is not None:
        state.notices = [("error", job.error)]
        return
    state.job_store(state, job)
    state.notices = outcome_notices(job.result) + removed_notice(state)


def removed_notice(state: PageState) -> list[tuple[str, str]]:
    """The note on the runs the last run added removed (``PageState.set_aside``), once."""
    said, state.set_aside = state.set_aside, ""
    return [("info", said)] if said else []


#: The label of the expander under a run's verdict with the whole account (a notice of kind "details").
DETAILS_LABEL = "How the map was trained and judged"


def outcome_notices(result: TrainResult) -> list[tuple[str, str]]:
    """What the page says about a finished run: green only when training completed and the verdict
    holds; a warning that says what is wrong when the map is not the optimal map. The box holds the verdict in one
    bold line and, when it fails, what to do; what was trained and how the map was judged follow in an expander
    (kind "details"): reviews found the whole account, 60 to 130 words in the box, too long to find the answer in,
    and a class reads the box from the back of the room."""
    verdict = result.verdict
    if result.stopped == "diverged":
        return [("error", result.message)]
    if verdict is None:
        return [("success" if result.stopped == "completed" else "warning", result.message)]
    kind = "success" if result.stopped == "completed" and verdict.ok else "warning"
    headline = ("The map is close to the optimal map." if verdict.ok else
                "The map cannot be judged: too few points." if "samples" in verdict.failed else
                f"The map is not the optimal map: {verdict.fault}.")
    if result.stopped != "completed":
        headline += " Training was stopped before its last step."
    advice = "" if verdict.ok else verdict.advice
    return [(kind, f"**{headline}**{advice}"), ("details", f"{result.message}\n\n{verdict.message}")]


def show_notices(notices: list[tuple[str, str]]) -> None:
    """Draw a page's notices: each in its box (``st.success``, ``st.warning``, ...), a "details" one in an expander."""
    for kind, text in notices:
        if kind == "details":
            with st.expander(DETAILS_LABEL):
                st.markdown(text)
        else:
            getattr(st, kind)(text)


def _input_values(page: str) -> dict[str, Any]:
    """The page's widget values that session state may set (numbers, choices, text: not buttons, whose
    values are booleans, nor uploads, tables or drawings)."""
    prefix = page + "."
    return {name: value for name, value in st.session_state.items()
            if str(name).startswith(prefix) and type(value) in (int, float, str)}


def is_training(page: str) -> bool:
    """True while a job of this page runs; collects a finished one first. Call it before the page draws
    any widget: while training, the inputs are drawn disabled, and Streamlit drops the value a browser
    sends for a disabled widget in favour of the last completed run's. A value typed just before Train
    (its run cut short by the click's) would then reset on screen to the one before, and be the next
    training's (issue 17, seen under load); so the values the job started with are set again here."""
    state = page_state(page)
    _collect(state)
    if state.job is None:
        state.pinned = {}
    for name, value in state.pinned.items():
        st.session_state[name] = value
    return state.job is not None
