"""A class on one server: N students open a page, type their own seed and press Train within a minute.

    python benchmarks/class_load.py --simulated 30               # 30 simulated students, 3 of them on Digits
    python benchmarks/class_load.py --simulated 30 --digits 0 --json /tmp/load.json
    python benchmarks/class_load.py                               # 3 real browsers on the Digits page
    python benchmarks/class_load.py --students 2 --page gaussians

Starts ``streamlit run app.py`` on a loopback port (the server's own settings and environment, e.g.
``GRADNET_WORKERS``; runs are kept in a temporary store) and watches it from outside throughout: the health
endpoint's latency every 0.25 s, and the CPU time and resident memory of the server process and, apart, of
its child processes (worker processes, if the app has them) from /proc.

``--simulated N``: each student is a ``Tab`` (tests/streamlit_client.py) that speaks Streamlit's websocket
protocol as a browser does, live panel reruns included, so 30 of them fit on 2 cores. First one student at a
time trains the Gaussian default once to warm the server up, then ``--alone-rounds`` times (its alone-time:
click to results) and the Digits default once, and one starts a Digits training and closes its tab at the
first step (seconds until the server's CPU is idle). Then the class: students connect evenly over ``--spread``
seconds, ``--digits`` of them on the Digits page and the rest on Gaussians; each waits for its page, types its
own seed into the Seed box (Enter), clicks Train ``--think`` seconds later and notes the times from its click
to the first answer (a place in the line, a progress bar or a message), to the first training step and to its
results; then checks that the results are its own (the metrics CSV offered on the page names its seed, and
only its run), that the Seed box still shows its seed, and that the live panel's timer stopped. Reports these
per student and as p50/p95/max, the health latency and memory during the load, the memory ``--settle`` and
``--after`` seconds after every student left, the exceptions and "fragment does not exist anymore" lines in
the server's log, and issue 17's figures. Without ``--simulated``: ``--students`` real headless Chromium
sessions (Playwright; Debian's /usr/bin/chromium) press Train within a second after one alone; heavy, keep N
small.

Bounded: every wait has a timeout; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from websockets.exceptions import WebSocketException

from _common import machine, table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import streamlit_server  # noqa: E402
from streamlit_client import Tab  # noqa: E402

LOG = Path("/tmp/class_load_server.log")
CSV_LABEL = "Metrics of every run (.csv)"          # the metrics download's label on the transport pages (studio.panels)
PAGE_TITLES = {"gaussians": "Gaussians", "digits": "Digits", "mixtures": "Gaussian mixtures"}


# =============================================================================================
# The server, seen from outside
# =============================================================================================
@dataclass
class Sample:
    t: float                # time.monotonic()
    cpu: float              # CPU seconds of the server and its children so far
    rss: int                # bytes resident: the server process
    children_rss: int       # bytes resident: all its descendants together
    children: int           # how many descendants


def _proc_tree(pid: int) -> list[int]:
    """``pid``'s descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += parents.get(child, [])
    return found


def _cpu_and_rss(pid: int, with_children: bool) -> tuple[float, int]:
    """CPU seconds (with reaped children's, for the server) and resident bytes of one process; 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            rss_kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except (OSError, IndexError, ValueError):
        return 0.0, 0
    ticks = sum(int(v) for v in fields[11:15 if with_children else 13])    # utime stime [cutime cstime]
    return ticks / os.sysconf("SC_CLK_TCK"), rss_kb * 1024


class ServerWatch:
    """Two threads: one asks ``/_stcore/health`` every ``every`` seconds (a failed or timed-out answer counts
    as infinitely slow), one samples the server's process tree from /proc as often."""

    def __init__(self, url: str, pid: int, every: float = 0.25, health_timeout: float = 30.0):
        self.url, self.pid, self.every, self.health_timeout = url, pid, every, health_timeout
        self.health: list[tuple[float, float]] = []      # (time.monotonic(), seconds)
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=loop, daemon=True) for loop in (self._poll_health, self._sample)]

    def __enter__(self) -> "ServerWatch":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.health_timeout + 5)

    def _poll_health(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=self.health_timeout) as answer:
                    answer.read()
                seconds = time.monotonic() - started
            except OSError:
                seconds = math.inf
            self.health.append((started, seconds))
            self._stop.wait(self.every)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.every)

    def sample(self) -> Sample:
        cpu, rss = _cpu_and_rss(self.pid, with_children=True)
        children = [_cpu_and_rss(child, with_children=False) for child in _proc_tree(self.pid)]
        return Sample(time.monotonic(), cpu + sum(c for c, _ in children), rss, sum(r for _, r in children),
                      len(children))

    def health_between(self, start: float, end: float) -> list[float]:
        return [seconds for t, seconds in self.health if start <= t <= end]

    def peak_between(self, start: float, end: float) -> Sample | None:
        inside = [s for s in self.samples if start <= s.t <= end]
        return max(inside, key=lambda s: s.rss + s.children_rss) if inside else None

    async def idle_after(self, start: float, timeout: float, window: float = 1.0, busy: float = 0.1) -> float | None:
        """Seconds from ``start`` to the first ``window`` in which the server's tree used under ``busy`` cores."""
        deadline = start + timeout
        while time.monotonic() < deadline + window:
            after = [s for s in self.samples if s.t >= start]
            for i, first in enumerate(after):
                last = next((s for s in after[i:] if s.t - first.t >= window), None)
                if last is None:
                    break
                if (last.cpu - first.cpu) / (last.t - first.t) < busy:
                    return first.t - start
            await asyncio.sleep(self.every)
        return None


