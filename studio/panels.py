"""The training panel (settings, Train, the live progress panel) and the results panels.

``training_panel`` trains a network on a page's ``Problem``; ``color_training_panel`` trains the
Colour transfer page's map between two images' pixels. Both start their job through
``studio.state.start_job`` and share the Train button and the live panel (``_run_controls``,
``_live_panel``): progress, speed, ETA, Stop, the loss curve and, when the job has preview points, the
mapped points. ``results_panel`` and ``color_results_panel`` draw what the finished jobs stored.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import streamlit as st
import torch

from gradnet_core import ConstrainedFlow, MongeAmpere, Objective, color, presets
from gradnet_core.files import MapFile, load_map_file, map_to_bytes, read_map
from gradnet_core.flow import log_concave_target
from gradnet_core.networks import NETWORKS, network_of, seeded_map
from gradnet_core.plotting import (Panel, animation_figure, animation_gif, density_comparison_figure,
                                   density_morph_figure, density_morph_gif, loss_figure, losses_figure,
                                   preview_figure, residual_figure, square_bounds)
from gradnet_core.pushforward import density_picture, total_variation
from gradnet_core.training import TrainConfig, TrainResult
from gradnet_core.verdict import DISTANCE_TOLERANCE, KL_GROSS_TOLERANCE, SAMPLE_UNCOVERED_TOLERANCE

from .device import device_label
from .jobs import TrainingJob
from .limits import SIZES, TIME_LIMIT, check_work
from .scheduler import slots, workers
from .problems import (CHECK_METRICS, METRIC_COLUMNS, TRUTH_METRICS, Problem, Reference, Run, compute_reference,
                       density_morph_of, evaluate_run, evaluate_training, metrics_table, morph_back, picked_objective,
                       problem_from_description, residual_of, to_numpy, without_strokes)
from .inputs import color_image_from_record, color_image_record, inputs_summary, restore_inputs
from .state import (PageState, RunsAside, key, kept_result, kept_runs, outcome_notices, page_state, removed_notice,
                    show_notices, start_job)
from .store import store
from .view import chart, table as show_table

__all__ = ["training_panel", "results_panel", "color_training_panel", "color_results_panel",
           "ColorOutcome", "COLOR_LOSSES"]

PREVIEW_POINTS = 400             # points in the live preview
PREVIEW_EVERY = (20, 200)        # steps between live previews: a tenth of the run, within these bounds
POLL_SECONDS = 0.5               # live panel refresh while training
QUEUED_POLL_SECONDS = 2.0        # ... and while waiting in line
CPU_THREADS = 1                  # torch threads per training job: sessions share the cores (see jobs)
ANIMATION_FRAMES = 30
MAX_RUNS = 8                     # runs a page keeps; past it the oldest goes
MAX_ASIDE = 4                    # sets of runs on earlier inputs a page keeps aside; past it the oldest set goes
EARLIER_LABEL = "Runs on earlier inputs"
PAGE_TITLES = {"gaussians": "Gaussians", "mixtures": "Gaussian mixtures", "digits": "Digits"}
DENSITY_VIEWS = ("Density morph", "Pushforward vs target", "Where the map is wrong", "Morph back")
COLOR_LOSSES = {"sinkhorn": "Sinkhorn divergence", "gaussian-kl": "Gaussian-moment KL (mean and covariance only)",
                "wasserstein": "Adversarial Wasserstein-1 (critic)"}


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "…"
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


# =============================================================================================
# Train button and live panel, shared
# =============================================================================================
def _run_controls(page: str, start: Callable[[], None] | None, hint: str = "", current: bool = True,
                  changed: str = "") -> None:
    """The Train button (off while training, and when ``start`` is None: then ``hint`` says why), where
    training runs, the live panel while a job runs, then the last job's notices, unless the inputs on screen
    are not the ones it trained on (``current`` False): then ``changed`` says what Train does to the results."""
    state = page_state(page)
    # Not is_training(): a job that ended after the page drew its (locked) inputs is collected by
    # the live panel's rerun, so the inputs are drawn unlocked again.
    training = state.job is not None
    left, right = st.columns([1, 4], vertical_alignment="center")
    clicked = left.button("Train", type="primary", key=key(page, "train"), disabled=training or start is None)
    right.caption(f"Training runs on the {device_label()}." + ("" if start is not None or training else hint))
    if clicked and start is not None:
        try:
            start()
        except AlreadyTrained as err:
            st.info(str(err))
        except ValueError as err:
            st.error(str(err))
        else:
            state.cache["started"] = True
            st.rerun()
    if training and state.cache.pop("started", False):
        # Train often sits at the window's bottom edge: the inputs grey out and the progress bar below is out of sight.
        st.toast("Training started: its progress bar and Stop button are under the Train button.")
    if training:
        # A job waiting in line changes little: its panel refreshes less often, which spares the server
        # when a whole class waits (30 queued panels at POLL_SECONDS took most of a core).
        queued = state.job.snapshot().phase == "queued"
        state.cache["live_every"] = QUEUED_POLL_SECONDS if queued else POLL_SECONDS
        st.fragment(run_every=state.cache["live_every"])(_live_panel)(page)
    # The last job's notices speak of the inputs it trained on; while the inputs on screen cannot be trained (a bad
    # cell, no picture yet), or are other inputs (a slider moved since), they are left out rather than stand beside
    # inputs they do not describe: a review read a green verdict under sliders it had already moved. The runs below
    # keep their verdicts in the checks table.
    if training or (start is not None and current):
        show_notices(state.notices)
    elif start is not None and (state.notices or not current):
        st.caption("The inputs have changed since the last training: press Train to train on them. " + changed)


def _live_panel(page: str) -> None:
    state = page_state(page)
    job = state.job
    if job is None or job.done:
        st.rerun()
        return
    snap = job.snapshot()
    if snap.phase != "queued" and state.cache.get("live_every") == QUEUED_POLL_SECONDS:
        st.rerun()                       # its turn came: the whole page again, with the faster refresh
        return
    if snap.phase == "queued":
        place, waiting, start = slots().place(job)
        when = f"; it should start in about {_duration(start)}" if math.isfinite(start) and place else ""
        text = (f"Queued: place {place} of {waiting} for this server's {slots().workers} training "
                f"slot{'s' if slots().workers > 1 else ''}{when}. Stop takes it out of the line.")
    elif snap.phase == "waiting":
        text = "Waiting for the GPU: another session is training on it…"
    elif snap.phase == "starting":
        text = "Starting: handing the training to a worker process…"
    elif snap.phase == "finishing":
        text = state.job_finishing
    else:
        info = snap.info
        outer = f"outer step {info['outer_step']} / {info['outer_total']} · " if "outer_total" in info else ""
        # Colour maps train at a few steps a second: a decimal there, none at hundreds.
        speed = f"{snap.steps_per_second:,.1f}" if snap.steps_per_second < 10 else f"{snap.steps_per_second:,.0f}"
        text = (f"{outer}Step {snap.step:,} / {snap.total:,} · {speed} steps/s · "
                f"ETA {_duration(snap.eta)} · {state.job_label} on {snap.device}")
        if snap.note:
            text = f"{snap.note} {text}"
    bar, stop = st.columns([5, 1], vertical_alignment="bottom")
    bar.progress(snap.fraction, text=text)
    if stop.button("Stop", key=key(page, "stop"), disabled=job.stopping or snap.phase not in ("training", "queued", "starting")):
        job.stop()
    has_preview = state.preview_points is not None
    loss_col, preview_col = st.columns(2) if has_preview else (st.container(), None)
    live = state.cache.setdefault("live", {})
    with loss_col:
        if snap.losses:
            # One figure per job, its curve updated in place: a new figure costs ~10x more.
            live["loss"] = loss_figure(snap.loss_steps, snap.losses, height=280, figure=live.get("loss"))
            chart(live["loss"], key(page, "live_loss"))
    if has_preview and snap.preview is not None:
        with preview_col:
            if live.get("preview_step") != snap.preview_step or "preview" not in live:
                bounds = square_bounds(state.preview_points, state.preview_target)
                live["preview"] = preview_figure(state.preview_points, snap.preview, bounds,
                                                 state.preview_target, height=280,
                                                 title=f"T(x) at step {snap.preview_step:,}")
                live["preview_step"] = snap.preview_step
            chart(live["preview"], key(page, "live_preview"))


# =============================================================================================
# Training panel of the transport pages
# =============================================================================================
def _objective_settings(page: str, preset: str, objectives: Sequence[str], disabled: bool,
                        withheld: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The objective select box (when there is a choice), why the ``withheld`` objectives are not in it,
    and, for the constrained flow, its steps."""
    if len(objectives) < 2:
        return presets.objective_overrides(objectives[0], preset)
    objective_key = key(page, "objective")
    st.session_state.setdefault(objective_key, objectives[0])
    label = st.selectbox("Training objective", list(objectives), key=objective_key, disabled=disabled,
                         persist_state="session",
                         help="Monge–Ampère and KL use the target density; the constrained gradient flow "
                              "(Dumont et al. 2026) needs a log-concave target such as a Gaussian; the "
                              "sample-only losses see target samples, not its density.")
    if withheld:
        st.caption("Not offered here: " + "; ".join(f"**{name}**, because {why}" for name, why in withheld.items())
                   + ".")
    overrides = presets.objective_overrides(label, preset)
    flow = overrides["objective"]
    if isinstance(flow, ConstrainedFlow):
        a, b, c = st.columns(3)
        defaults = {"flow_outer_steps": flow.outer_steps, "flow_inner_steps": overrides["steps"] // flow.outer_steps}
        counts = {}
        for name, col, title in (("flow_outer_steps", a, "Outer steps"), ("flow_inner_steps", b, "Inner steps")):
            fkey = key(page, label, name)
            st.session_state.setdefault(fkey, defaults[name])
            counts[name] = int(col.number_input(title, min_value=1, max_value=1000, step=1, key=fkey,
                                                disabled=disabled, persist_state="session"))
        tkey = key(page, label, "flow_tau")
        st.session_state.setdefault(tkey, float(flow.tau))
        tau = float(c.number_input("Step size tau", min_value=1e-3, max_value=10.0, format="%g", key=tkey,
                                   disabled=disabled, persist_state="session"))
        overrides["objective"] = replace(flow, outer_steps=counts["flow_outer_steps"], tau=tau)
        overrides["steps"] = counts["flow_outer_steps"] * counts["flow_inner_steps"]
        st.caption(f"The flow ignores Steps and Learning rate below: it runs outer x inner Adam steps at "
                   f"learning rate {overrides['lr']:g}.")
    return overrides


def _network_settings(page: str, preset: str, networks: Sequence[str], disabled: bool,
                      objectives: Sequence[str] = (presets.DEFAULT_OBJECTIVE,),
                      withheld: Mapping[str, str] | None = None) -> tuple[str, dict[str, int], dict[str, Any]]:
    preset_network, preset_kwargs = presets.MODEL_PRESETS[preset]
    config = presets.TRAIN_PRESETS[preset]
    with st.expander("Network and training settings", expanded=False):
        net_key = key(page, "network")
        st.session_state.setdefault(net_key, preset_network if preset_network in networks else networks[0])
        network = st.selectbox("Map", list(networks), key=net_key, disabled=disabled, persist_state="session",
                               help="The mGradNets are monotone by construction; the MLP baseline is not.")
        objective = _objective_settings(page, preset, objectives, disabled, withheld)
        params = inspect.signature(NETWORKS[network].__init__).parameters
        arch = {}
        sizes = [name for name in ("width", "depth", "modules") if name in params]
        for name, col in zip(sizes, st.columns(len(sizes))):
            default = (preset_kwargs[name] if network == preset_network and name in preset_kwargs
                       else params[name].default)
            size_key = key(page, network, name)
            st.session_state.setdefault(size_key, int(default))
            arch[name] = int(col.number_input(name.capitalize(), min_value=2 if name == "width" else 1,
                                              max_value=SIZES[name], step=1, key=size_key, disabled=disabled,
                                              persist_state="session"))
        a, b, c = st.columns(3)
        for name, value in (("steps", config.steps), ("lr", config.lr), ("seed", config.seed)):
            st.session_state.setdefault(key(page, name), value)
        steps = a.number_input("Steps", min_value=1, max_value=SIZES["steps"], step=100,
                               key=key(page, "steps"), disabled=disabled, persist_state="session")
        lr = b.number_input("Learning rate", min_value=1e-5, max_value=10.0, format="%g",
                            key=key(page, "lr"), disabled=disabled, persist_state="session")
        seed = c.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=key(page, "seed"),
                              disabled=disabled, persist_state="session")
        shown = presets.train_preset(preset, **objective)
        st.caption(f"Optimiser {shown.optimizer}, batch {shown.batch_size}, learning-rate schedule "
                   f"{shown.lr_schedule}; {_describe(shown.objective)}" + _fallback_words(shown))
    return network, arch, {"steps": int(steps), "lr": float(lr), "seed": int(seed), **objective}


