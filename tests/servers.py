"""A real `streamlit run` on a free loopback port, for the browser and install tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(python: str | Path, app: Path, cwd: Path, log_path: Path,
                     env: dict[str, str] | None = None, timeout: float = 60.0,
                     started: Callable[[subprocess.Popen], None] | None = None) -> Iterator[str]:
    """``python -m streamlit run app`` started in ``cwd``, its output in ``log_path``; yields the URL once
    ``/_stcore/health`` answers "ok" (after calling ``started`` with the server's process), and stops the
    server afterwards."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(python), "-m", "streamlit", "run", str(app), "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().decode() == "ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"streamlit exited before it served the app:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"streamlit did not start within {timeout:g} s"
            time.sleep(0.5)
        if started is not None:
            started(proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