# =============================================================================================
# Simulated students
# =============================================================================================
@dataclass
class Attendance:
    """What one student saw. Times in seconds: ``load`` from connecting, the others from its Train click."""

    student: int
    page: str
    seed: int
    load: float | None = None
    ack: float | None = None               # first answer to the click: a progress bar or a message
    progress: float | None = None          # first "Step n / N" in the progress bar
    results: float | None = None           # the Results section with its metrics table, no progress bar
    clicked_at: float | None = None        # time.monotonic() of the click
    first_line: str = ""                   # the first answer, shortened
    verdict: str = ""                      # the notice under Train after training
    result_label: str = ""                 # the run's label in the metrics CSV
    result_seed: int | None = None         # the seed in that run's settings
    runs_in_csv: int = 0
    seed_box: float | None = None          # what the Seed box shows after the results
    timers_left: int = 0                   # live panel timers still running after the results
    auto_reruns: int = 0                   # fragment reruns this student's tab asked for
    problem: str = ""                      # why it did not get its results, if it did not

    @property
    def own_result(self) -> bool:
        return self.result_seed == self.seed and self.runs_in_csv == 1


class Student:
    """One browser tab on one page: waits for the page, types its seed, presses Train, waits for results."""

    def __init__(self, url: str, number: int, page: str, seed: int):
        self.url = url
        self.tab = Tab(url, page)
        self.record = Attendance(number, page, seed)
        self.phase = "waiting"

    def _alerts(self) -> list[tuple[str, str]]:
        return [(self._format(n.proto), n.proto.body) for n in self.tab.elements("alert")]

    @staticmethod
    def _format(alert) -> str:
        return type(alert).Format.Name(alert.format).lower()

    def _train_ready(self) -> bool:
        button = self.tab.widget("button", "Train")
        return bool(self.tab.full_runs and button is not None and not button.proto.disabled and not self.tab.running)

    async def attend(self, delay: float = 0.0, load_timeout: float = 300.0, timeout: float = 900.0,
                     think: float = 1.0, wait_for_seed: bool = False,
                     close_when_training: bool = False, steps: int | None = None) -> Attendance:
        """The whole visit (the tab stays open; ``leave`` closes it): the Train click comes ``think`` seconds
        after the seed was typed (Enter), or after the seed's rerun ended with ``wait_for_seed``. With
        ``close_when_training``, the tab closes as soon as its training has taken a step (a closed tab). ``steps``,
        typed into the Steps box before the seed, replaces the preset's."""
        await asyncio.sleep(delay)
        try:
            await self._visit(load_timeout, timeout, think, wait_for_seed, close_when_training, steps)
        except (LookupError, OSError, TimeoutError, WebSocketException) as err:
            self.record.problem = self.record.problem or f"{type(err).__name__}: {err}"
        self.record.auto_reruns = self.tab.auto_reruns
        self.phase = "problem" if self.record.problem else "done"
        return self.record

    async def _visit(self, load_timeout: float, timeout: float, think: float, wait_for_seed: bool,
                     close_when_training: bool, steps: int | None = None) -> None:
        r, tab = self.record, self.tab
        started = time.monotonic()
        self.phase = "loading"
        await tab.open(load_timeout)
        if not await tab.wait_until(self._train_ready, load_timeout):
            r.problem = f"the page did not load within {load_timeout:g} s"
            return
        r.load = time.monotonic() - started
        if steps is not None:
            await tab.set_number("Steps", steps)
        runs = tab.full_runs
        await tab.set_number("Seed", r.seed)
        if wait_for_seed and not await tab.wait_until(lambda: tab.full_runs > runs and self._train_ready(),
                                                      load_timeout):
            r.problem = f"the typed seed's rerun did not end within {load_timeout:g} s"
            return
        # Then to the Train button, as a person: its click may reach the server while the seed's rerun runs.
        await asyncio.sleep(think)
        before = set(self._alerts())
        r.clicked_at = time.monotonic()
        self.phase = "clicked"
        await tab.click("Train")

        def observe() -> bool:
            now = time.monotonic() - r.clicked_at
            bars = [n.proto.text for n in tab.elements("progress")]
            new = [(kind, body) for kind, body in self._alerts() if (kind, body) not in before]
            if r.ack is None and (bars or new):
                r.ack, r.first_line = now, (bars[0] if bars else f"{new[0][0]}: {new[0][1]}")[:70]
                self.phase = "answered"
            if r.progress is None and any(re.search(r"\bStep \d", text) for text in bars):
                r.progress = now
                self.phase = "training"
            if bars:
                return close_when_training and r.progress is not None
            if any(kind == "error" for kind, _ in new):
                r.problem = next(body for kind, body in new if kind == "error")[:120]
                return True
            results = any(n.proto.body == "Results" for n in tab.elements("heading"))
            if results and tab.elements("dataframe") and r.ack is not None:
                r.results = now
                return True
            return False

        if not await tab.wait_until(observe, timeout):
            r.problem = r.problem or ("no answer to the Train click" if r.ack is None else
                                      f"no results within {timeout:g} s")
            return
        if close_when_training or r.problem:
            return
        self.phase = "checking"
        if not await tab.wait_until(lambda: not tab.running and tab.widget("download_button", CSV_LABEL), load_timeout):
            r.problem = "the results' run did not finish"
            return
        r.verdict = next((f"{kind}: {body}" for kind, body in self._alerts() if kind in ("success", "warning")),
                         "")[:90]
        r.seed_box = tab.shown_number("Seed")
        r.timers_left = tab.timers
        rows = await asyncio.to_thread(self._metrics_csv, tab.widget("download_button", CSV_LABEL).proto.url)
        r.runs_in_csv = len(rows)
        if rows:
            r.result_label = rows[0]["map"]
            r.result_seed = json.loads(rows[0]["settings"]).get("training", {}).get("seed")

    def _metrics_csv(self, path: str) -> list[dict[str, str]]:
        """The rows of the results' metrics CSV (the download button's file)."""
        with urllib.request.urlopen(self.url + path, timeout=60) as answer:
            return list(csv.DictReader(io.StringIO(answer.read().decode())))

    async def leave(self) -> None:
        await self.tab.close()