def _fallback_words(config: TrainConfig) -> str:
    """The end of the settings caption: what trains after the map, when (``fallback_from``), from where
    (``fallback_start``) and which map is kept (training._nearer_of_two)."""
    fallback = config.effective_fallback
    if fallback is None:
        return "."
    what = f"{fallback.steps} steps of the {fallback.objective.heading}"
    when = ("then" if config.fallback_from == 0 else
            "if the verdict flags the map" + (" or passes it only just" if config.fallback_from < 1 else ""))
    if config.fallback_start == "trained":
        return f"; {when}, {what} from the weights it reached, that map kept when the verdict passes it."
    return f"; {when}, {what} from the same start, the map nearer the target kept."


def _describe(objective: Objective) -> str:
    """The objective in a few words, for the settings caption and a run's label."""
    if isinstance(objective, ConstrainedFlow):
        return f"{objective.variant} constrained gradient flow"
    if isinstance(objective, MongeAmpere):
        # the residual named only when it is not the authors' l1, which every preset uses ("l1 residual" in every
        # digit run's label read as jargon to a new user)
        return "Monge–Ampère loss" + ("" if objective.residual == "l1" else f", {objective.residual} residual")
    return objective.title or f"{objective.name} loss"


def _store_run(state: PageState, job: TrainingJob) -> None:
    """File a finished job's run and ground truth."""
    add_run(state, *job.evaluation)


def add_run(state: PageState, run: Run, reference: Reference) -> None:
    """Add ``run`` to the page's runs and show it first, beside the run shown before. A run on another problem sets the
    page's runs aside (``PageState.earlier``, from where they come back with their inputs: ``_bring_back``) and brings
    back those set aside on its own problem; past ``MAX_RUNS`` runs the oldest goes, past ``MAX_ASIDE`` sets of runs
    aside the oldest set."""
    kept = store() if state.token else None          # no token yet: nothing to keep it under
    new_problem = state.reference is None or state.reference.signature != reference.signature
    aside, back, forgotten = [], [], []
    if new_problem:
        aside = _set_aside(state)
        same = next((group for group in state.earlier if group.signature == reference.signature), None)
        if same is not None:
            state.earlier.remove(same)
            back = [old.number for old in same.runs]
        # the runs brought back: the latest shown beside the new run
        state.runs, state.shown = (same.runs, [same.runs[-1].number]) if same is not None else ([], [])
        forgotten = [old.number for group in state.earlier[MAX_ASIDE:] for old in group.runs]
        del state.earlier[MAX_ASIDE:]
    state.reference = reference
    state.run_counter += 1
    run.number = state.run_counter
    runs = state.runs + [run]
    state.runs = runs[-MAX_RUNS:]
    oldest = [dropped.number for dropped in runs[:-MAX_RUNS]]
    if kept:
        # the runs brought back are the page's again, saved before the new run (a reload takes the problem of the
        # run saved last as the page's: with them left as they were, removing the new run sent a reload to the
        # runs set aside last, a review)
        kept.touch(state.token, state.page, back)
        kept.save(state.token, state.page, run, reference.problem)
        for number in oldest + forgotten:
            kept.remove(state.token, state.page, number)
    _runs_changed(state, [run.number] + state.shown[:1])
    # Said in the notice (a review lost three runs to a loaded map without a word about them; another, a live run to an
    # opened demo, told only after: they are set aside now, to be brought back).
    said = []
    if aside:
        runs_, were = _run_numbers(aside)
        them = "them" if len(aside) > 1 else "it"
        said.append(f"{runs_}, trained on other inputs, {were} set aside: the page compares runs on one problem at a "
                    f"time. **{EARLIER_LABEL}**, under the Train button, brings {them} back with {_their(them)} "
                    "inputs.")
    if back:
        runs_, were = _run_numbers(back)
        said.append(f"{runs_}, trained on these inputs before, {'are' if were == 'were' else 'is'} back beside "
                    f"run #{run.number}.")
    if forgotten:
        runs_, were = _run_numbers(forgotten)
        said.append(f"{runs_}, on the earliest inputs set aside, {were} removed: the page keeps runs on "
                    f"{MAX_ASIDE} earlier inputs (download a run's map to keep it; it can be loaded back).")
    if oldest:
        runs_, were = _run_numbers(oldest)
        said.append(f"{runs_}, the oldest, {were} removed: the page keeps {MAX_RUNS} runs.")
    state.set_aside = " ".join(said)


