"""A browser tab without a browser: Streamlit's websocket protocol spoken from Python, for load tests.

``Tab`` connects to ``ws://HOST/_stcore/stream`` and does what Streamlit's frontend does with it, as far
as a page of this app needs: it asks for a page run with a ``ClientState`` (query string, page, widget
states, fragment), keeps the page's element tree from the ``Delta`` messages (stale elements dropped when
a run finishes, as the frontend does), keeps the widget values a browser would send back (number inputs
register their value when drawn; a button sends ``trigger_value`` once), follows the URL's query string
(``page_info_changed``) and the page (``new_session``, ``navigation``), and reruns a fragment every
``auto_rerun`` interval until a full run or ``stop_auto_rerun`` ends it. Other widgets send nothing: the
server keeps their values.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.NumberInput_pb2 import NumberInput
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

__all__ = ["Tab", "Node"]

_CLEARS_STALE = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)


@dataclass
class Node:
    """An element or block of the page, as the last run that drew it left it."""

    kind: str            # the Element's type ("button", "progress", ...) or "block"
    proto: Any           # that element's message (Button, Progress, ...) or the Block
    run_id: str          # the script run that drew it
    fragment_id: str     # the fragment that drew it, "" for the main script


class Tab:
    """One browser tab on ``url`` (``http://127.0.0.1:PORT``) showing the page ``page`` (its URL path)."""

    def __init__(self, url: str, page: str):
        self.url, self.page = url, page
        self.nodes: dict[tuple[int, ...], Node] = {}
        self.widgets: dict[str, WidgetState] = {}      # what the tab sends back, by widget id
        self.query_string = ""
        self.page_hash = ""
        self.run_id = ""
        self.fragment_ids: list[str] = []              # of the run in progress; [] for a full run
        self.full_runs = 0                              # full runs finished (successfully)
        self.auto_reruns = 0                            # fragment reruns this tab asked for
        self.running = False                            # a run (full or fragment) is in progress
        self.closed = False
        self._timers: dict[str, tuple[float, asyncio.Task]] = {}
        self._waiting: tuple[Callable[[], Any], asyncio.Future] | None = None
        self._ws: Any = None
        self._reader: asyncio.Task | None = None

    # connection -------------------------------------------------------------------------------
    async def open(self, timeout: float = 30.0) -> None:
        """Connect and ask for the page's first run, as a browser does on load."""
        ws_url = self.url.replace("http://", "ws://") + "/_stcore/stream"
        # No protocol pings: a browser sends none, and a busy server answering late would close the tab.
        self._ws = await connect(ws_url, subprotocols=[Subprotocol("streamlit")], max_size=None,
                                 ping_interval=None, open_timeout=timeout)
        self._reader = asyncio.create_task(self._read())
        await self.rerun()

    async def close(self) -> None:
        """Close the tab: timers stop, the connection goes."""
        for _, task in self._timers.values():
            task.cancel()
        self._timers.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    # what the page shows ------------------------------------------------------------------------
    def elements(self, kind: str) -> list[Node]:
        """The page's elements of one kind, in page order."""
        return [self.nodes[path] for path in sorted(self.nodes) if self.nodes[path].kind == kind]

    def widget(self, kind: str, label: str) -> Node | None:
        """The first ``kind`` widget labelled ``label``."""
        return next((node for node in self.elements(kind) if node.proto.label == label), None)

    def shown_number(self, label: str) -> float | None:
        """What the number input ``label`` shows: the value this tab holds for it (as the frontend)."""
        node = self.widget("number_input", label)
        if node is None:
            return None
        state = self.widgets.get(node.proto.id)
        return None if state is None else getattr(state, state.WhichOneof("value"))

    @property
    def timers(self) -> int:
        """Fragments this tab is rerunning on a timer."""
        return len(self._timers)

    async def wait_until(self, ready: Callable[[], Any], timeout: float) -> Any:
        """``ready()`` once it is truthy, called now and after every message (so it sees every state the
        page passes through, and may note times); None after ``timeout`` seconds or when the tab closes."""
        if (result := ready()) or self.closed:
            return result or None
        done = asyncio.get_running_loop().create_future()
        self._waiting = (ready, done)
        try:
            return await asyncio.wait_for(done, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting = None

    # what a user does -----------------------------------------------------------------------
    async def set_number(self, label: str, value: float) -> None:
        """Type ``value`` into the number input ``label`` and leave the box (its rerun is sent)."""
        node = self.widget("number_input", label)
        if node is None:
            raise LookupError(f"no number input {label!r} on the page")
        state = WidgetState(id=node.proto.id)
        if node.proto.data_type == NumberInput.INT:
            state.int_value = int(value)
        else:
            state.double_value = float(value)
        self.widgets[node.proto.id] = state
        await self.rerun(node.fragment_id)

    async def click(self, label: str) -> None:
        """Press the button ``label``: its trigger goes with one rerun (of its fragment, if it is in one)."""
        node = self.widget("button", label)
        if node is None:
            raise LookupError(f"no button {label!r} on the page")
        self.widgets[node.proto.id] = WidgetState(id=node.proto.id, trigger_value=True)
        await self.rerun(node.fragment_id)

    async def rerun(self, fragment_id: str = "", auto: bool = False) -> None:
        """Send ``rerun_script`` with this tab's client state; trigger values go once."""
        state = ClientState(query_string=self.query_string, page_script_hash=self.page_hash,
                            page_name="" if self.page_hash else self.page, fragment_id=fragment_id,
                            is_auto_rerun=auto)
        state.widget_states.widgets.extend(self.widgets.values())
        self.widgets = {wid: w for wid, w in self.widgets.items() if w.WhichOneof("value") != "trigger_value"}
        await self._ws.send(BackMsg(rerun_script=state).SerializeToString())

    # the protocol ---------------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                self._handle(ForwardMsg.FromString(raw))
                if self._waiting is not None and not self._waiting[1].done():
                    ready, done = self._waiting
                    if result := ready():
                        done.set_result(result)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            for _, task in self._timers.values():
                task.cancel()
            if self._waiting is not None and not self._waiting[1].done():
                self._waiting[1].set_result(None)

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self.run_id = msg.metadata.run.script_run_id
            self.fragment_ids = list(msg.metadata.run.fragment_ids)
            self.page_hash = msg.new_session.page_script_hash
            self.running = True
            if not self.fragment_ids:          # a full run: the frontend drops every fragment timer
                for fragment_id in list(self._timers):
                    self._stop_timer(fragment_id)
        elif kind == "delta":
            self._apply(tuple(msg.metadata.delta_path), msg.delta)
        elif kind == "script_finished":
            self.running = False
            run = msg.metadata.run
            # As the frontend: a full run that is no longer the current one clears nothing.
            if msg.script_finished in _CLEARS_STALE and (run.fragment_ids or run.script_run_id == self.run_id):
                self._clear_stale(run.script_run_id, list(run.fragment_ids))
                self.full_runs += not run.fragment_ids
        elif kind == "navigation":             # st.navigation says which page this run is
            self.page_hash = msg.navigation.page_script_hash
        elif kind == "page_info_changed":
            self.query_string = msg.page_info_changed.query_string
        elif kind == "auto_rerun":
            fragment_id, interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
            if fragment_id and self._timers.get(fragment_id, (None,))[0] != interval:
                self._stop_timer(fragment_id)
                self._timers[fragment_id] = (interval, asyncio.create_task(self._every(fragment_id, interval)))
        elif kind == "stop_auto_rerun":
            for fragment_id in msg.stop_auto_rerun.fragment_ids:
                self._stop_timer(fragment_id)

    def _apply(self, path: tuple[int, ...], delta: Any) -> None:
        what = delta.WhichOneof("type")
        if what == "new_element":
            element = delta.new_element
            kind = element.WhichOneof("type")
            node = Node(kind, getattr(element, kind), self.run_id, delta.fragment_id)
            for child in [p for p in self.nodes if p[:len(path)] == path and len(p) > len(path)]:
                del self.nodes[child]
            if kind == "number_input":
                self._register_number(node.proto)
        elif what == "add_block":
            node = Node("block", delta.add_block, self.run_id, delta.fragment_id)
        else:
            return
        self.nodes[path] = node

    def _register_number(self, proto: NumberInput) -> None:
        """A drawn number input puts its value in the tab's widget states, or the server's when it sets one."""
        if proto.id in self.widgets and not proto.set_value:
            return
        value = proto.value if proto.set_value else (proto.default if proto.HasField("default") else None)
        if value is None:
            self.widgets.pop(proto.id, None)
        elif proto.data_type == NumberInput.INT:
            self.widgets[proto.id] = WidgetState(id=proto.id, int_value=int(value))
        else:
            self.widgets[proto.id] = WidgetState(id=proto.id, double_value=float(value))

    def _clear_stale(self, run_id: str, fragment_ids: list[str]) -> None:
        """Drop what the finished run did not draw (a fragment run: only in its fragments), then nodes whose
        block went, then the widget states of widgets no longer on the page."""
        def stale(node: Node) -> bool:
            if node.run_id == run_id:
                return False
            return not fragment_ids or node.fragment_id in fragment_ids

        kept = {path: node for path, node in self.nodes.items() if not stale(node)}
        self.nodes = {path: node for path, node in kept.items()
                      if all(path[:n] in kept for n in range(2, len(path)))}
        live = {node.proto.id for node in self.nodes.values() if hasattr(node.proto, "id")}
        self.widgets = {wid: w for wid, w in self.widgets.items() if wid in live}

    async def _every(self, fragment_id: str, interval: float) -> None:
        """The frontend's setInterval: rerun the fragment every ``interval`` seconds until stopped."""
        while True:
            await asyncio.sleep(interval)
            self.auto_reruns += 1
            try:
                await self.rerun(fragment_id, auto=True)
            except ConnectionClosed:
                return

    def _stop_timer(self, fragment_id: str) -> None:
        entry = self._timers.pop(fragment_id, None)
        if entry is not None:
            entry[1].cancel()