def _pages(students: int, digits: int) -> list[str]:
    """``digits`` of the students on Digits, spread evenly through the class; the others on Gaussians."""
    digits = min(digits, students)
    on_digits = {round(k * students / digits) for k in range(digits)} if digits else set()
    return ["digits" if i in on_digits else "gaussians" for i in range(students)]


async def _report_progress(students: list[Student], start: float, every: float = 15.0) -> None:
    while True:
        await asyncio.sleep(every)
        counts: dict[str, int] = {}
        for student in students:
            counts[student.phase] = counts.get(student.phase, 0) + 1
        print(f"  {time.monotonic() - start:5.0f} s: " + ", ".join(f"{n} {phase}" for phase, n in counts.items()),
              file=sys.stderr, flush=True)


async def simulated_class(url: str, watch: ServerWatch, args: argparse.Namespace) -> dict:
    """Alone-time, the closed tab, then the class; every figure the report prints."""
    out: dict = {"alone": {"gaussians": [], "digits": []}, "closed_tab": None}
    # The first training warms the server up (imports, worker processes) and is not counted.
    for i, page in enumerate(["warm-up"] + ["gaussians"] * args.alone_rounds + ["digits"] * (args.digits > 0)):
        record = await _alone(url, page.replace("warm-up", "gaussians"), 900 + i, args)
        out["alone"].setdefault(page, []).append(asdict(record) | {"own_result": record.own_result})
        print(f"alone ({page}): results {_s(record.results)} s after the click"
              + (f" ({record.problem})" if record.problem else ""), file=sys.stderr, flush=True)
    if args.closed_tab:
        out["closed_tab"] = await _closed_tab(url, watch, args)
        print(f"closed tab: the server's CPU idle {_s(out['closed_tab']['idle_after'])} after the tab closed",
              file=sys.stderr, flush=True)
    await asyncio.sleep(args.settle)
    out["before_load"] = asdict(watch.sample())
    pages = _pages(args.simulated, args.digits)
    students = [Student(url, i + 1, page, 1000 + i) for i, page in enumerate(pages)]
    start, cpu_start = time.monotonic(), time.process_time()
    reporter = asyncio.create_task(_report_progress(students, start))
    records = await asyncio.gather(*(s.attend(i * args.spread / len(students), args.load_timeout, args.timeout,
                                              args.think) for i, s in enumerate(students)))
    end, out["client_cpu"] = time.monotonic(), time.process_time() - cpu_start
    reporter.cancel()
    await asyncio.gather(*(s.leave() for s in students))
    await asyncio.sleep(args.settle)
    out["after_leaving"] = asdict(watch.sample())
    print(f"every student left; the last memory reading in {args.after:g} s", file=sys.stderr, flush=True)
    await asyncio.sleep(args.after)
    out["after_load"] = asdict(watch.sample())
    out["load_window"], out["after_wait"] = (start, end), args.after
    out["students"] = [asdict(r) | {"own_result": r.own_result} for r in records]
    out["health"] = watch.health_between(start, end)
    peak = watch.peak_between(start, end)
    out["peak"] = asdict(peak) if peak else None
    return out