def _set_aside(state: PageState) -> list[int]:
    """Move the page's runs, if any, to the front of ``PageState.earlier``; their numbers."""
    if not state.runs or state.reference is None:
        return []
    state.earlier.insert(0, RunsAside(state.runs, state.reference.problem, state.reference))
    return [run.number for run in state.runs]


def _their(them: str) -> str:
    """"their" for "them", "its" for "it"."""
    return "their" if them == "them" else "its"


def _run_numbers(numbers: Sequence[int]) -> tuple[str, str]:
    """('Run #3', 'was') or ('Runs #1, #2 and #4', 'were')."""
    named = [f"#{n}" for n in numbers]
    if len(named) == 1:
        return f"Run {named[0]}", "was"
    return f"Runs {', '.join(named[:-1])} and {named[-1]}", "were"


def _restore_runs(page: str) -> None:
    """Once per session and page: the runs this session's token kept on disk (a reload brings them back),
    with the ground truth of their problem recomputed."""
    state = page_state(page)
    token = st.session_state.get("session.token")
    if state.token == token or not token:
        return
    state.token, state.page = token, page
    # A training that was running when the tab was reloaded or closed stopped with it (jobs.watch_session): said,
    # rather than gone without a word (a review reloaded at step 1,887 of 20,000 and found nothing).
    left = store().take_training(token, page)
    if left is not None and state.job is None:
        state.notices = [("info", f"A training ({left}) was running on this page when it was reloaded or closed, and "
                          "stopped with it. Press Train to run it again.")]
    if state.runs:
        return
    kept = kept_runs(page, keep=False)
    if not kept:
        return
    state.run_counter = max(run.number for run, _ in kept)
    # by problem, each where its last run was saved: the page's problem last, the runs set aside before it
    groups: dict[str, list[tuple[Run, dict[str, Any]]]] = {}
    for run, described in kept:
        groups[run.signature] = groups.pop(run.signature, []) + [(run, described)]
    *earlier, current = [(sorted((run for run, _ in group), key=lambda run: run.number), group[-1][1])
                         for group in groups.values()]
    for runs, described in reversed(earlier[-MAX_ASIDE:]):
        try:
            signature = problem_from_description(page, described).signature
        except (KeyError, TypeError, ValueError):
            continue                         # inputs this version cannot set up: those runs are not offered
        for run in runs:
            run.signature = signature
        state.earlier.append(RunsAside(runs, described))
    runs = current[0]
    try:
        problem = problem_from_description(page, current[1])
    except (KeyError, TypeError, ValueError) as err:
        st.warning(f"The runs kept from before the reload could not be brought back: {err}")
        return
    reference = compute_reference(problem)
    for run in runs:
        run.signature = reference.signature
    state.runs, state.reference = runs[-MAX_RUNS:], reference
    _runs_changed(state, [run.number for run in reversed(runs)][:2])
    trained = _restore_trained_settings(page, runs)
    aside = sum(len(group.runs) for group in state.earlier)
    state.notices += [("info", f"{len(runs)} run{'s' if len(runs) > 1 else ''} of this session brought back from "
                       "before the reload" + (", with the settings of the last one trained" if trained else "")
                       + (f"; {aside} more on earlier inputs under **{EARLIER_LABEL}**" if aside else "") + ".")]
    # and what the page had said of the last run trained, its verdict in words (only "ok" or "flagged" in the checks
    # table had come back: a review)
    latest = max(runs, key=lambda run: run.number)
    if latest.result is not None and not latest.origin:
        state.notices += outcome_notices(latest.result)


def _restore_trained_settings(page: str, runs: Sequence[Run]) -> bool:
    """The settings of the last of ``runs`` trained here (not loaded) in the page's boxes; whether there was one."""
    trained = [run for run in runs if run.result is not None and not run.origin]
    if trained:
        _restore_settings(page, trained[-1].settings)
    return bool(trained)


def _restore_settings(page: str, settings: dict[str, Any]) -> None:
    """The training settings of a run brought back after a reload, in the page's boxes (they came back at their
    defaults: a review reloaded after training with its own steps and seed and found the preset's). Set before the
    boxes are drawn; a setting the run does not carry keeps its default."""
    network, training = settings.get("network"), settings.get("training") or {}
    if network in NETWORKS:
        st.session_state[key(page, "network")] = network
        for name in ("width", "depth", "modules"):
            if isinstance(settings.get(name), int):
                st.session_state[key(page, network, name)] = settings[name]
    for name, kind in (("steps", int), ("lr", float), ("seed", int)):
        if isinstance(training.get(name), (int, float)):
            st.session_state[key(page, name)] = kind(training[name])
    label = picked_objective(str(settings.get("objective_label", "")))
    if label in presets.OBJECTIVE_CHOICES:
        st.session_state[key(page, "objective")] = label


def _runs_changed(state: PageState, shown: list[int]) -> None:
    """After runs were added or removed: what is shown, and the cached pictures of runs still there."""
    numbers = {run.number for run in state.runs}
    state.shown = [n for n in shown if n in numbers][:2]
    state.runs_version += 1
    state.cache = {k: v for k, v in state.cache.items() if k[0] == "run" and k[1] in numbers}


class AlreadyTrained(ValueError):
    """Train pressed for a run that is already on the page (same inputs, settings and seed)."""


