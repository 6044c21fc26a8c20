"""The load test's simulated student (``benchmarks/class_load.py`` on ``tests/streamlit_client.py``) against a
real ``streamlit run app.py``: Streamlit's websocket protocol from Python trains the Gaussian default with the
student's own seed, and the page answers it as it answers a browser."""

import asyncio
import sys
from pathlib import Path

import pytest
from servers import streamlit_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from class_load import Student, scan_log  # noqa: E402


@pytest.mark.slow   # about 35 s: a server's start and first page run, then a 2-s training
def test_a_simulated_student_trains_the_gaussian_default_and_gets_its_own_result(tmp_path):
    log = tmp_path / "server.log"

    async def visit(url: str):
        student = Student(url, 1, "gaussians", 4321)
        # 2000 steps, not the preset's 200: those could end before the live panel's first refresh, when the
        # server's kernels were already built, and then no progress bar was ever seen (order-dependent failures)
        record = await student.attend(load_timeout=120, timeout=120, think=0.2, wait_for_seed=True, steps=2000)
        await student.leave()
        return record

    with streamlit_server(sys.executable, ROOT / "app.py", ROOT, log) as url:
        record = asyncio.run(visit(url))
    assert record.problem == ""
    assert record.ack <= record.progress <= record.results
    # Its own run, and only it: the metrics CSV the page offers names the seed typed into the Seed box.
    assert record.own_result and record.result_label.startswith("#1 mGradNet-M")
    assert record.seed_box == 4321
    assert record.verdict in ("success: **The map is close to the optimal map.**",) or \
        record.verdict.startswith("warning: **The map is not the optimal map: "), record.verdict
    # The live panel asked for reruns while training, and its timer stopped once the fragment was gone.
    assert record.auto_reruns > 0 and record.timers_left == 0
    found = scan_log(log)
    assert found["tracebacks"] == found["fragment_gone"] == 0, log.read_text()