async def _alone(url: str, page: str, seed: int, args: argparse.Namespace) -> Attendance:
    student = Student(url, 0, page, seed)
    record = await student.attend(0, args.load_timeout, args.timeout, args.think)
    await student.leave()
    return record


async def _closed_tab(url: str, watch: ServerWatch, args: argparse.Namespace) -> dict:
    """A Digits training started and its tab closed at its first step: seconds until the server is idle."""
    student = Student(url, 0, "digits", 7)
    record = await student.attend(0, args.load_timeout, args.timeout, close_when_training=True)
    await student.leave()
    closed = time.monotonic()
    idle = await watch.idle_after(closed, timeout=120) if record.progress is not None else None
    return {"problem": record.problem, "idle_after": idle}


# =============================================================================================
# The report
# =============================================================================================
def _s(seconds: float | None) -> str:
    return "-" if seconds is None else ("∞" if math.isinf(seconds) else f"{seconds:.1f}")


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _spread(values: list[float | None], unit: float = 1.0, digits: int = 1) -> str:
    """"p50 / p95 / max (n)" of the known values."""
    known = [v * unit for v in values if v is not None]
    if not known:
        return "none"
    return (f"{_quantile(known, 0.5):.{digits}f} / {_quantile(known, 0.95):.{digits}f} / {max(known):.{digits}f}"
            f" (n = {len(known)})")


def _mb(n: int | float) -> str:
    return f"{n / 2**20:,.0f} MB"


def scan_log(path: Path) -> dict:
    """Tracebacks, exception lines and the fragment messages of a Streamlit server's log."""
    text = path.read_text(errors="replace") if path.exists() else ""
    exceptions = re.findall(r"^(?:[\w.]+\.)?\w*(?:Error|Exception)\b:?.*$", text, flags=re.M)
    return {"tracebacks": text.count("Traceback (most recent call last)"),
            "exception_lines": len(exceptions), "first_exceptions": list(dict.fromkeys(exceptions))[:5],
            "fragment_gone": text.count("does not exist anymore"),
            "fragment_not_found": text.count("Couldn't find fragment")}