def _what_trains(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's settings less its label and problem description: the same for two runs that train alike."""
    return {k: v for k, v in settings.items() if k not in ("objective_label", "problem")}


def _start(page: str, problem: Problem, preset: str, network: str, arch: dict[str, int],
           overrides: dict[str, Any]) -> None:
    state = page_state(page)
    config = presets.train_preset(preset, **overrides, time_limit=TIME_LIMIT)
    flow = isinstance(config.objective, ConstrainedFlow)
    if flow:
        log_concave_target(problem.target)      # refuses a target the flow cannot use, with a message
    model = seeded_map(network, overrides["seed"], dim=2, **arch)
    check_work(config.steps, model, "The constrained flow (outer x inner steps)" if flow else "This training")
    gen = torch.Generator().manual_seed(problem.seed + 1)
    source, target = problem.source.to("cpu"), problem.target.to("cpu")
    preview = source.sample(PREVIEW_POINTS, gen)
    preview_target = to_numpy(target.sample(PREVIEW_POINTS, gen))
    cached = state.reference if state.reference and state.reference.signature == problem.signature else None
    # The objective as the user picked it ("KL divergence (Adam)"), for the run's label.
    picked = st.session_state.get(key(page, "objective")) or _describe(config.objective)
    settings = {"network": network, **arch, "objective_label": picked,
                "training": config.to_dict(), "problem": problem.describe()}
    same = next((run for run in state.runs if not run.origin and run.signature == problem.signature
                 and run.result is not None and run.result.stopped == "completed"
                 and _what_trains(run.settings) == _what_trains(settings)), None)
    if same is not None:
        # Training is deterministic: a review's runs #3 and #4 matched to the last digit. (A run that was stopped, or
        # one opened from a file or the gallery, may be trained again: it would not come out the same or is not live.)
        raise AlreadyTrained(f"{same.name} was trained on these inputs with these settings and seed: training again "
                             "would give the same map. Change the seed (Network and training settings) to train "
                             "another.")

    finish = partial(evaluate_training, problem=problem, reference=cached, network=network, settings=settings)
    job = TrainingJob(model, problem.source, problem.target, config, preview_points=preview,
                      preview_every=min(max(config.steps // 10, PREVIEW_EVERY[0]), PREVIEW_EVERY[1]),
                      finish=finish, cpu_threads=CPU_THREADS, slots=slots(), pool=workers())
    start_job(page, job, label=network, store=_store_run, preview=(to_numpy(preview), preview_target),
              finishing="Training finished; computing the ground truth and the metrics…")
    if state.token:
        store().mark_training(state.token, page, f"{network}, {config.steps:,} steps")


def training_panel(page: str, problem: Problem | None, preset: str,
                   networks: Sequence[str] = tuple(NETWORKS),
                   objectives: Sequence[str] = (presets.DEFAULT_OBJECTIVE,),
                   withheld: Mapping[str, str] | None = None) -> None:
    """Settings (defaults from ``presets``' ``preset``; the first of ``objectives`` is the default, and
    ``withheld`` says why others are not offered), the Train button and, while training, the live panel,
    refreshed every ``POLL_SECONDS``."""
    workers()                          # start the worker processes now, so that Train does not wait for them
    _restore_runs(page)
    _open_pending_demo(page, problem)
    training = page_state(page).job is not None
    network, arch, overrides = _network_settings(page, preset, networks, disabled=training,
                                                 objectives=objectives, withheld=withheld)
    start = None if problem is None else lambda: _start(page, problem, preset, network, arch, overrides)
    reference = page_state(page).reference
    _run_controls(page, start, hint=" Fix the input above to train.",
                  changed="The runs below are for the inputs they were trained on, each with its verdict in the checks "
                          f"table; a run on these inputs sets them aside, under **{EARLIER_LABEL}**, from where they "
                          "can be brought back.",
                  current=problem is None or reference is None or reference.signature == problem.signature)
    if not training:
        _map_upload(page, problem)
        _earlier_control(page)


def _earlier_control(page: str) -> None:
    """The runs set aside on earlier inputs (``add_run``), to bring back with those inputs."""
    state = page_state(page)
    if not state.earlier:
        return
    count = sum(len(group.runs) for group in state.earlier)
    with st.expander(f"{EARLIER_LABEL} ({count} run{'s' if count > 1 else ''})"):
        labels = [_aside_label(group) for group in state.earlier]
        index = st.selectbox("Runs set aside when a run on other inputs joined the page, the latest first",
                             range(len(labels)), format_func=labels.__getitem__,
                             key=key(page, "earlier", state.runs_version))
        st.button("Bring back, with their inputs", key=key(page, "bring_back"), on_click=_bring_back,
                  args=(page, index), help="The inputs above are set to those these runs were trained on, and the "
                                           "runs on the page now are set aside in their place.")


def _aside_label(group: RunsAside) -> str:
    """"Runs #1 and #2: preset Paper example", "Run #3: MNIST 0 #1 → a drawing"."""
    if not group.words:
        group.words = inputs_summary(group.problem)
    return f"{_run_numbers([run.number for run in group.runs])[0]}: {group.words}"


def _bring_back(page: str, index: int) -> None:
    """Make the runs set aside ``PageState.earlier[index]`` the page's runs again, with the inputs and the settings
    they were trained on; the page's runs go aside in their place (a callback: before the inputs are drawn)."""
    state = page_state(page)
    if state.job is not None or not 0 <= index < len(state.earlier):
        return
    group = state.earlier[index]
    try:
        reference = group.reference or compute_reference(problem_from_description(page, group.problem))
    except (KeyError, TypeError, ValueError) as err:
        state.notices = [("warning", f"Those runs cannot be brought back: their inputs cannot be set up ({err}).")]
        return
    del state.earlier[index]
    aside = _set_aside(state)
    for run in group.runs:
        run.signature = reference.signature
    state.runs, state.reference = group.runs, reference
    _runs_changed(state, [run.number for run in reversed(group.runs)][:2])
    restore_inputs(page, group.problem)
    trained = _restore_trained_settings(page, group.runs)
    if state.token:
        store().touch(state.token, page, [run.number for run in group.runs])
    runs_, were = _run_numbers([run.number for run in group.runs])
    them = "they" if were == "were" else "it"
    if were == "was":
        said = f"{runs_} is back, with the inputs" + (" and settings it was trained with" if trained else
                                                       " it was measured on")
    else:
        said = f"{runs_} are back, with the inputs they were trained on" + (
            " and the settings of the last one trained" if trained else "")
    if aside:
        numbers, were = _run_numbers(aside)
        said += f"; {numbers[0].lower()}{numbers[1:]} {were} set aside in {'their' if them == 'they' else 'its'} place"
    latest = max(group.runs, key=lambda run: run.number)
    if latest.result is not None and not latest.origin:
        state.notices = [("info", said + ".")] + outcome_notices(latest.result)
    else:
        # a demo or a loaded map: its verdict's box, as when it was opened (a blue note alone read as no verdict)
        state.notices = [_file_notice(latest, said + ".")]


def _file_map(state: PageState, problem: Problem, loaded: MapFile, origin: str) -> Run:
    """A map read from a file, measured on ``problem`` and added to the page's runs."""
    extra = loaded.extra or {}
    network = extra.get("network")
    network_model = network_of(loaded.model)
    if network not in NETWORKS or not isinstance(network_model, NETWORKS[network]):
        network = next(label for label, cls in NETWORKS.items() if isinstance(network_model, cls))
    reference = (state.reference if state.reference is not None and state.reference.signature == problem.signature
                 else compute_reference(problem))
    run = evaluate_run(problem, reference, loaded.model, None, network, extra, origin=origin)
    add_run(state, run, reference)
    return run


def _open_pending_demo(page: str, problem: Problem | None) -> None:
    """File the gallery map the Open demo button asked for, now that its inputs have set the problem."""
    state = page_state(page)
    path = state.pending_demo
    if path is None or problem is None:
        return
    state.pending_demo = None
    try:
        loaded = load_map_file(path)
    except ValueError as err:
        st.error(f"The demo {Path(path).name} cannot be opened: {err}")
        return
    demo = (loaded.extra or {}).get("demo", {})
    run = _file_map(state, problem, loaded, origin=f"demo {demo.get('title', Path(path).stem)}")
    steps = (loaded.extra or {}).get("training", {}).get("steps")
    state.notices = [_file_notice(run, f"Demo opened as run #{run.number}: {run.network}"
                                  + (f", trained in advance for {steps:,} steps" if isinstance(steps, int) else "")
                                  + ". Press Train to train one live and compare the two.")] + removed_notice(state)


def _file_notice(run: Run, said: str) -> tuple[str, str]:
    """The notice on a map read from a file: ``said``, in the box a training's verdict gets (a review found an opened
    demo's passing verdict only as "ok" in the checks table), green when the verdict passes it on these inputs."""
    if run.metrics.get("verdict") == "flagged":
        return ("warning", f"**The map is not the optimal map for these inputs**: see the verdict's checks below. "
                           f"{said}")
    if run.metrics.get("verdict") == "ok":
        return ("success", f"**The map is close to the optimal map.** {said}")
    return ("info", said)


def _map_upload(page: str, problem: Problem | None) -> None:
    """A saved map (.safetensors from this app or ``save_map``) joins the runs, measured on the current
    problem; anything else gets an error and changes nothing."""
    state = page_state(page)
    with st.expander("Load a saved map (.safetensors)"):
        # No type=[...]: Streamlit would raise for another extension instead of letting read_map say why.
        upload = st.file_uploader("A map downloaded from this app or written by gradnet_core.save_map",
                                  key=key(page, "map_upload", state.runs_version))
        if upload is None:
            return
        if problem is None:
            st.error("Set up the problem above first: the map is measured against it.")
            return
        try:
            loaded = read_map(upload.getvalue())
            if loaded.model.dim != 2:
                raise ValueError(f"this map is {loaded.model.dim}-dimensional; this page's problems are 2-D")
        except ValueError as err:
            st.error(f"{upload.name}: {err}")
            return
        run = _file_map(state, problem, loaded, origin=upload.name)
        trained_on = (loaded.extra or {}).get("problem")
        if isinstance(trained_on, dict) and without_strokes(trained_on) == without_strokes(
                json.loads(json.dumps(problem.describe()))):
            where = ""
        elif trained_on:
            where = " It was trained on another problem; its metrics are measured on this one."
        else:
            where = " The file does not say what it was trained on; its metrics are measured on this problem."
        state.notices = ([_file_notice(run, f"Loaded {upload.name} as run #{run.number}.{where}")]
                         + removed_notice(state))
        st.rerun()


# =============================================================================================
# Results panel of the transport pages
# =============================================================================================
def _panels(reference: Reference, shown: Sequence[Run]) -> list[Panel]:
    """The first shown run, the ground truth, then the second shown run."""
    def panel(run: Run) -> Panel:
        suffix = "" if run.model.monotone else ", not monotone"
        return Panel(f"{run.name}{suffix}", run.mapped, (reference.grid, run.grid_mapped))

    truth = Panel(reference.name, reference.mapped, (reference.grid, reference.grid_mapped))
    return [panel(run) for run in shown[:1]] + [truth] + [panel(run) for run in shown[1:2]]


def _cached(state: PageState, name: tuple, make: Callable[[], Any]) -> Any:
    """``make()`` once per ``name``: ("run", number, what) for a run's pictures (kept while the run is),
    anything else for what depends on the whole list (dropped when it changes)."""
    if name not in state.cache:
        state.cache[name] = make()
    return state.cache[name]


def results_panel(page: str, problem: Problem | None) -> None:
    """The runs to show, the animation with its toggles, the metrics of every run, the density pictures,
    the loss curves and the downloads."""
    state = page_state(page)
    if not state.runs or state.reference is None:
        return
    ref = state.reference
    st.divider()
    st.subheader("Results")
    if problem is None or problem.signature != ref.signature:
        st.caption("These results are for the problem as it was when you pressed Train.")
    by_number = {run.number: run for run in state.runs}
    chosen = st.multiselect(
        "Runs shown side by side, with the ground truth between them", list(by_number), default=state.shown,
        max_selections=2, format_func=lambda n: by_number[n].label, key=key(page, "shown", state.runs_version),
        help="Every run on this problem is in the table below; pick any two to compare.")
    state.shown = list(chosen)
    shown = [by_number[n] for n in chosen]
    # a row that wraps: in three columns of a 900 px window "Displacement arrows" was cut
    row = st.container(horizontal=True, wrap=True, gap="large")
    arrows = row.toggle("Displacement arrows", key=key(page, "arrows"), persist_state="session")
    paths = row.toggle("Trajectories", key=key(page, "paths"), persist_state="session",
                       help="Straight paths x → T(x); they never cross for a monotone map.")
    show_target = row.toggle("Target samples", key=key(page, "show_target"), persist_state="session")
    panels = _panels(ref, shown)
    figure = _cached(state, ("animation", tuple(chosen), arrows, paths, show_target), lambda: animation_figure(
        ref.points, panels, ref.target_samples, frames=ANIMATION_FRAMES, arrows=arrows,
        trajectories=paths, show_target=show_target))
    chart(figure, key(page, "animation"))
    st.caption("Points move along x_t = (1 − t) x + t T(x); colours mark where each point started.")

    truth = ref.name.removeprefix("Ground truth (").removesuffix(")")
    st.markdown(f"**Metrics** of every run against the ground truth ({truth}) on the {len(ref.points):,} source "
                "samples shown above")
    if ref.noise_mse is not None:
        st.caption(f"This ground truth is itself an estimate from {len(ref.points):,} samples: the exact map would "
                   f"score about MSE {ref.noise_mse:.1e} (L2-UVP {ref.noise_l2_uvp:.1f} %) against it, half what two "
                   "such estimates from independent samples differ by. Differences of that size are its noise, not "
                   "the map's error; more samples (the slider Ground-truth samples n) make it smaller.")
    shown_truth = _metrics_dataframe(state.runs, TRUTH_METRICS)
    st.markdown("**The verdict's checks**, which use no ground truth: what the app can tell about a map where no exact "
                "answer is known (a drawn digit, an uploaded photo, a typed mixture)")
    shown_checks = _metrics_dataframe(state.runs, CHECK_METRICS, short_names=True)
    st.caption(_checks_caption(shown_checks))
    _columns_explained(shown_truth + shown_checks)
    _remove_control(page, state, by_number)
    # After the tables: the exact density takes 1-8 s the first time a map is shown, and the numbers should not wait
    # for it (a review).
    _density_section(page, state, shown)
    # one under the other, the downloads in a row that wraps: beside the chart in a 900 px window their labels were cut
    # ("Map #1 mGradNet-M (…")
    loss_col, files_col = st.container(), st.container()
    with loss_col:
        curves = {run.label: (run.result.history["step"], run.result.history["loss"])
                  for run in state.runs if run.result is not None and run.result.history["step"]}
        switches = [switch for run in state.runs if run.result is not None for switch in run.result.phases]
        if curves:
            chart(_cached(state, ("losses",), lambda: losses_figure(curves, height=260, switches=switches)),
                  key(page, "losses"))
            st.caption("The loss of each run at every step. Where the target starts smoothed and sharpens over the "
                       "run (the mixture and digit presets), the loss can rise as it sharpens; a dotted line marks "
                       "where a run went on with another objective, whose loss is on another scale, or trained on "
                       "after its map was flagged.")
    with files_col:
        st.markdown("**Downloads**")
        hidden = len(state.runs) - len(shown)
        if hidden:
            st.caption(f"The maps of the runs shown above. To download another run's map ({hidden} more), show it "
                       "above.")
        with st.container(horizontal=True, wrap=True):
            for run in shown:
                st.download_button(f"Map {run.name} (.safetensors)",
                                   _cached(state, ("run", run.number, "file"), lambda run=run: map_to_bytes(
                                       run.model, {**run.settings, "network": run.network})),
                                   file_name=f"{page}-run{run.number}-{run.network.replace(' ', '-')}.safetensors",
                                   mime="application/octet-stream", key=key(page, "download_map", run.number))
            st.download_button("Metrics of every run (.csv)",
                               metrics_table(state.runs, details=True).to_csv(index=False),
                               file_name=f"{page}-metrics.csv", mime="text/csv", key=key(page, "download_csv"),
                               help="Every run's metrics and checks, with its settings and the problem it was trained "
                                    "on.")
            st.download_button("Animation (.gif)", lambda: _cached(
                                   state, ("gif", tuple(chosen), show_target, arrows, paths), lambda: animation_gif(
                                       ref.points, panels, ref.target_samples, frames=ANIMATION_FRAMES,
                                       show_target=show_target, arrows=arrows, trajectories=paths,
                                       title=f"{PAGE_TITLES.get(page, page)}: x_t = (1 - t) x + t T(x)")),
                               file_name=f"{page}-animation.gif", mime="image/gif", key=key(page, "download_gif"))
            monotone = _monotone_run(shown)
            if monotone is not None:
                # named for its run, as the map's file is: two mGradNet-M runs shown gave two alike (a review)
                st.download_button(f"Density morph of {monotone.name} (.gif)", lambda: _cached(
                                       state, ("run", monotone.number, "morph_gif"), lambda: density_morph_gif(
                                           _morph(state, monotone), title=f"{monotone.name}: density")),
                                   file_name=f"{page}-run{monotone.number}-density-morph.gif", mime="image/gif",
                                   key=key(page, "download_morph_gif"))


def _checks_caption(columns: list[str]) -> str:
    """Which of the verdict's columns shown decide, and what the others are for. A green box beside "uncovered 13 %"
    read as a contradiction (a review); a note on the uncovered share and the KL estimate under a digits table that
    has neither read as a mistake (another)."""
    said = ["The W2 excess decides, against the tolerance the verdict's message names."]
    uncovered, kl = METRIC_COLUMNS["uncovered"] in columns, METRIC_COLUMNS["kl_estimate"] in columns
    if uncovered:
        said.append(f"Beside it the uncovered share decides for a map trained on target samples (above "
                    f"{100 * SAMPLE_UNCOVERED_TOLERANCE:g} %).")
    if kl:
        said.append(f"The KL estimate decides above {KL_GROSS_TOLERANCE:g} nats for a map onto several components.")
    said.append("The other columns say what went wrong when a map is flagged" + (
        ": a right map onto a narrow component can leave some of it uncovered." if uncovered else "."))
    return " ".join(said)


#: The metrics table's column of what each run is: trained how, or loaded from where (the rest of ``Run.label``).
MADE_COLUMN = "how it was made"

#: The metrics tables' columns as the page heads them (shortened to fit 1400 px; the CSV keeps the full headers), with
#: their number formats.
_SHOWN_AS = {
    "MSE": ("MSE", "%.3e"), "L2-UVP (%)": ("L2-UVP (%)", "%.3f"), "cosine": ("cosine", "%.4f"),
    "training time (s)": ("training time (s)", "%.1f"),
    METRIC_COLUMNS["error_bound"]: ("W2 excess", "%.3g"), METRIC_COLUMNS["distance_ratio"]: ("energy ratio", "%.2f"),
    METRIC_COLUMNS["kl_estimate"]: ("KL estimate", "%.3f"), METRIC_COLUMNS["uncovered"]: ("uncovered (%)", "%.1f"),
    METRIC_COLUMNS["misplaced"]: ("misplaced (%)", "%.1f"),
    METRIC_COLUMNS["ma_residual"]: ("MA residual", "%.4f"),
    METRIC_COLUMNS["min_eigenvalue"]: ("min eigenvalue of J", "%.4f"),
}

#: What each column means, by its header on the page: the column's help and the "What the columns mean" list under the
#: tables (a review found energy ratio, W2 excess and L2-UVP explained only in hover help and docs/method.md).
COLUMN_HELP = {
    "MSE": "Mean squared error against the ground truth: the squared difference between the map's T(x) and the ground "
           "truth's T*(x), averaged over the source samples and the two coordinates (the paper's measure). 0 for the "
           "exact map.",
    "L2-UVP (%)": "The same error as a share of the target's spread: 100 × mean |T(x) − T*(x)|² ÷ the target's "
                  "variance (unexplained variance percentage, Korotin et al. 2021). The app's robustness benchmarks count "
                  "a map right under 5 %; their median mixture run scores about 1 %.",
    "cosine": "How well the map's displacements T(x) − x point where the ground truth's do, as one cosine over all "
              "the samples: 1 for the exact map.",
    "training time (s)": "The optimiser's steps alone. Checking the map (the verdict), the ground truth and the "
                         "pictures take a second or two more, and the first training after the app starts waits for "
                         "its worker process to start (about 3 s).",
    "W2 excess": "√(W2² between the mapped samples and the target's − W2² between two samples of the target): about 0 "
                 "for the exact map. W2²(T#p, q) is at most the map's mean squared error against the optimal map, so "
                 "this grows with the map's error, and it ranked the benchmark's maps as their exact error did; "
                 "compare it with √MSE. The verdict decides on it in two and three dimensions. None above three.",
    "energy ratio": "The energy distance between the mapped samples and the target's, over that between two samples "
                    "of the target. Not 1 for a right map: the samples' chance differences put most right maps "
                    "between 1 and 5. In two and three dimensions the verdict decides on the W2 excess, not on this; "
                    f"above three it flags a map above {DISTANCE_TOLERANCE:g}.",
    "KL estimate": "KL(T#p ‖ q) estimated from the Monge–Ampère residual, in nats (0 for the exact map; the estimate's "
                   "noise, which can fall below 0, is shown as 0). It decides above "
                   f"{KL_GROSS_TOLERANCE:g} on a target of several components, and names what went wrong when a map "
                   "is flagged. Empty for image targets, and for maps trained on target samples (a digit map's "
                   "Sinkhorn phase included) unless it is that large.",
    "uncovered (%)": "Share of target samples where the map's pushforward has under a tenth of the target's density "
                     "(found through the inverse map). It decides for a map trained on target samples (a digit map's "
                     f"Sinkhorn phase included) above {100 * SAMPLE_UNCOVERED_TOLERANCE:g} %; for the others it names "
                     "what went wrong when the W2 excess flags the map. Empty for a digit's map trained on target "
                     "samples.",
    "misplaced (%)": "Share of source samples the map sends where its pushforward has over ten times the target's "
                     "density (between a digit's strokes, say). It names what went wrong when a map is flagged. Empty "
                     "for maps trained on target samples (a digit map's Sinkhorn phase included) unless their KL "
                     "estimate decides.",
    "MA residual": "Mean |log p(x) − log det J_T(x) − log q(T(x))| over the source samples: the Monge–Ampère "
                   "equation's error, 0 for the exact map.",
    "min eigenvalue of J": "The smallest eigenvalue of the map's Jacobian over the source samples: positive for a "
                           "monotone map.",
}


def _columns_explained(columns: Sequence[str]) -> None:
    """"What the columns mean": the help of the metrics columns shown (``columns``, as ``metrics_table`` names them),
    in the page's own words, not only on hover."""
    headers = [_SHOWN_AS[column][0] for column in columns if column in _SHOWN_AS]
    with st.expander("What the columns mean"):
        st.markdown("\n".join(f"- **{header}**: {COLUMN_HELP[header]}" for header in headers))


def _metrics_dataframe(runs: list[Run], metrics: tuple[str, ...], short_names: bool = False) -> list[str]:
    """The runs' metrics named in ``metrics`` as a table, the runs named in full or (``short_names``) by number and
    network only; returns the columns shown. A check no run has (the Jacobian checks skip maps trained on samples, a
    digit map's Sinkhorn phase among them) is left out on screen; the CSV keeps every column, under its full header
    (shortened here to fit 1400 px)."""
    table = metrics_table(runs, metrics=metrics)
    table = table.drop(columns=[c for c in table.columns if table[c].isna().all()])
    if not short_names:
        # what each run is in a wide column of its own beside its name: whole in the pinned name column, a long label
        # ("#1 mGradNet-M (KL divergence (Adam) → Sinkhorn divergence, 1,100 steps)") was cut (a review)
        # (last: second, it took a 900 px window's width and the numbers were out of sight)
        table[MADE_COLUMN] = [run.label.removeprefix(run.name).strip()[1:-1] for run in runs]
    table["map"] = [run.name for run in runs]
    kl = METRIC_COLUMNS["kl_estimate"]
    if kl in table:
        # The estimate's noise takes a right map's below 0 (-0.001 puzzled a class; a review); 0 is its floor.
        table[kl] = table[kl].clip(lower=0.0).round(3) + 0.0
    config: dict[str, Any] = {
        # the run's name stays in view while the table scrolls sideways in a narrow window, at a width that leaves
        # room for numbers there (a full label took a 900 px window's whole table)
        "map": st.column_config.TextColumn(pinned=True, width=130),
        MADE_COLUMN: st.column_config.TextColumn(width="large"),
        "steps": st.column_config.NumberColumn(format="%d"),
    }
    for column, (header, number_format) in _SHOWN_AS.items():
        config[column] = st.column_config.NumberColumn(header, format=number_format, help=COLUMN_HELP[header])
    show_table(table, config)
    return list(table.columns)


def _remove_control(page: str, state: PageState, by_number: dict[int, Run]) -> None:
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    victim = left.selectbox("Remove a run", list(by_number), index=None, placeholder="Pick a run to remove",
                            format_func=lambda n: by_number[n].label, key=key(page, "remove", state.runs_version))
    if right.button("Remove", key=key(page, "remove_button"), disabled=victim is None):
        state.runs = [run for run in state.runs if run.number != victim]
        if state.token:
            store().remove(state.token, state.page, victim)
        _runs_changed(state, state.shown)
        if not state.runs:
            state.reference = None
        # what the page said of the last run may be of this one: what it says now is what was done (a review saw a
        # removed run's notice stay)
        state.notices = [("info", f"Run #{victim} was removed.")]
        st.rerun()


def _monotone_run(runs: Sequence[Run]) -> Run | None:
    """The first run whose map is monotone (has an inverse), or None."""
    return next((run for run in runs if run.model.monotone), None)


def _morph(state: PageState, run: Run) -> Any:
    return _cached(state, ("run", run.number, "morph"), lambda: density_morph_of(state.reference, run))


def _density_section(page: str, state: PageState, runs: Sequence[Run]) -> None:
    """The exact density pictures of the monotone run (docs/method.md §2.7), one view at a time, each
    computed once per trained map."""
    st.markdown("**What the map does to the density**")
    monotone = [run for run in runs if run.model.monotone]
    if not monotone:
        st.info(("The MLP baseline is not monotone" if runs else "No run is shown") + ", so there is no inverse "
                "and no exact density to compute. Show an mGradNet run to see the density morph, the pushforward "
                "and the map run backwards.")
        return
    ref = state.reference
    if len(monotone) > 1:
        by_number = {m.number: m for m in monotone}
        number = st.radio("Pictures of", list(by_number), horizontal=True, format_func=lambda n: by_number[n].label,
                          key=key(page, "density_run", state.runs_version))
        run = by_number[number]
    else:
        run = monotone[0]
    view = st.radio("Density view", DENSITY_VIEWS, horizontal=True, key=key(page, "density_view"),
                    persist_state="session", label_visibility="collapsed")
    not_monotone = [other.network for other in runs if not other.model.monotone]
    if not_monotone:
        st.caption(f"These pictures are for {run.name}; the {not_monotone[0]} is not monotone and has no inverse.")
    # not "the exact density": a thin one is drawn from carried points (pushforward.morph_picture)
    with st.spinner("Computing the density pictures (once per trained map)…"):
        if view == "Density morph":
            morph = _morph(state, run)
            figure = _cached(state, ("run", run.number, "morph_figure"), lambda: density_morph_figure(
                morph, (ref.points, ref.mapped), title=f"{run.network}: density of x_t",
                particles_title=ref.name))   # the caption says "Right: the ground truth's particles"
            chart(figure, key(page, "density_morph"))
            st.caption(_morph_caption(morph))
            _unsolved_note(morph.unsolved[-1], morph.grid.resolution ** 2, when="At t = 1 (T#p), ")
        elif view == "Pushforward vs target":
            morph = _morph(state, run)
            target, target_sampled = _cached(state, ("run", run.number, "target_grid"), lambda: density_picture(
                ref.target, morph.grid, generator=torch.Generator().manual_seed(run.number)))
            figure = _cached(state, ("run", run.number, "comparison"), lambda: density_comparison_figure(
                morph.pushforward, target, morph.grid, titles=(f"T#p ({run.network})", "target q", "T#p − q")))
            chart(figure, key(page, "density_comparison"))
            tv = total_variation(morph.pushforward, target, morph.grid)
            mass = float(morph.pushforward.sum()) * morph.grid.cell_area
            # The grid's Riemann sum of T#p: "100.2 %" of its mass in the box read as impossible, so to the percent.
            st.markdown(f"Total variation between T#p and q: **{tv:.3f}** (0 when the map carries p exactly onto "
                        f"q, 1 when they do not overlap). T#p has about {min(mass, 1.0):.0%} of its mass in this box."
                        + _histogram_note(bool(morph.samples), target_sampled))
            st.caption("Where the optimal map has to jump (to split one source component between two target "
                       "components, or to carry mass across a gap), a network, being smooth, cannot: T#p then shows "
                       "seams, bands or bent shapes near the split that the target does not have, holding the little "
                       "mass that lies between. The total variation says how much mass is out of place, and the "
                       "verdict's W2 check how far it is moved.")
            _unsolved_note(morph.unsolved[-1], morph.grid.resolution ** 2, when="At t = 1 (T#p), ")
        elif view == "Where the map is wrong":
            field, grid = _cached(state, ("run", run.number, "residual"), lambda: residual_of(ref, run))
            figure = _cached(state, ("run", run.number, "residual_figure"), lambda: residual_figure(
                field, grid, title=f"Monge–Ampère residual of {run.network}"))
            chart(figure, key(page, "residual"))
            inside = field[np.isfinite(field)]
            st.caption(f"log p(x) − log det J_T(x) − log q(T(x)) over the source (blank where p is under 1 % of "
                       f"its peak); zero everywhere for the optimal map. Red: the map piles up more mass at T(x) "
                       f"than the target has there; blue: less. Median |residual| "
                       f"{float(np.median(np.abs(inside))) if inside.size else math.nan:.3f}.")
        else:
            back, converged = _cached(state, ("run", run.number, "back"), lambda: morph_back(ref, run))
            figure = _cached(state, ("run", run.number, "back_figure"), lambda: animation_figure(
                ref.target_samples[converged],
                [Panel(f"{run.network}: T⁻¹", back[converged]),
                 Panel(f"{ref.name}: inverse", ref.inverse_mapped[converged])],
                frames=ANIMATION_FRAMES))
            chart(figure, key(page, "morph_back"))
            st.caption("The target's samples flow back to the source along y_t = (1 − t) y + t T⁻¹(y), with T⁻¹ "
                       "solved by Newton's method; nothing is retrained. Colours mark where each point started.")
            _unsolved_note(int((~converged).sum()), len(converged), "target samples", "they are left out")


def _morph_caption(morph: Any) -> str:
    """How the density morph's frames were drawn: exact values, or (pushforward.morph_picture) histograms."""
    if morph.samples:
        return (f"Left: the density of x_t = (1 − t) x + t T(x) as each pixel's share of {morph.samples:,} source "
                f"points carried along by the map (grainy where it is spread out). The density is narrower than a "
                f"pixel here, so its exact values at the pixel centres, p(x) / det((1 − t) I + t J_T(x)), would miss "
                f"most of it and draw a few dashes. Right: the ground truth's particles on the same clock.")
    return ("Left: the exact density of x_t = (1 − t) x + t T(x), p(x) / det((1 − t) I + t J_T(x)) at the preimage x "
            "of each pixel, found by Newton's method on the map's closed-form Jacobian. Right: the ground truth's "
            "particles on the same clock.")


def _histogram_note(pushforward: bool, target: bool) -> str:
    """What the total variation's line adds when T#p or q is a histogram (pushforward.density_picture)."""
    if not (pushforward or target):
        return ""
    which = "T#p and q are" if pushforward and target else ("T#p is" if pushforward else "q is")
    return (f" {which} narrower than a pixel here and drawn as histograms of sampled points, whose sampling alone "
            f"adds up to about 0.1 to the total variation.")


def _unsolved_note(unsolved: int, total: int, what: str = "grid points",
                   consequence: str = "the density there is 0", when: str = "") -> None:
    """``when``: the frame the count is of ("At t = 1 (T#p), "): under a morph shown at t = 0, where every point has
    one, the bare count read as a contradiction (a review)."""
    if unsolved:
        st.caption(f"{when}{unsolved:,} of {total:,} {what} have no preimage under the learned map (they lie outside "
                   f"its range): {consequence}.")


# =============================================================================================
# Colour transfer
# =============================================================================================
@dataclass
class ColorOutcome:
    """A finished colour-transfer job: the two images, what was trained, and the comparison with EMD."""

    source: np.ndarray         # (h, w, 3) in [0, 1]
    target: np.ndarray         # (h', w', 3) in [0, 1]
    network: str
    loss: str                  # a key of COLOR_LOSSES
    result: TrainResult
    comparison: color.ColorComparison


def _color_settings(page: str, disabled: bool) -> tuple[str, str, dict[str, Any]]:
    """The map, the loss, and steps, learning rate and seed."""
    with st.expander("Map and training settings", expanded=False):
        a, b = st.columns(2)
        st.session_state.setdefault(key(page, "network"), "M-MGN")
        network = a.selectbox("Map", color.COLOR_NETWORKS, key=key(page, "network"), disabled=disabled,
                              persist_state="session",
                              help="Every monotone map in the library: GradNetOT's mGradNet-M and mGradNet-C; the "
                                   "modular and cascaded monotone gradient networks of ICASSP 2023 (M-MGN, the "
                                   "default: it reaches the bundled pair's exact answer both ways, and C-MGN); and "
                                   "an input-convex network's gradient (ICNN).")
        loss = b.selectbox("Loss", list(COLOR_LOSSES), format_func=COLOR_LOSSES.get, key=key(page, "loss"),
                           disabled=disabled, persist_state="session")
        c, d, e = st.columns(3)
        defaults = color.COLOR_CONFIG
        for name, value in (("steps", defaults.steps), ("lr", defaults.lr), ("seed", defaults.seed)):
            st.session_state.setdefault(key(page, name), value)
        steps = c.number_input("Steps", min_value=1, max_value=SIZES["steps"], step=50, key=key(page, "steps"),
                               disabled=disabled, persist_state="session")
        lr = d.number_input("Learning rate", min_value=1e-5, max_value=1.0, format="%g", key=key(page, "lr"),
                            disabled=disabled, persist_state="session")
        seed = e.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=key(page, "seed"),
                              disabled=disabled, persist_state="session")
        objectives = color.COLOR_OBJECTIVES
        st.caption(f"{defaults.batch_size} pixels of each image per step; Sinkhorn blur "
                   f"√{objectives['sinkhorn'].epsilon:g}; the critic takes {objectives['wasserstein'].critic_steps} "
                   f"steps per map step.")
    return network, loss, {"steps": int(steps), "lr": float(lr), "seed": int(seed)}


def _start_color(page: str, source: np.ndarray, target: np.ndarray, network: str, loss: str,
                 settings: dict[str, Any]) -> None:
    config = replace(color.color_config(loss=loss, **settings), time_limit=TIME_LIMIT)
    model = seeded_map(network, settings["seed"], dim=3)
    check_work(config.steps, model)

    def store_outcome(state: PageState, job: TrainingJob) -> None:
        state.outcome = _color_outcome(source, target, network, loss, job.result, job.evaluation)
        job.result = state.outcome.result           # its notice gives the verdict in colour-transfer terms
        token = st.session_state.get("session.token")
        if token and job.result.map is not None:    # kept over a reload (a review reloaded and lost it)
            store().save_result(token, page, job.result.map, job.result, {
                "network": network, "loss": loss, "seed": settings["seed"],
                "images": {"source": color_image_record(source), "target": color_image_record(target)}})

    job = TrainingJob(model, color.image_pixels(source), color.image_pixels(target), config, cpu_threads=CPU_THREADS,
                      slots=slots(), pool=workers(),
                      finish=partial(color.compare_with_emd, source=source, target=target, seed=settings["seed"]))
    start_job(page, job, label=network, store=store_outcome,
              finishing="Training finished; recolouring and running POT's EMD transfer…")


def color_training_panel(page: str, source: np.ndarray | None, target: np.ndarray | None) -> None:
    """Map and training settings, the Train button (once both images are there) and the live panel."""
    workers()
    training = page_state(page).job is not None
    network, loss, settings = _color_settings(page, disabled=training)
    ready = source is not None and target is not None
    _restore_color_outcome(page)
    outcome: ColorOutcome | None = page_state(page).outcome
    current = outcome is None or not ready or all(
        shown is trained or (shown.shape == trained.shape and np.array_equal(shown, trained))
        for shown, trained in ((source, outcome.source), (target, outcome.target)))
    # its own words: the transport pages' (runs, a checks table, runs set aside) are not this page's (a review)
    _run_controls(page, (lambda: _start_color(page, source, target, network, loss, settings)) if ready else None,
                  current=current, changed="The result below is for the pictures it was trained on; training on "
                                           "these replaces it.")


def _color_outcome(source: np.ndarray, target: np.ndarray, network: str, loss: str, result: TrainResult,
                   comparison: color.ColorComparison) -> ColorOutcome:
    """A colour-transfer outcome, its result's verdict the comparison's (its advice in colour-transfer terms)."""
    if comparison.verdict is not None:
        result = replace(result, verdict=comparison.verdict)
    return ColorOutcome(source, target, network, loss, result, comparison)


def _restore_color_outcome(page: str) -> None:
    """After a reload, once: the result this session's token kept (``kept_result``), its recolouring and EMD
    comparison computed again from the kept map and pictures."""
    state = page_state(page)
    kept = kept_result(page) if state.outcome is None and state.job is None else None
    if kept is None:
        return
    state.kept_result = (state.kept_result[0], None)          # filed once
    model, result, extra = kept
    try:
        images = extra.get("images") or {}
        source, target = (color_image_from_record(images.get(side)) for side in ("source", "target"))
        network, loss, seed = str(extra["network"]), str(extra["loss"]), int(extra["seed"])
    except (KeyError, TypeError, ValueError) as err:
        st.warning(f"The result kept from before the reload could not be brought back: {err}")
        return
    with st.spinner("Bringing back the result from before the reload: recolouring and running POT's EMD transfer…"):
        comparison = color.compare_with_emd(model, result, source, target, seed=seed)
    state.outcome = _color_outcome(source, target, network, loss, result, comparison)
    state.notices = [("info", "The result of this session's last training here is back from before the reload.")]
    state.notices += outcome_notices(state.outcome.result)


def color_results_panel(page: str) -> None:
    """The source, the target, the learned recolouring and POT's EMD transfer, their colour distances,
    the download and the pixel clouds before and after."""
    outcome: ColorOutcome | None = page_state(page).outcome
    if outcome is None:
        return
    comparison = outcome.comparison
    st.divider()
    loss_name = COLOR_LOSSES[outcome.loss].split(" (")[0]
    st.subheader(f"Results: {outcome.network}, {loss_name}")
    shown = (("Source", outcome.source), ("Target", outcome.target),
             (f"Recoloured by {outcome.network}", comparison.recoloured),
             (f"POT EMD transfer ({comparison.emd.samples} pixels)", comparison.emd.image))
    for column, (caption, image) in zip(st.columns(4), shown):
        column.image(image, caption=caption, width="stretch")   # not 160 x 120 thumbnails
    height, width = comparison.recoloured.shape[:2]
    # its size said: an upload is shrunk to at most MAX_SIDE px, and a 4000 x 3000 photo came back 512 x 384 (a review)
    st.download_button(f"Download the recoloured image ({width} x {height} px, .png)",
                       color.to_png_bytes(comparison.recoloured),
                       file_name="recoloured.png", mime="image/png", key=key(page, "download"))
    show_table({
        "method": ["source as it is", f"{outcome.network} ({loss_name})", "POT EMD transfer",
                   "another sample of the target's pixels"],
        "time (s)": ["–", f"{comparison.learned_seconds:.2f}", f"{comparison.emd.seconds:.2f}", "–"],
        "colour distance to the target (W2)": [comparison.distances[k] for k in ("source", "learned", "EMD", "target")],
    }, {"colour distance to the target (W2)": st.column_config.NumberColumn(format="%.3f")})
    st.caption(f"Colour distance: W2 between {color.COLOR_SAMPLES} random pixels of each image and of the target, the "
               "root mean square change of colour (RGB in [0, 1]) that turns one set into the other, averaged over "
               f"{color.COLOR_REPLICATES} draws; two samples of the target's own pixels are that far apart by chance, "
               "about what an exact transfer would show (itself an estimate from samples: a good transfer can come "
               "out a little under it). EMD "
               "matches the colours of its subsample exactly but moves neighbouring pixels independently, so smooth "
               "regions can turn speckled; the monotone map keeps them smooth.")
    before, after = st.columns(2)
    before.plotly_chart(color.pixel_cloud_figure({"source": outcome.source, "target": outcome.target}),
                        key=key(page, "cloud_before"))
    after.plotly_chart(color.pixel_cloud_figure({"recoloured": comparison.recoloured, "target": outcome.target}),
                       key=key(page, "cloud_after"))
    before.caption("Before: source and target pixels in RGB space (up to 2000 of each).")
    after.caption("After: recoloured source pixels and target pixels.")
