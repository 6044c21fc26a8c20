"""Start-up costs: the app's first page render, ``import gradnet_core``, a small experiment process.

    python benchmarks/startup.py                 # 3 rounds of each, medians
    python benchmarks/startup.py --rounds 5 --pages Home Gaussians

**First page render**: a fresh ``streamlit run app.py``; once its health endpoint answers, the
server's CPU seconds (user + system, from /proc) are read, the page is opened in headless Chromium
(playwright) and read again when the page's heading is on screen. The difference is what the server
spent rendering the page, imports included; later pages of the same server are measured the same way
in turn, ``--pause`` seconds apart (0: at once), and "all pages" is the server's CPU from the first request
to the end, background work included (``studio.device.prewarm`` imports the training stack after Home). **Import**: CPU seconds of ``python -c "import gradnet_core"``, and of ``python -c pass`` for
the interpreter itself. **Morph**: the whole ``python -m gradnet_core.experiments morph`` process with
its default preset (or ``--steps``), CPU and wall seconds. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import streamlit_server  # noqa: E402

#: Page title in the menu -> URL path and a text on the page once it has rendered.
PAGES = {"Home": ("", "The idea in four equations"), "Gaussians": ("gaussians", "Train"),
         "Digits": ("digits", "Train"), "Mixtures": ("mixtures", "Train")}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def page_renders(pages: list[str], pause: float = 0.0) -> dict[str, tuple[float, float]]:
    """CPU and wall seconds the server spends on each page in turn, from a fresh server, and under "all pages" its
    CPU from the first page's request to ``pause`` seconds after the last heading appeared. ``pause``: seconds on each
    page before opening the next (a visitor reading it), during which the server may work in the background
    (``studio.device.prewarm``); with 0 the pages follow at once, the worst case for the page after Home."""
    from playwright.sync_api import sync_playwright

    out: dict[str, tuple[float, float]] = {}
    server: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp, \
            streamlit_server(sys.executable, ROOT / "app.py", ROOT, Path(tmp) / "log.txt", started=server.append) as url, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium())
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        time.sleep(1.0)                                  # the server settles after start-up
        first_cpu, first_wall = _cpu_seconds(server[0].pid), time.perf_counter()
        for name in pages:
            path, text = PAGES[name]
            cpu, wall = _cpu_seconds(server[0].pid), time.perf_counter()
            page.goto(f"{url}/{path}")
            page.get_by_text(text, exact=False).first.wait_for(timeout=120_000)
            out[name] = (_cpu_seconds(server[0].pid) - cpu, time.perf_counter() - wall)
            time.sleep(pause)
        out["all pages"] = (_cpu_seconds(server[0].pid) - first_cpu, time.perf_counter() - first_wall)
        browser.close()
    return out


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).exists():
            return candidate
    return None


def process_seconds(args: list[str]) -> tuple[float, float]:
    """CPU (children's user + system) and wall seconds of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(args, cwd=tempfile.gettempdir(), check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pages", nargs="+", default=["Home", "Gaussians"], choices=sorted(PAGES))
    parser.add_argument("--steps", type=int, help="training steps of the morph run (default: its preset's)")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds on each page before the next, as a visitor reading it (default 0: at once)")
    args = parser.parse_args()
    print(f"Machine: {machine()}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        processes = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import gradnet_core": [sys.executable, "-c", "import gradnet_core"],
            "experiments morph" + (f" --steps {args.steps}" if args.steps else " (fast preset)"): [
                sys.executable, "-m", "gradnet_core.experiments", "morph", "--no-progress", "--out", tmp,
                *(["--steps", str(args.steps)] if args.steps else [])],
        }
        samples: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, renders in page_renders(args.pages, args.pause).items():
                samples.setdefault(f"page render: {name} (server)", []).append(renders)
            for name, command in processes.items():
                samples.setdefault(name, []).append(process_seconds(command))
    rows = [[name, statistics.median(c for c, _ in s), statistics.median(w for _, w in s),
             f"{min(c for c, _ in s):.2f}–{max(c for c, _ in s):.2f}"] for name, s in samples.items()]
    print(table(["what", "CPU s (median)", "wall s (median)", "CPU s range"], rows))
    print(f"\nLoad average at the end: {machine().rsplit('load average', 1)[1].strip()}")


if __name__ == "__main__":
    main()