def report(out: dict, workers: int, log: dict) -> dict:
    """Print the tables and the issue's figures; returns the figures."""
    records = out["students"]
    rows = [[r["student"], r["page"], r["seed"], _s(r["load"]), _s(r["ack"]), _s(r["progress"]), _s(r["results"]),
             "yes" if r["own_result"] else "NO", "kept" if r["seed_box"] == r["seed"] else f"shows {r['seed_box']}",
             r["timers_left"], r["auto_reruns"], r["problem"] or r["first_line"]] for r in records]
    print(table(["#", "page", "seed", "page load s", "answer s", "first step s", "results s", "own result",
                 "Seed box", "timers left", "fragment reruns", "problem, or first answer"], rows))
    alone_times = {}
    for page, rounds in out["alone"].items():
        if page == "warm-up":
            continue
        alone = [a["results"] for a in rounds if a["results"] is not None]
        alone_times[page] = _quantile(alone, 0.5) if alone else math.nan
        if rounds:
            print(f"{PAGE_TITLES[page]} default alone (click to results, median of {len(alone)}): "
                  f"{alone_times[page]:.2f} s ({', '.join(f'{a:.2f}' for a in alone)})")
    alone_time = alone_times["gaussians"]
    for page in sorted({r["page"] for r in records}):
        mine = [r for r in records if r["page"] == page]
        print(f"{PAGE_TITLES.get(page, page)} ({len(mine)} students), p50 / p95 / max seconds:")
        for name, what in (("page load", "load"), ("click to answer", "ack"), ("click to first step", "progress"),
                           ("click to results", "results")):
            print(f"  {name:20s} {_spread([r[what] for r in mine])}")
    start, end = out["load_window"]
    gaussians_done = [r["clicked_at"] + r["results"] for r in records if r["page"] == "gaussians" and r["results"]]
    clicks = [r["clicked_at"] for r in records if r["clicked_at"] is not None]
    last_gaussian = max(gaussians_done) - min(clicks) if gaussians_done and clicks else math.nan
    bound = len(records) * alone_time / workers * 1.2
    # The bound counts every training as a Gaussian one; with Digits students in the class, this
    # one counts their alone-time instead.
    mixed = sum(alone_times.get(r["page"], math.nan) for r in records) / workers * 1.2
    health = out["health"]
    print(f"class: {end - start:.0f} s from the first connection to the last result; the last Gaussian result "
          f"{last_gaussian:.1f} s after the first click (every training's alone-time / workers + 20 %: "
          f"{mixed:.0f} s); the load generator used {out['client_cpu']:.0f} CPU s")
    print(f"health during the load: {len(health)} polls, p50 / p95 / max {_spread(health, 1000, 0)} ms, "
          f"{sum(math.isinf(h) for h in health)} unanswered")
    before, leaving, after = out["before_load"], out["after_leaving"], out["after_load"]
    peak = out["peak"] or before
    print(f"memory (server process + {peak['children']} children at the peak): at start "
          f"{_mb(out['server_start']['rss'])} + {_mb(out['server_start']['children_rss'])}, before the load "
          f"{_mb(before['rss'])} + {_mb(before['children_rss'])}, peak {_mb(peak['rss'])} + "
          f"{_mb(peak['children_rss'])}, after every student left {_mb(leaving['rss'])} + "
          f"{_mb(leaving['children_rss'])} "
          f"and {_mb(after['rss'])} + {_mb(after['children_rss'])} {out['after_wait']:g} s later")
    closed = out["closed_tab"]
    if closed is not None:
        print(f"closed tab (Digits, closed at its first step): server CPU idle after {_s(closed['idle_after'])} s"
              + (f" ({closed['problem']})" if closed["problem"] else ""))
    print(f"server log: {log['tracebacks']} tracebacks, {log['exception_lines']} exception lines, "
          f"{log['fragment_gone']} 'fragment ... does not exist anymore', {log['fragment_not_found']} "
          f"'Couldn't find fragment'" + "".join(f"\n  {line[:150]}" for line in log["first_exceptions"]))

    total_before = before["rss"] + before["children_rss"]
    total_after = after["rss"] + after["children_rss"]
    figures = {
        "every training completes": sum(r["results"] is not None for r in records) == len(records),
        "each gets its own result": all(r["own_result"] for r in records),
        "health p95 <= 1 s": bool(health) and _quantile(health, 0.95) <= 1.0,
        f"last Gaussian <= {len(records)} x alone / {workers} workers + 20 % ({bound:.0f} s)": last_gaussian <= bound,
        "server RSS < 2 GB": peak["rss"] + peak["children_rss"] < 2 * 2**30,
        "RSS after the load within 10 % of before": total_after <= 1.1 * total_before,
        "a closed tab frees the CPU within 5 s": None if closed is None else (closed["idle_after"] or math.inf) <= 5,
        "no click lost": all(r["ack"] is not None for r in records),
        "no widget reset (Seed box)": all(r["seed_box"] == r["seed"] for r in records if r["results"] is not None),
        "no exception in the server log": log["tracebacks"] == 0 and log["exception_lines"] == 0,
    }
    print("\nissue 17's figures:")
    for name, reached in figures.items():
        print(f"  [{'?' if reached is None else 'x' if reached else ' '}] {name}"
              + (" (not measured)" if reached is None else ""))
    return figures


