"""A small class on one server: N browser sessions press Train on the same page within a second.

    python benchmarks/class_load.py                     # Digits default, 1 session alone, then 3 at once
    python benchmarks/class_load.py --students 2 --page gaussians

Starts ``streamlit run app.py`` on a loopback port (the server's own settings and environment, e.g.
``GRADNET_WORKERS``), opens the page in headless Chromium (Playwright; Debian's /usr/bin/chromium), times
one training alone, then opens ``--students`` sessions and clicks Train in each within a second. Reports
each session's time from its click to its results and the ratio to the alone-time, what each session's
progress line said on the way (its place in the line while queued), and the health endpoint's latency
(polled every 0.25 s throughout). Bounded: every wait has a timeout; nothing leaves the machine. Real
browsers are heavy, so keep N small on 2 cores; the issue's 30-student load needs simulated clients.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

from _common import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import streamlit_server  # noqa: E402


def _open(browser, url: str, page_path: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(600_000)
    page.goto(f"{url}/{page_path}")
    page.get_by_role("button", name="Train", exact=True).wait_for()
    return page


def _status(page) -> str:
    progress = page.locator("[data-testid=stProgress]")
    if progress.count():
        return progress.first.inner_text().split(" · ")[0][:60]
    return "results" if page.get_by_role("heading", name="Results").count() else "…"


def _phase(status: str) -> str:
    """"queued", "training", "finishing" or the status itself: what a session's line is doing."""
    for word, phase in (("Queued", "queued"), ("Step", "training"), ("finished", "finishing")):
        if word in status:
            return phase
    return status


def _run(browser, url: str, page_path: str, sessions: int, timeout: float) -> tuple[list[float], list[list[str]]]:
    pages = [_open(browser, url, page_path) for _ in range(sessions)]
    time.sleep(3)
    clicked = []
    for page in pages:
        clicked.append(time.perf_counter())
        page.get_by_role("button", name="Train", exact=True).click()
    done: dict[int, float] = {}
    seen: list[list[str]] = [[] for _ in pages]
    deadline = time.perf_counter() + timeout
    while len(done) < len(pages) and time.perf_counter() < deadline:
        for i, page in enumerate(pages):
            if i in done:
                continue
            status = _status(page)
            if status == "results":
                done[i] = time.perf_counter() - clicked[i]
            elif not seen[i] or _phase(seen[i][-1]) != _phase(status):
                seen[i].append(status)
        time.sleep(0.5)
    for page in pages:
        page.context.close()
    return [done.get(i, float("nan")) for i in range(len(pages))], seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--page", default="digits", choices=["digits", "gaussians", "mixtures"])
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every result")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print(machine())
    latencies: list[float] = []
    stop = threading.Event()
    with streamlit_server(sys.executable, ROOT / "app.py", ROOT, Path("/tmp/class_load_server.log")) as url, \
            sync_playwright() as playwright:
        def poll_health() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=60).read()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.25)

        health = threading.Thread(target=poll_health, daemon=True)
        health.start()
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        (alone,), _ = _run(browser, url, args.page, 1, args.timeout)
        times, seen = _run(browser, url, args.page, args.students, args.timeout)
        browser.close()
        stop.set()
        health.join(timeout=5)
    print(f"\n{args.page} default, alone: {alone:.1f} s")
    for i, (seconds, statuses) in enumerate(zip(times, seen), start=1):
        print(f"session {i}: {seconds:.1f} s = {seconds / alone:.2f} x alone; on the way: {' -> '.join(statuses)}")
    latencies.sort()
    print(f"health: {len(latencies)} polls, median {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