def simulated_main(args: argparse.Namespace) -> None:
    print(machine())
    env = dict(os.environ)
    if args.workers:
        env["GRADNET_WORKERS"] = str(args.workers)
    workers = int(env.get("GRADNET_WORKERS", max(1, (os.cpu_count() or 2) - 1)))
    procs = []
    with tempfile.TemporaryDirectory() as store:
        env["GRADNET_STORE"] = str(Path(store) / "runs.sqlite")
        with streamlit_server(sys.executable, ROOT / "app.py", ROOT, args.log, env=env, started=procs.append) as url:
            with ServerWatch(url, procs[0].pid) as watch:
                server_start = asdict(watch.sample())
                out = asyncio.run(simulated_class(url, watch, args))
            out["server_start"] = server_start
    log = scan_log(args.log)
    print(f"\n{args.simulated} simulated students ({sum(p == 'digits' for p in _pages(args.simulated, args.digits))} "
          f"on Digits), {workers} training worker(s), connecting over {args.spread:g} s; server log {args.log}\n")
    out["figures"] = report(out, workers, log)
    print("load average (1/5/15 min) at the end: " + " / ".join(f"{v:.1f}" for v in os.getloadavg())
          + "; other work on the machine inflates the alone-time and with it the bound")
    out |= {"machine": machine(), "workers": workers, "log": log, "args": {k: str(v) for k, v in vars(args).items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"\nwritten: {args.json}")


# =============================================================================================
# Real browsers
# =============================================================================================
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


def browser_main(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    print(machine())
    procs = []
    with streamlit_server(sys.executable, ROOT / "app.py", ROOT, args.log, started=procs.append) as url, \
            sync_playwright() as playwright, ServerWatch(url, procs[0].pid) as watch:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        (alone,), _ = _run(browser, url, args.page, 1, args.timeout)
        times, seen = _run(browser, url, args.page, args.students, args.timeout)
        browser.close()
    print(f"\n{args.page} default, alone: {alone:.1f} s")
    for i, (seconds, statuses) in enumerate(zip(times, seen), start=1):
        print(f"session {i}: {seconds:.1f} s = {seconds / alone:.2f} x alone; on the way: {' -> '.join(statuses)}")
    health = [seconds for _, seconds in watch.health]
    print(f"health: {len(health)} polls, p50 / p95 / max {_spread(health, 1000, 0)} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulated", type=int, default=0, metavar="N",
                        help="N simulated students (Streamlit's websocket protocol) instead of real browsers")
    parser.add_argument("--digits", type=int, default=3, help="simulated: how many of them train on Digits")
    parser.add_argument("--spread", type=float, default=10.0, help="simulated: seconds over which students connect")
    parser.add_argument("--think", type=float, default=1.0,
                        help="simulated: seconds between typing the seed (Enter) and clicking Train; 0 is a click "
                             "straight from the Seed box (a browser sends the box's value and the click back to back)")
    parser.add_argument("--workers", type=int, default=0, help="GRADNET_WORKERS for the server (default: its own)")
    parser.add_argument("--alone-rounds", type=int, default=3, help="simulated: alone-time trainings (median)")
    parser.add_argument("--no-closed-tab", dest="closed_tab", action="store_false",
                        help="simulated: skip the closed-tab check")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="simulated: seconds of quiet before the load and after every student left")
    parser.add_argument("--after", type=float, default=130.0,
                        help="simulated: seconds after that until the last memory reading (Streamlit keeps a "
                             "closed tab's session for server.disconnectedSessionTTL, 120 s)")
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds for a page (or a rerun) to load")
    parser.add_argument("--json", help="simulated: also write every figure to this JSON file")
    parser.add_argument("--log", type=Path, default=LOG, help="the server's log")
    parser.add_argument("--students", type=int, default=3, help="browsers: sessions at once")
    parser.add_argument("--page", default="digits", choices=["digits", "gaussians", "mixtures"], help="browsers: page")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for results after a click")
    args = parser.parse_args()
    (simulated_main if args.simulated else browser_main)(args)


if __name__ == "__main__":
    main()
