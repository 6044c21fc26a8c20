"""Every page of the app under streamlit.testing.v1.AppTest: renders, trains, shows results, refuses
bad input with st.error."""

import base64
import io
import json
import math
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from helpers import after_prewarm  # noqa: E402

from gradnet_core import MGradNetM, presets  # noqa: E402
from studio.problems import METRIC_COLUMNS  # noqa: E402
from studio.state import DETAILS_LABEL  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 120


def _open(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    after_prewarm()
    if page is not None:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _state(at: AppTest, page: str):
    return at.session_state[f"{page}.state"]


def _wait(at: AppTest, page: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while _state(at, page).job is not None:
        assert time.monotonic() < deadline, "training did not finish in time"
        time.sleep(0.2)
        at.run()
        assert not at.exception, at.exception


def _train(at: AppTest, page: str, steps: int = 30, **settings) -> None:
    at.number_input(key=f"{page}.steps").set_value(steps)
    for key, value in settings.items():
        at.number_input(key=f"{page}.{key}").set_value(value)
    at.run()
    at.button(key=f"{page}.train").click().run()
    assert not at.exception, at.exception
    _wait(at, page)


def _charts(at: AppTest) -> list:
    return list(at.get("plotly_chart"))


def _animation(at: AppTest, page: str):
    charts = [c for c in _charts(at) if c.key == f"{page}.animation"]
    assert len(charts) == 1, "no animation"
    return charts[0]


def _said(at: AppTest) -> str:
    """Everything the page says of its last run: its boxes and the account in the expander under them."""
    details = [m.value for e in at.expander if e.label == DETAILS_LABEL for m in e.markdown]
    return " ".join([*(n.value for n in [*at.success, *at.warning, *at.info]), *details])


def _metrics(at: AppTest) -> pd.DataFrame:
    """The page's two metrics tables (against the ground truth; the verdict's checks) joined run by run."""
    truth = [df.value for df in at.dataframe if "MSE" in df.value.columns]
    checks = [df.value for df in at.dataframe if "verdict" in df.value.columns]
    assert len(truth) == 1 and len(checks) == 1, "no metrics tables"
    from studio.panels import MADE_COLUMN

    table = truth[0]
    assert table["map"].tolist() == checks[0]["map"].tolist()           # "#1 mGradNet-M": number and network
    # ... and beside it how the run was made: the whole label again, as the run has it
    table["map"] = [f"{name} ({made})" for name, made in zip(table["map"], table.pop(MADE_COLUMN))]
    return pd.concat([table, checks[0].drop(columns="map")], axis=1)


def _networks(table: pd.DataFrame) -> list[str]:
    """The network of each row of the metrics table ("#2 mGradNet-C (...)" -> "mGradNet-C")."""
    return [label.split(" (")[0].split(" ", 1)[1] for label in table["map"]]


def _assert_results(at: AppTest, rows: int = 1) -> pd.DataFrame:
    assert not at.error, [e.value for e in at.error]
    # Green only when the verdict holds; a short run gets a warning that says what is wrong.
    notices = [s.value for s in at.success] + [w.value for w in at.warning if "not the optimal map" in w.value
                                               or "not monotone" in w.value]
    assert len(notices) == 1 and "Trained" in _said(at), _said(at)
    assert len(_charts(at)) >= 2                                  # animation and loss curve
    table = _metrics(at)
    assert len(table) == rows
    assert {"MSE", "L2-UVP (%)", "cosine", "Monge–Ampère residual", "smallest Jacobian eigenvalue",
            "training time (s)"} <= set(table.columns)
    assert np.isfinite(table["MSE"].to_numpy()).all()
    # which of the checks decide is said under their table (a green map beside "uncovered 13 %" read as a contradiction)
    said = [c.value for c in at.caption if c.value.startswith("The W2 excess decides")]
    assert len(said) == 1
    # and only of the columns the table has (a digits table without them was told of the uncovered share and the KL)
    for column, words in (("uncovered", "uncovered share"), ("kl_estimate", "KL estimate")):
        assert (METRIC_COLUMNS[column] in table) == (words in said[0]), (column, said[0])
    kl = METRIC_COLUMNS["kl_estimate"]
    if kl in table:
        assert (table[kl].dropna() >= 0).all()                     # the estimate's noise below 0 is shown as 0
    # every column shown is explained in words on the page, and no column that is not shown
    from studio.panels import _SHOWN_AS
    explained = next(e for e in at.expander if e.label == "What the columns mean").markdown[0].value
    for column, (header, _) in _SHOWN_AS.items():
        assert (f"**{header}**:" in explained) == (column in table), (column, explained)
    labels = [b.label for b in at.get("download_button")]
    assert any(".safetensors" in label for label in labels) and any(".csv" in label for label in labels)
    assert any(".gif" in label for label in labels)
    return table


@pytest.mark.parametrize("page", sorted(p.stem for p in (APP.parent / "pages").glob("*.py")))
def test_every_page_renders_without_exception(page):
    at = _open(page)
    assert not at.exception
    assert len(at.title) == 1


def test_home_renders_with_device_and_versions():
    at = _open()
    assert not at.error
    text = " ".join(m.value for m in at.markdown)
    assert "Training runs on the" in text and ("CPU" in text or "GPU" in text)
    assert "Monge" in text and "Brenier" in text
    assert len(at.get("latex")) >= 4                             # OT, Brenier, mGradNets, Monge–Ampère
    versions = at.dataframe[0].value
    assert {"torch", "streamlit", "plotly"} <= set(versions["library"])


def test_gaussians_trains_and_changing_a_view_never_retrains():
    at = _open("gaussians")
    assert not at.error and len(at.slider) == 10
    _train(at, "gaussians")
    table = _assert_results(at)
    assert _networks(table) == ["mGradNet-M"]
    run = _state(at, "gaussians").runs[-1]
    before = len(_animation(at, "gaussians").proto.spec)
    at.toggle(key="gaussians.arrows").set_value(True).run()
    at.toggle(key="gaussians.paths").set_value(True).run()
    assert _state(at, "gaussians").job is None and _state(at, "gaussians").runs[-1] is run
    assert len(_animation(at, "gaussians").proto.spec) > before                # arrows and paths drawn, no new training


def test_gaussians_baseline_joins_the_comparison():
    at = _open("gaussians")
    _train(at, "gaussians", steps=20)
    at.selectbox(key="gaussians.network").set_value("MLP baseline").run()
    _train(at, "gaussians", steps=20)
    table = _assert_results(at, rows=2)
    assert _networks(table) == ["mGradNet-M", "MLP baseline"]
    assert table["verdict"].tolist()[1] == "flagged"              # the MLP is not monotone
    assert any("not monotone" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.success
    assert "#2 MLP baseline, not monotone" in _animation(at, "gaussians").proto.spec   # shown beside #1


def test_gaussians_preset_gets_a_green_verdict_and_a_short_run_a_warning():
    at = _open("gaussians")
    _train(at, "gaussians", steps=200)
    # the verdict in one bold line; what was trained and how the map was judged in the expander under it
    assert [s.value for s in at.success] == ["**The map is close to the optimal map.**"], [w.value for w in at.warning]
    assert [e.label for e in at.expander if e.label == DETAILS_LABEL] == [DETAILS_LABEL]
    assert "Trained 200 steps" in _said(at) and "optimal transport distance W2" in _said(at)
    assert _metrics(at)["verdict"].tolist() == ["ok"]
    # The KL estimate of a right map is about 0, on screen to 3 decimals: never "-0.000" (a review saw it)
    kl = _metrics(at)["KL(T#p ‖ q) estimate"].iloc[0]
    assert abs(kl) < 0.01 and kl == round(kl, 3) and not (kl == 0 and math.copysign(1.0, kl) < 0)
    _train(at, "gaussians", steps=3)
    assert not at.success
    assert [w.value for w in at.warning if w.value.startswith("**The map is not the optimal map: ")
            and w.value.endswith("It was trained for only 3 steps: train it longer.")], [w.value for w in at.warning]
    assert "Trained 3 steps" in _said(at)
    assert _metrics(at)["verdict"].tolist() == ["ok", "flagged"]          # both runs kept


def test_train_again_with_the_same_settings_and_seed_says_so_instead_of_adding_a_copy():
    # Training is deterministic: a review pressed Train twice and got two runs equal to the last digit.
    at = _open("gaussians")
    _train(at, "gaussians", steps=20)
    at.button(key="gaussians.train").click().run()
    assert _state(at, "gaussians").job is None and len(_state(at, "gaussians").runs) == 1
    assert any(i.value.startswith("#1 mGradNet-M was trained on these inputs with these settings and seed")
               for i in at.info), [i.value for i in at.info]
    assert not at.error
    _train(at, "gaussians", steps=20, seed=1)
    assert len(_state(at, "gaussians").runs) == 2 and not at.error
    # the seed in the label where it is not the default: two runs of one network told apart
    assert [run.label for run in _state(at, "gaussians").runs] == [
        "#1 mGradNet-M (Monge–Ampère loss (Adam), 20 steps)", "#2 mGradNet-M (Monge–Ampère loss (Adam), 20 steps, seed 1)"]


def test_gaussians_live_panel_locks_inputs_and_stop_keeps_the_model():
    at = _open("gaussians")
    at.number_input(key="gaussians.steps").set_value(20000).run()
    at.button(key="gaussians.train").click().run()
    assert _state(at, "gaussians").job is not None
    time.sleep(1.0)
    at.run()
    assert len(at.get("progress")) == 1 and "Step" in at.get("progress")[0].proto.text
    assert at.slider(key="gaussians.source.mean_x").disabled
    assert at.button(key="gaussians.train").disabled
    at.button(key="gaussians.stop").click().run()
    _wait(at, "gaussians")
    assert "Stopped by request" in _said(at) and "stopped before its last step" in at.warning[0].value
    run = _state(at, "gaussians").runs[-1]
    assert 0 < run.result.steps < 20000 and run.result.stopped == "stopped"
    assert len(_metrics(at)) == 1
    assert not at.slider(key="gaussians.source.mean_x").disabled


def test_every_position_of_the_gaussian_sliders_is_a_density():
    # The sliders once reached a correlation of +-1, a singular covariance the page could only refuse ("must be
    # symmetric positive definite"): now their ends are the flattest Gaussians they allow, which train.
    at = _open("gaussians")
    for side, (std_x, std_y, corr) in {"source": (3.0, 0.05, 0.95), "target": (0.05, 3.0, -0.95)}.items():
        for name, value in {"std_x": std_x, "std_y": std_y, "corr": corr}.items():
            slider = at.slider(key=f"gaussians.{side}.{name}")
            assert value in (slider.min, slider.max), (name, slider.min, slider.max)
            slider.set_value(value)
    at.run()
    assert not at.exception and not at.error
    assert not at.button(key="gaussians.train").disabled


def test_gaussians_divergence_is_reported_and_the_last_good_model_kept():
    at = _open("gaussians")
    _train(at, "gaussians", steps=30, lr=10.0)
    assert any("diverged" in e.value for e in at.error)
    assert not at.exception
    assert _state(at, "gaussians").runs[-1].result.stopped == "diverged"


def test_mixtures_train_against_the_barycentric_projection():
    at = _open("mixtures")
    assert not at.error
    at.slider(key="mixtures.samples").set_value(300).run()
    _train(at, "mixtures")
    _assert_results(at)
    assert "barycentric, n=300" in _animation(at, "mixtures").proto.spec
    assert "mixtures.density_morph" in [c.key for c in _charts(at)]          # the exact density, by default
    state = _state(at, "mixtures")
    assert state.cache[("run", state.runs[-1].number, "morph")].samples == 0
    # the barycentric ground truth says how far off it is itself (the closed form, on Gaussians, does not)
    noise = _state(at, "mixtures").reference.noise_l2_uvp
    assert any(c.value.startswith("This ground truth is itself an estimate from 300 samples: the exact map would "
                                  "score about MSE ") and f"(L2-UVP {noise:.1f} %)" in c.value for c in at.caption)


def test_mixtures_bad_rows_show_an_error_and_weights_are_normalised():
    at = _open("mixtures")
    state = _state(at, "mixtures")
    columns = ["weight", "mean_x", "mean_y", "std_x", "std_y", "corr"]
    negative = pd.DataFrame([[-0.5, 0, 0, 1, 1, 0], [1.5, 1, 1, 1, 1, 0]], columns=columns, dtype=float)
    state.tables["source"] = {"base": negative, "edited": negative, "version": 99}
    at.run()
    assert any("must not be negative" in e.value for e in at.error)
    assert at.button(key="mixtures.train").disabled
    unnormalised = pd.DataFrame([[2.0, -2, 0, 0.5, 0.5, 0], [2.0, 2, 0, 0.5, 0.5, 0]], columns=columns, dtype=float)
    state.tables["source"] = {"base": unnormalised, "edited": unnormalised, "version": 100}
    at.run()
    assert not at.error
    assert any("summed to 4" in i.value for i in at.info)
    blank = pd.DataFrame([[1.0, math.nan, 0, 0.5, 0.5, 0]], columns=columns, dtype=float)
    state.tables["source"] = {"base": blank, "edited": blank, "version": 101}
    at.run()
    # named as the table's header shows it, not by the code's column name
    assert any("Source row 1: mean x is empty or not a finite number." in e.value for e in at.error), at.error


def test_the_last_runs_notice_is_left_out_while_the_inputs_cannot_be_trained():
    at = _open("mixtures")
    _train(at, "mixtures", steps=50)
    notices = [*at.success, *at.warning]
    assert len(notices) == 1
    state = _state(at, "mixtures")
    columns = ["weight", "mean_x", "mean_y", "std_x", "std_y", "corr"]
    trained = state.tables["source"]["edited"]
    bad = pd.DataFrame([[-0.5, 0, 0, 1, 1, 0]], columns=columns, dtype=float)
    state.tables["source"] = {"base": bad, "edited": bad, "version": 99}
    at.run()
    assert at.button(key="mixtures.train").disabled and any("must not be negative" in e.value for e in at.error)
    assert not at.success and not at.warning          # the notice spoke of the inputs it trained on
    assert len(_metrics(at)) == 1                     # the run stays below, with its verdict in the checks table
    state.tables["source"] = {"base": trained, "edited": trained, "version": 100}
    at.run()
    assert [n.value for n in [*at.success, *at.warning]] == [notices[0].value]
    # Other inputs that can be trained (a review read a green verdict under a slider it had moved): the notice is
    # left out too, a caption says why, and it comes back with the inputs it spoke of.
    moved = trained.copy()
    moved.loc[0, "mean_x"] = float(moved.loc[0, "mean_x"]) + 1.0
    state.tables["source"] = {"base": moved, "edited": moved, "version": 101}
    at.run()
    assert not at.button(key="mixtures.train").disabled and not at.error
    assert not at.success and not at.warning
    assert any("inputs have changed since the last training" in c.value for c in at.caption)
    state.tables["source"] = {"base": trained, "edited": trained, "version": 102}
    at.run()
    assert [n.value for n in [*at.success, *at.warning]] == [notices[0].value]


def test_a_typed_mixture_whose_small_component_kl_leaves_empty_is_trained_again_and_right():
    """Issue 13, found in the browser: the 2 -> 3 preset with its middle component typed as weight 0.08
    (0.107 once rescaled) and mean y -4. KL leaves that component empty at every seed (L2-UVP about 22 %), and at
    the default seed the energy check alone once passed it. The verdict flags it, and the network trains again on
    the KL divergence with a Sinkhorn term from the weights it reached (the mixture preset's second phase; the
    Sinkhorn divergence until 2026-12-05: 0.9-1.75 % for seeds 0-3), whose map is right."""
    at = _open("mixtures")
    state = _state(at, "mixtures")
    columns = ["weight", "mean_x", "mean_y", "std_x", "std_y", "corr"]
    target = pd.DataFrame([[1 / 3, -3, 1, 0.5, 0.5, 0], [0.08, 0, -4, 0.5, 0.5, 0], [1 / 3, 3, 1, 0.5, 0.5, 0]],
                          columns=columns, dtype=float)
    state.tables["target"] = {"base": target, "edited": target, "version": 99}
    _train(at, "mixtures", steps=500)
    assert not at.warning and at.success, [w.value for w in at.warning]
    said = _said(at)
    assert "The first map was flagged (" in said, said            # with why, in a few words
    assert ("), so the network was trained again on the KL divergence with a Sinkhorn term, going on from the weights "
            "it reached; the map shown is the one trained on the KL divergence with a Sinkhorn term, which passes."
            ) in said, said
    table = _metrics(at)
    assert table["verdict"].tolist() == ["ok"]
    assert table["L2-UVP (%)"].iloc[0] < 5.0, table.iloc[0].to_dict()    # KL's map: about 22
    # every step trained, as the progress bar counts them: 500 on KL, then 900 on KL with a Sinkhorn term
    assert table["map"].iloc[0] == ("#1 mGradNet-M (KL divergence (Adam) → KL divergence with a Sinkhorn term, "
                                    "1,400 steps)")
    assert table["steps"].iloc[0] == 1400


def test_two_blobs_typed_and_turned_by_90_degrees_get_no_green_verdict_for_a_squeezed_map():
    """A review's typed mixture: blobs at (-10, 0), (10, 0) onto blobs at (0, -10), (0, 10). The Sinkhorn phase's map
    squeezed each target blob to a sliver (129 % L2-UVP in the page's table) and passed: its pushforward lands in
    the right blobs. The uncovered share now decides for maps trained on samples (docs/method.md §6.9)."""
    at = _open("mixtures")
    state = _state(at, "mixtures")
    columns = ["weight", "mean_x", "mean_y", "std_x", "std_y", "corr"]
    source = pd.DataFrame([[0.5, -10, 0, 0.5, 0.5, 0], [0.5, 10, 0, 0.5, 0.5, 0]], columns=columns, dtype=float)
    target = pd.DataFrame([[0.5, 0, -10, 0.5, 0.5, 0], [0.5, 0, 10, 0.5, 0.5, 0]], columns=columns, dtype=float)
    state.tables["source"] = {"base": source, "edited": source, "version": 99}
    state.tables["target"] = {"base": target, "edited": target, "version": 99}
    _train(at, "mixtures", steps=500, seed=0)
    table = _metrics(at)
    assert table["L2-UVP (%)"].iloc[0] > 20.0, table.iloc[0].to_dict()          # wrong, and
    assert not at.success and table["verdict"].tolist() == ["flagged"]             # said so
    assert any("of the target's mass uncovered" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_typed_split_is_right_at_the_default_steps_and_a_one_step_run_gets_a_warning():
    """`random 16` of the robustness benchmark (`--seed 2`), typed: a 1 -> 2 split whose KL map sends a few per cent
    of the mass to the wrong component. The fallback from the starting weights left it at 6.5-13 % (flagged at seed
    1); going on from the KL map on the Sinkhorn divergence, 1.9-2.1 % for seeds 0-2 (docs/method.md §4.13). A run of
    one step (smoothing not yet annealed: judged against the target itself, not the blur) is flagged, and the page
    says so in a warning, not a success."""
    at = _open("mixtures")
    state = _state(at, "mixtures")
    columns = ["weight", "mean_x", "mean_y", "std_x", "std_y", "corr"]
    source = pd.DataFrame([[1.0, -2.783, -2.238, 0.504, 0.859, -0.583]], columns=columns, dtype=float)
    target = pd.DataFrame([[0.381, 1.94, 0.3, 0.768, 0.732, -0.48], [0.619, -0.665, -2.471, 0.691, 0.487, -0.16]],
                          columns=columns, dtype=float)
    state.tables["source"] = {"base": source, "edited": source, "version": 99}
    state.tables["target"] = {"base": target, "edited": target, "version": 99}
    _train(at, "mixtures", steps=500, seed=1)
    assert not at.warning, [w.value for w in at.warning]
    table = _metrics(at)
    assert table["verdict"].tolist() == ["ok"]
    assert table["L2-UVP (%)"].iloc[0] < 5.0, table.iloc[0].to_dict()
    _train(at, "mixtures", steps=1, seed=1)
    assert at.warning and not at.success
    said = _said(at)
    assert ("trained again on the KL divergence with a Sinkhorn term, going on from the weights it reached; it was "
            "flagged too" in said), said
    assert "is not the optimal map" in said and "It was trained for only 1 step: train it longer." in said, said
    table = _metrics(at)
    assert table["verdict"].tolist() == ["ok", "flagged"]
    assert table["L2-UVP (%)"].iloc[1] > 5.0, table.iloc[1].to_dict()


def test_train_says_in_a_toast_that_training_started_and_where_its_progress_is():
    at = _open("gaussians")
    at.number_input(key="gaussians.steps").set_value(30).run()
    at.button(key="gaussians.train").click().run()
    assert [t.value for t in at.toast] == ["Training started: its progress bar and Stop button are under the Train "
                                           "button."]
    _wait(at, "gaussians")
    assert not at.toast                                      # once, not on every refresh


def test_digits_train_from_bundled_examples():
    at = _open("digits")
    assert not at.error
    assert len(at.get("image")) == 2                               # source and target digits
    at.slider(key="digits.samples").set_value(300).run()
    _train(at, "digits", steps=20)
    _assert_results(at)
    assert "digits.density_morph" in [c.key for c in _charts(at)]
    state = _state(at, "digits")
    assert state.cache[("run", state.runs[-1].number, "morph")].samples == 0      # a digit's strokes are resolved
    # The page trains the digits preset's own objective, with its tuned bandwidth end and Sinkhorn term
    # (a bare MongeAmpere() once replaced it: drawn digits then failed where the benchmark passed).
    trained = _state(at, "digits").runs[-1].settings["training"]["objective"]
    assert trained == presets.TRAIN_PRESETS["digits"].objective.to_dict()
    assert trained["global_weight"] > 0 and trained["bandwidth_end"] == 1e-3


def _canvas_value(rgba: np.ndarray, objects: int = 1) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {"drawing": {"raw": {"objects": [{"type": "path"}] * objects, "background": "#000000"}, "data": url},
            "backgroundFit": None}


def test_digits_blank_or_dot_drawing_shows_an_error():
    at = _open("digits")
    at.radio(key="digits.source.mode").set_value("Draw").run()
    assert not at.exception
    assert any("Draw a digit" in i.value for i in at.info)        # empty canvas: a prompt, no training
    assert at.button(key="digits.train").disabled
    dot = np.zeros((224, 224, 4), dtype=np.uint8)
    dot[..., 3] = 255
    dot[100:104, 100:104, :3] = 255
    at.session_state["digits.source.canvas"] = _canvas_value(dot)
    at.run()
    assert not at.exception
    assert any("too small" in e.value for e in at.error)
    assert at.button(key="digits.train").disabled
    assert len(at.get("image")) == 1                               # the target is still there


def test_digits_drawing_is_used_as_the_source():
    at = _open("digits")
    at.radio(key="digits.source.mode").set_value("Draw").run()
    ring = np.zeros((224, 224, 4), dtype=np.uint8)
    ring[..., 3] = 255
    yy, xx = np.mgrid[:224, :224]
    r = np.hypot(yy - 112, xx - 112)
    ring[(r > 50) & (r < 70), :3] = 255
    at.session_state["digits.source.canvas"] = _canvas_value(ring)
    at.run()
    assert not at.error and not at.exception
    assert len(at.get("image")) == 2
    assert not at.button(key="digits.train").disabled


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, followed by a few bytes of pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)              # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _stroke(transpose: bool = False) -> np.ndarray:
    """A 64 x 64 uint8 image of a '1': a bright bar 44 px tall and 8 px wide on black."""
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[10:54, 28:36] = 255
    return pixels.T.copy() if transpose else pixels


def _upload(at: AppTest, name: str, content: bytes) -> None:
    at.file_uploader(key="digits.source.upload").set_value((name, content, "image/png")).run()
    assert not at.exception, f"{name}: {at.exception}"


def _captions(at: AppTest) -> list[str]:
    return [image.proto.imgs[0].caption for image in at.get("image")]


def _is_upright_bar(image: np.ndarray) -> bool:
    """The '1' of _stroke() after MNIST framing: 20 px tall (the digit box), a few px wide."""
    rows, cols = np.nonzero(image > 0.5)
    return np.ptp(rows) + 1 == 20 and np.ptp(cols) + 1 <= 5


BAD_UPLOADS = {  # file name -> (content, the sentence the page must show)
    "notes.png": (b"shopping list: milk, eggs", "This file is not an image this app can read; upload a PNG, JPEG, "
                                                "GIF, BMP or WebP file."),
    # Another extension, as a forged request sends it: Streamlit's own type filter raised an exception box.
    "icon.ico": (b"\x00\x00\x01\x00\x01\x00\x10\x10" + bytes(60), "This file is not an image this app can read"),
    "empty.png": (b"", "The file is empty."),
    "cut.png": (_png(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))[:300],
                "The image file is damaged or incomplete"),
    "bomb.png": (_declared_png(100_000, 100_000), "The image is too large: it declares more than 40 megapixels "
                                                  "(a decompression bomb"),
    "huge.png": (_declared_png(9000, 9000), "The image is 9000 x 9000 pixels (81 megapixels); the limit is "
                                            "40 megapixels."),
    "black.png": (_png(np.zeros((64, 64), dtype=np.uint8)), "The image is blank: no part of it stands out"),
    "white.png": (_png(np.full((64, 64), 255, dtype=np.uint8)), "The image is blank: no part of it stands out"),
    "dot.png": (_png(np.zeros((1, 1), dtype=np.uint8)), "The image is only 1 x 1 pixels; it must be at least "
                                                        "8 x 8"),
    "clear.png": (_png(np.zeros((64, 64, 4), dtype=np.uint8)), "The image is blank: it is fully transparent"),
}


def test_digits_bad_uploads_show_an_error_and_keep_the_rest_of_the_page():
    at = _open("digits")
    at.selectbox(key="digits.target.digit").set_value(7)
    at.selectbox(key="digits.target.index").set_value(1)
    at.number_input(key="digits.steps").set_value(123)
    at.radio(key="digits.source.mode").set_value("Upload").run()
    _upload(at, "one.png", _png(_stroke()))
    assert not at.error and _captions(at) == ["Uploaded: one.png", "MNIST example: digit 7, #2"]
    for name, (content, message) in BAD_UPLOADS.items():
        _upload(at, name, content)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith(message), f"{name}: the page showed {errors}"
        assert "Traceback" not in errors[0] and "Error" not in errors[0], f"{name}: {errors[0]}"
        assert _captions(at) == ["MNIST example: digit 7, #2"], f"{name}: {_captions(at)}"   # target kept
        assert at.button(key="digits.train").disabled, name
        assert at.number_input(key="digits.steps").value == 123, name
        assert at.selectbox(key="digits.target.digit").value == 7, name
        assert _state(at, "digits").uploads["source"][0] == "one.png", name     # the last good upload is kept
    # Back to the good upload: leaving Upload and returning brings it back, ready to train.
    at.radio(key="digits.source.mode").set_value("Example").run()
    at.radio(key="digits.source.mode").set_value("Upload").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert _captions(at) == ["Uploaded earlier: one.png", "MNIST example: digit 7, #2"]
    assert not at.button(key="digits.train").disabled


def _animated_gif() -> bytes:
    buffer = io.BytesIO()
    first, second = Image.fromarray(_stroke()), Image.fromarray(_stroke(transpose=True))
    first.save(buffer, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return buffer.getvalue()


def _black_ink_on_transparent() -> bytes:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = _stroke()                                     # opaque black bar, the rest see-through
    return _png(rgba)


def _sixteen_bit() -> np.ndarray:
    """The '1' as 16-bit gray: bar 60000 on 8000. PIL's own conversion to 8 bits clips both to white."""
    return np.where(_stroke() > 0, 60000, 8000).astype(np.uint16)


ODD_UPLOADS = {  # file name -> content; each is a '1' that must come out as an upright bar
    "sixteen-bit.png": _png(_sixteen_bit()),
    "ink-on-transparent.png": _black_ink_on_transparent(),
    "animated.gif": _animated_gif(),                               # first frame upright, second lying down
}


def test_digits_odd_but_valid_uploads_become_digits():
    at = _open("digits")
    at.radio(key="digits.source.mode").set_value("Upload").run()
    for name, content in ODD_UPLOADS.items():
        _upload(at, name, content)
        assert not at.error, f"{name}: {[e.value for e in at.error]}"
        assert _captions(at)[0] == f"Uploaded: {name}"
        assert "digits.source.heatmap" in [c.key for c in _charts(at)], f"{name}: no density shown"
        assert not at.button(key="digits.train").disabled, name
        image = _state(at, "digits").uploads["source"][1]
        assert image.shape == (28, 28) and image.max() == 1.0, name
        assert _is_upright_bar(image), f"{name}: the digit came out as {np.ptp(np.argwhere(image > 0.5), axis=0) + 1}"


def test_color_transfer_bad_uploads_show_an_error_and_keep_the_target():
    at = _open("color_transfer")
    at.selectbox(key="color.target.bundled").set_value("daytime")
    at.number_input(key="color.steps").set_value(77)
    at.radio(key="color.source.mode").set_value("Upload").run()
    messages = {"notes.png": "This file is not an image this app can read",
                "cut.png": "The image file is damaged or incomplete",
                "bomb.png": "The image declares an enormous size (a decompression bomb?)",
                "dot.png": "The image is only 1 x 1 pixels; it needs at least 8 x 8."}
    for name, message in messages.items():
        at.file_uploader(key="color.source.upload").set_value((name, BAD_UPLOADS[name][0], "image/png")).run()
        assert not at.exception, f"{name}: {at.exception}"
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith(message), f"{name}: the page showed {errors}"
        assert at.button(key="color.train").disabled, name
        assert at.selectbox(key="color.target.bundled").value == "daytime", name
        assert at.number_input(key="color.steps").value == 77, name
        assert len(at.get("image")) == 1, name                        # the target is still shown
    # A picture of one flat colour is an image but no colour distribution (the verdict's tolerance was 3.6e-8).
    flat = _png(np.full((32, 32, 3), 200, np.uint8))
    at.file_uploader(key="color.source.upload").set_value(("flat.png", flat, "image/png")).run()
    assert [e.value for e in at.error] == ["The picture is one flat colour: there is no distribution of colours to "
                                           "transfer. Use a picture with several colours."]
    assert at.button(key="color.train").disabled and at.number_input(key="color.steps").value == 77
    at.file_uploader(key="color.source.upload").set_value(("sixteen-bit.png", ODD_UPLOADS["sixteen-bit.png"],
                                                           "image/png")).run()
    assert not at.error and not at.exception
    assert _captions(at)[0] == "64 x 64 px" and not at.button(key="color.train").disabled


def test_a_color_source_too_small_to_judge_gets_no_green_verdict():
    # A 3 x 3 photo's recolouring was called "close to the optimal map" at 4 pixels a sample (a review); it is refused
    # now, and a 12 x 12 one (144 pixels) is trained and said to be too small to judge.
    at = _open("color_transfer")
    at.radio(key="color.source.mode").set_value("Upload").run()
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    at.file_uploader(key="color.source.upload").set_value(("small.png", _png(pixels), "image/png")).run()
    assert not at.error and not at.exception
    at.number_input(key="color.steps").set_value(20).run()
    at.button(key="color.train").click().run()
    deadline = time.monotonic() + TIMEOUT
    while at.session_state["color.state"].job is not None:
        assert time.monotonic() < deadline, "training did not finish in time"
        time.sleep(0.2)
        at.run()
    assert not at.exception and not at.success
    assert any(w.value.startswith("**The map cannot be judged: too few points.**") for w in at.warning) and \
        "Too few points to judge the map: the source has 144" in _said(at), \
        [w.value for w in at.warning]


def test_the_color_transfer_notice_is_left_out_while_another_image_is_on_screen():
    at = _open("color_transfer")
    _train(at, "color", steps=20)
    notices = [n.value for n in [*at.success, *at.warning]]
    assert len(notices) == 1, notices
    trained = at.selectbox(key="color.target.bundled").value
    other = next(name for name in at.selectbox(key="color.target.bundled").options if name != trained)
    at.selectbox(key="color.target.bundled").set_value(other).run()
    assert not at.success and not at.warning and not at.button(key="color.train").disabled
    # in this page's words: one result, replaced by the next training (not the transport pages' runs set aside)
    said = [c.value for c in at.caption if "inputs have changed since the last training" in c.value]
    assert len(said) == 1 and "training on these replaces it" in said[0] and "set aside" not in said[0], said
    at.selectbox(key="color.target.bundled").set_value(trained).run()
    assert [n.value for n in [*at.success, *at.warning]] == notices


def test_the_color_transfer_result_and_an_uploaded_picture_survive_a_reload():
    # A review reloaded the Colour transfer page and found its result and its uploaded picture gone.
    at = _open("color_transfer")
    token = at.session_state["session.token"]
    # a photo as large as the page keeps (512 px a side): as float64 in the kept file it was over what a map file's
    # header may hold, and nothing came back (a code review)
    pixels = np.random.default_rng(3).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    at.radio(key="color.target.mode").set_value("Upload").run()
    at.file_uploader(key="color.target.upload").set_value(("mine.png", _png(pixels), "image/png")).run()
    _train(at, "color", steps=20)
    before = _state(at, "color").outcome
    said = [n.value for n in [*at.success, *at.warning]]
    assert before is not None and len(said) == 1
    for _ in range(2):                                   # and the picture stays over the next rerun
        again = AppTest.from_file(str(APP), default_timeout=60)
        again.query_params["session"] = token
        again.run().switch_page("pages/color_transfer.py").run()
        assert not again.exception and not again.error
        after = _state(again, "color").outcome
        assert after is not None and (after.network, after.loss) == (before.network, before.loss)
        np.testing.assert_array_equal(after.target, before.target)
        np.testing.assert_allclose(after.comparison.recoloured, before.comparison.recoloured, atol=1e-6)
        assert after.comparison.distances == pytest.approx(before.comparison.distances)
        assert [n.value for n in [*again.success, *again.warning]] == said
        assert any("back from before the reload" in i.value for i in again.info)
        assert again.radio(key="color.source.mode").value == "Bundled"
        assert again.radio(key="color.target.mode").value == "Upload"
        again.run()
        assert not any("inputs have changed" in c.value for c in again.caption)
        assert not again.button(key="color.train").disabled


def test_results_survive_a_trip_to_another_page():
    at = _open("gaussians")
    at.slider(key="gaussians.target.mean_x").set_value(1.0).run()
    _train(at, "gaussians", steps=10)
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/gaussians.py").run()
    assert not at.exception
    assert len(_metrics(at)) == 1
    assert at.slider(key="gaussians.target.mean_x").value == 1.0



def _press_train_on_the_flow(outer: int, inner: int) -> AppTest:
    """The Gaussians page with the implicit constrained flow picked, ``outer`` x ``inner`` steps, Train pressed."""
    at = _open("gaussians")
    label = "Constrained gradient flow, implicit"
    at.selectbox(key="gaussians.objective").set_value(label).run()
    at.number_input(key=f"gaussians.{label}.flow_outer_steps").set_value(outer)
    at.number_input(key=f"gaussians.{label}.flow_inner_steps").set_value(inner)
    at.run()
    at.button(key="gaussians.train").click().run()
    return at


def test_gaussians_constrained_flow_is_selectable_and_trains():
    """Issue 8: the scheme is picked on the page and its outer steps drive the run."""
    at = _press_train_on_the_flow(outer=2, inner=5)
    assert not at.exception, at.exception
    _wait(at, "gaussians")
    assert not at.error, [e.value for e in at.error]
    run = _state(at, "gaussians").runs[-1]
    assert run.result.steps == 10
    assert "outer_step" in run.result.history and max(run.result.history["outer_step"]) == 2


def test_mixtures_offer_only_objectives_that_work_on_mixtures_and_say_why_not_the_others():
    """Issue 13: an objective whose maps the robustness benchmark shows wrong on mixtures is not offered;
    the page says why. The default is the preset's objective (KL)."""
    at = _open("mixtures")
    box = at.selectbox(key="mixtures.objective")
    assert list(box.options) == list(presets.MIXTURE_OBJECTIVES)
    assert box.value == "KL divergence (Adam)"
    preset_objective = presets.TRAIN_PRESETS["mixture"].objective
    assert isinstance(presets.OBJECTIVE_CHOICES[box.value]["objective"], type(preset_objective))
    assert not any("W1" in o or "Gaussian-moment" in o or "flow" in o for o in box.options)
    note = " ".join(c.value for c in at.caption if "Not offered here" in c.value)
    for name in ("Gaussian-moment KL", "Adversarial W1", "Constrained gradient flow"):
        assert name in note, note
    assert "log-concave" in note


def test_mixtures_sample_only_loss_trains():
    """Issue 7: a sample-only loss is selectable on the mixtures page."""
    at = _open("mixtures")
    at.selectbox(key="mixtures.objective").set_value("Sinkhorn divergence (target samples only)").run()
    _train(at, "mixtures", steps=10)
    assert not at.error, [e.value for e in at.error]
    assert _state(at, "mixtures").runs[-1].result.stopped == "completed"


def test_density_views_show_the_exact_pictures_of_the_monotone_map_and_explain_the_mlp():
    at = _open("gaussians")
    at.selectbox(key="gaussians.network").set_value("MLP baseline").run()
    _train(at, "gaussians", steps=20)
    assert any("not monotone, so there is no inverse" in i.value for i in at.info)
    assert "gaussians.density_morph" not in [c.key for c in _charts(at)]
    at.selectbox(key="gaussians.network").set_value("mGradNet-M").run()
    _train(at, "gaussians", steps=200)
    state = _state(at, "gaussians")
    charts = {"Density morph": "gaussians.density_morph", "Pushforward vs target": "gaussians.density_comparison",
              "Where the map is wrong": "gaussians.residual", "Morph back": "gaussians.morph_back"}
    for view, chart in charts.items():
        at.radio(key="gaussians.density_view").set_value(view).run()
        assert not at.exception and not at.error
        assert chart in [c.key for c in _charts(at)], view
    morph = state.cache[("run", state.runs[-1].number, "morph")]
    assert morph.densities.shape == (30, 100, 100)
    assert morph.samples == 0 and not any("narrower than a pixel" in c.value for c in at.caption)   # exact values
    assert any("These pictures are for #2 mGradNet-M" in c.value for c in at.caption)
    # The pushforward of a trained Gaussian map is close to the target: the page says by how much.
    at.radio(key="gaussians.density_view").set_value("Pushforward vs target").run()
    tv = [m.value for m in at.markdown if m.value.startswith("Total variation")]
    assert len(tv) == 1 and float(tv[0].split("**")[1]) < 0.1
    # Views are cached per map: switching back recomputes nothing.
    at.radio(key="gaussians.density_view").set_value("Density morph").run()
    assert state.cache[("run", state.runs[-1].number, "morph")] is morph
    assert any(b.label == "Density morph of #2 mGradNet-M (.gif)" for b in at.get("download_button"))


def test_a_gaussian_line_narrower_than_a_pixel_is_drawn_whole_and_the_page_says_how():
    """A review set the sliders' ends (std 3 and 0.05, correlation 0.95): the line is 0.016 wide on pixels of 0.18,
    and the exact values at the pixel centres drew it as a few dashes at t = 0. Those frames are histograms of
    carried points now, holding the whole mass, and the captions say so."""
    at = _open("gaussians")
    for side, mean_x, std_x, std_y, corr in (("source", -3.0, 3.0, 0.05, 0.95), ("target", 3.0, 0.05, 3.0, -0.95)):
        for name, value in (("mean_x", mean_x), ("std_x", std_x), ("std_y", std_y), ("corr", corr)):
            at.slider(key=f"gaussians.{side}.{name}").set_value(value)
    at.run()
    _train(at, "gaussians", steps=50)
    at.radio(key="gaussians.density_view").set_value("Density morph").run()
    assert not at.exception and not at.error
    state = _state(at, "gaussians")
    morph = state.cache[("run", state.runs[-1].number, "morph")]
    assert morph.samples > 0 and abs(morph.masses[0] - 1) < 0.02
    assert any("narrower than a pixel" in c.value and "200,000 source points" in c.value for c in at.caption)
    at.radio(key="gaussians.density_view").set_value("Pushforward vs target").run()
    assert any("drawn as histograms of sampled points" in m.value for m in at.markdown)


def test_runs_accumulate_compare_any_two_and_can_be_removed():
    at = _open("gaussians")
    for network in ("mGradNet-M", "mGradNet-C", "MLP baseline"):
        at.selectbox(key="gaussians.network").set_value(network).run()
        _train(at, "gaussians", steps=30)
    state = _state(at, "gaussians")
    assert [run.number for run in state.runs] == [1, 2, 3] and state.shown == [3, 2]     # newest first
    table = _metrics(at)
    assert _networks(table) == ["mGradNet-M", "mGradNet-C", "MLP baseline"]
    losses = [c for c in _charts(at) if c.key == "gaussians.losses"]
    assert len(losses) == 1 and losses[0].proto.spec.count('"name":"#') == 3              # one chart, three curves
    # Any two side by side, the ground truth between them.
    shown = [w for w in at.multiselect if w.key.startswith("gaussians.shown")][0]
    shown.set_value([1, 3]).run()
    spec = _animation(at, "gaussians").proto.spec
    assert spec.index("#1 mGradNet-M") < spec.index("Ground truth") < spec.index("#3 MLP baseline")
    assert "#2 mGradNet-C" not in spec
    # The maps to download are the shown runs', and the page says how to get the others'.
    downloads = [b.proto.label for b in at.get("download_button") if b.proto.label.startswith("Map ")]
    assert downloads == ["Map #1 mGradNet-M (.safetensors)", "Map #3 MLP baseline (.safetensors)"]
    assert any("another run's map (1 more), show it above" in c.value for c in at.caption)
    csv = pd.read_csv(io.StringIO(metrics_csv(at)))
    assert len(csv) == 3 and {"settings", "trained on"} <= set(csv.columns)
    assert json.loads(csv["trained on"][0])["ground_truth"] == "gaussian"
    assert json.loads(csv["settings"][1])["network"] == "mGradNet-C"
    # Remove #2: the table and the curves lose it, what is shown stays.
    remove = [w for w in at.selectbox if w.key.startswith("gaussians.remove")][0]
    remove.set_value(2).run()
    at.button(key="gaussians.remove_button").click().run()
    assert not at.exception
    assert [run.number for run in state.runs] == [1, 3] and state.shown == [1, 3]
    assert _networks(_metrics(at)) == ["mGradNet-M", "MLP baseline"]


def metrics_csv(at: AppTest) -> str:
    """The CSV the metrics download would give, rebuilt from the page state."""
    from studio.problems import metrics_table

    return metrics_table(_state(at, "gaussians").runs, details=True).to_csv(index=False)


def test_a_saved_map_comes_back_as_a_run_and_bad_files_are_refused():
    from gradnet_core.files import map_to_bytes

    at = _open("gaussians")
    _train(at, "gaussians", steps=200)
    state = _state(at, "gaussians")
    trained = state.runs[-1]
    data = map_to_bytes(trained.model, {**trained.settings, "network": trained.network})
    uploader = [w for w in at.get("file_uploader") if w.key.startswith("gaussians.map_upload")]
    assert len(uploader) == 1
    at.file_uploader(key=uploader[0].key).set_value(("mine.safetensors", data, "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    loaded = state.runs[-1]
    assert loaded.number == 2 and loaded.origin == "mine.safetensors" and loaded.result is None
    np.testing.assert_allclose(loaded.mapped, trained.mapped)                       # the same map, measured again
    assert loaded.metrics["mse"] == pytest.approx(trained.metrics["mse"])
    assert any(b.value == "**The map is close to the optimal map.** Loaded mine.safetensors as run #2."
               for b in at.success), [b.value for b in [*at.success, *at.info, *at.warning]]
    assert _metrics(at)["map"].tolist()[1] == "#2 mGradNet-M (from mine.safetensors)"
    # A file has no training time: its cell is a dash, not the grid's "None" (a review saw "None" there).
    truth = next(element for element in at.dataframe if "MSE" in element.value.columns)
    assert math.isnan(truth.value["training time (s)"].iloc[1]) and truth.proto.placeholder == "\u2014"
    # Judged as its training judged it: a run and its own file loaded back get the same verdict and numbers (a review
    # saw "ok" beside "None").
    for name in ("verdict", "error_bound", "distance_ratio"):
        assert loaded.metrics[name] == trained.metrics[name], name
    # Bad files: a message, nothing lost.
    nan_model = trained.model.__class__(**trained.model.config())
    with torch.no_grad():
        next(nan_model.parameters()).fill_(float("nan"))
    bad = {"notes.safetensors": (b"not a map at all", "not a GradNetOT Studio map file"),
           "notes.txt": (b"not a map either", "not a GradNetOT Studio map file"),
           "nan.safetensors": (map_to_bytes(nan_model), "NaN or infinite"),
           "three.safetensors": (map_to_bytes(MGradNetM(3)), "3-dimensional")}
    for name, (content, message) in bad.items():
        key_now = [w for w in at.get("file_uploader") if w.key.startswith("gaussians.map_upload")][0].key
        at.file_uploader(key=key_now).set_value((name, content, "application/octet-stream")).run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith(name) and message in errors[0], errors
        assert [run.number for run in state.runs] == [1, 2]
    # The same map loaded on other inputs is not their optimal map, and the page says so (a review's 498 % off
    # map of another problem came with an info note only).
    at.slider(key="gaussians.target.mean_x").set_value(2.5).run()
    key_now = [w for w in at.get("file_uploader") if w.key.startswith("gaussians.map_upload")][0].key
    at.file_uploader(key=key_now).set_value(("mine.safetensors", data, "application/octet-stream")).run()
    assert not at.exception and state.runs[-1].metrics["verdict"] == "flagged"
    assert any(w.value.startswith("**The map is not the optimal map for these inputs**") and "another problem" in w.value
               for w in at.warning), [w.value for w in at.warning]


@pytest.mark.parametrize("page", ["gaussians", "mixtures", "digits"])
def test_every_gallery_demo_opens_at_once_as_a_run_on_its_own_problem(page):
    from studio.gallery import demos

    found = demos(page)
    assert len(found) >= (4 if page == "digits" else 1)
    at = _open(page)
    for number, demo in enumerate(found, start=1):
        at.selectbox(key=f"{page}.demo").set_value(demo.title).run()
        at.button(key=f"{page}.open_demo").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        state = _state(at, page)
        run = state.runs[-1]
        assert run.number == number and run.result is None and run.origin.startswith("demo")
        assert state.job is None                                                 # nothing trained
        assert run.signature == state.reference.signature
        # The inputs now describe the demo's problem: the map was trained on exactly what the page shows.
        assert json.loads(json.dumps(run.settings["problem"])) == json.loads(json.dumps(
            _problem_now(at, page).describe()))
        assert run.metrics["l2_uvp"] < 10.0                                      # a good map, not a stub
        # in the verdict's green box, as after a training (a review found the verdict only in the checks table)
        assert any(b.value.startswith(f"**The map is close to the optimal map.** Demo opened as run #{number}")
                   for b in at.success), [b.value for b in at.success]
        assert f"{page}.density_morph" in [c.key for c in _charts(at)]
    if page == "digits":
        assert at.selectbox(key="digits.source.set").value == "mnist"


def _problem_now(at: AppTest, page: str):
    """The problem the page's inputs give now, rebuilt the way the page builds it."""
    from gradnet_core import ImageDensity
    from gradnet_core.images import load_bundled
    from studio.inputs import GAUSSIAN_SAMPLES
    from studio.problems import Problem, gaussian_from_row, mixture_from_table

    state = _state(at, page)
    if page == "gaussians":
        rows = {side: {name: at.slider(key=f"{page}.{side}.{name}").value
                       for name in ("mean_x", "mean_y", "std_x", "std_y", "corr")} for side in ("source", "target")}
        return Problem(page, gaussian_from_row(rows["source"]), gaussian_from_row(rows["target"]), truth="gaussian",
                       samples=GAUSSIAN_SAMPLES)
    samples = at.slider(key=f"{page}.samples").value
    if page == "mixtures":
        dens = [mixture_from_table(state.tables[side]["edited"].to_dict("records"), side)[0]
                for side in ("source", "target")]
        return Problem(page, *dens, truth="barycentric", samples=samples)
    bandwidth = presets.TRAIN_PRESETS["digits"].objective.bandwidth_end
    dens = [ImageDensity(load_bundled(at.selectbox(key=f"digits.{side}.digit").value,
                                      at.selectbox(key=f"digits.{side}.index").value, "mnist"), bandwidth=bandwidth)
            for side in ("source", "target")]
    return Problem(page, *dens, truth="barycentric", samples=samples)


def test_projector_view_enlarges_charts_without_changing_the_cached_figures():
    at = _open("gaussians")
    at.button(key="gaussians.open_demo").click().run()
    normal = json.loads(_animation(at, "gaussians").proto.spec)
    at.toggle(key="view.projector").set_value(True).run()
    assert not at.exception
    large = json.loads(_animation(at, "gaussians").proto.spec)
    assert (normal["layout"]["font"]["size"], large["layout"]["font"]["size"]) == (13, 20)
    assert [t["marker"]["size"] for t in large["data"]] == [7.2, 7.2]           # 1.8 x the usual 4
    assert large["layout"]["sliders"][0]["font"]["size"] == 16
    # the "t = ..." value and the panels' titles too (they stayed at 14 and 16 px beside 20 px text)
    assert (normal["layout"]["sliders"][0]["currentvalue"]["font"]["size"],
            large["layout"]["sliders"][0]["currentvalue"]["font"]["size"]) == (14, 20)
    assert {a["font"]["size"] for a in normal["layout"]["annotations"]} == {16}
    assert {a["font"]["size"] for a in large["layout"]["annotations"]} == {22}
    cached = next(v for k, v in _state(at, "gaussians").cache.items() if k[0] == "animation")
    assert cached.layout.font.size == 13                                   # the run's figure is as it was
    assert any("font-size: 20px" in h.proto.body for h in at.get("html"))


def test_the_projector_view_survives_a_reload():
    # A reload in front of a class dropped the large layout (a review): it is kept in the URL beside the token.
    at = _open("gaussians")
    at.toggle(key="view.projector").set_value(True).run()
    assert at.query_params["projector"] == "1"
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = at.session_state["session.token"]
    again.query_params["projector"] = "1"
    again.run()
    assert not again.exception and again.toggle(key="view.projector").value is True
    again.toggle(key="view.projector").set_value(False).run()
    assert "projector" not in again.query_params


def test_runs_survive_a_reload_and_no_other_session_sees_them():
    at = _open("gaussians")
    token = at.session_state["session.token"]
    assert at.query_params["session"] == token and len(token) >= 22          # in the URL, 128 random bits
    at.selectbox(key="gaussians.network").set_value("mGradNet-C")
    _train(at, "gaussians", steps=40, seed=7)
    at.button(key="gaussians.open_demo").click().run()
    before = _state(at, "gaussians").runs
    # F5: a new session whose URL carries the token.
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/gaussians.py").run()
    assert not again.exception
    after = _state(again, "gaussians").runs
    assert [r.label for r in after] == [r.label for r in before]
    assert after[0].result.history["loss"] == pytest.approx(before[0].result.history["loss"], nan_ok=True)
    np.testing.assert_allclose(after[1].mapped, before[1].mapped)
    assert _metrics(again)["MSE"].tolist() == pytest.approx(_metrics(at)["MSE"].tolist())
    assert any("2 runs of this session brought back from before the reload, with the settings of the last one "
               "trained." in i.value for i in again.info)
    # ... and the settings it was trained with are in their boxes again, not the preset's (a review)
    assert again.selectbox(key="gaussians.network").value == "mGradNet-C"
    assert (again.number_input(key="gaussians.steps").value, again.number_input(key="gaussians.seed").value) == (40, 7)
    # Another browser (no token, or a made-up one) sees nothing of it.
    for other in (None, "A" * 22):
        stranger = AppTest.from_file(str(APP), default_timeout=60)
        if other:
            stranger.query_params["session"] = other
        stranger.run().switch_page("pages/gaussians.py").run()
        assert stranger.session_state["session.token"] != token
        assert _state(stranger, "gaussians").runs == []


def test_a_reload_brings_back_the_typed_mixture_tables_of_the_runs():
    # The run came back after F5, the typed tables at the first preset, and the page then said the inputs had
    # changed (a review).
    at = _open("mixtures")
    token = at.session_state["session.token"]
    state = _state(at, "mixtures")
    columns = ["weight", "mean_x", "mean_y", "std_x", "std_y", "corr"]
    source = pd.DataFrame([[0.3, -1.5, 0.5, 0.4, 0.7, 0.25], [0.7, 2.0, -1.0, 0.6, 0.5, -0.5]], columns=columns)
    target = pd.DataFrame([[1.0, 0.5, 2.0, 1.2, 0.8, 0.1]], columns=columns)
    state.tables["source"] = {"base": source, "edited": source, "version": 99}
    state.tables["target"] = {"base": target, "edited": target, "version": 99}
    at.slider(key="mixtures.samples").set_value(300)
    _train(at, "mixtures", steps=30)
    trained_on = state.runs[0].signature
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/mixtures.py").run()
    assert not again.exception
    back = _state(again, "mixtures")
    assert again.selectbox(key="mixtures.preset").value == "Custom" and again.slider(key="mixtures.samples").value == 300
    for side, typed in (("source", source), ("target", target)):
        np.testing.assert_allclose(back.tables[side]["edited"].astype(float).to_numpy(), typed.to_numpy(), rtol=1e-5)
    assert back.runs[0].signature == trained_on == back.reference.signature
    assert not any("inputs have changed" in c.value for c in again.caption)


def test_a_reload_brings_back_the_gaussian_sliders_of_the_runs():
    at = _open("gaussians")
    token = at.session_state["session.token"]
    at.slider(key="gaussians.source.mean_x").set_value(1.5)
    at.slider(key="gaussians.target.corr").set_value(-0.4)
    _train(at, "gaussians", steps=30)
    assert at.selectbox(key="gaussians.preset").value == "Custom"
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/gaussians.py").run()
    assert not again.exception
    assert again.selectbox(key="gaussians.preset").value == "Custom"
    for side in ("source", "target"):
        for name in ("mean_x", "mean_y", "std_x", "std_y", "corr"):
            assert again.slider(key=f"gaussians.{side}.{name}").value == pytest.approx(
                at.slider(key=f"gaussians.{side}.{name}").value), (side, name)
    assert not any("inputs have changed" in c.value for c in again.caption)


def test_a_reload_brings_back_a_drawing_as_its_strokes(monkeypatch):
    # A drawing came back after F5 as an uploaded picture: a teacher could not go on drawing it (a review). The strokes
    # are kept with the runs and redrawn on the canvas, whose picture is the one the runs were trained on until the
    # next stroke. (The canvas component does not run here: a stand-in returns what the browser's does.)
    import sys
    from types import SimpleNamespace
    from gradnet_core.experiments.robustness import draw_canvas

    strokes = {"version": "4.4.0",
               "objects": [{"type": "path", "path": [["M", 50, 50], ["L", 170, 50], ["L", 100, 190]]}]}
    canvas = {"image": draw_canvas("7", 3), "calls": []}

    def stand_in(**kwargs):
        canvas["calls"].append(kwargs.get("initial_drawing"))
        if canvas.get("silent"):             # a canvas that has not reported yet
            canvas["silent"] = False
            return SimpleNamespace(json_data=None, image_data=None)
        return SimpleNamespace(json_data=strokes, image_data=canvas["image"])

    # (the component's module registers itself when imported, which needs a running server)
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", SimpleNamespace(st_canvas=stand_in))
    at = _open("digits")
    token = at.session_state["session.token"]
    at.radio(key="digits.source.mode").set_value("Draw").run()
    assert _captions(at)[0] == "Your drawing, as a 28 x 28 digit"
    _train(at, "digits", steps=20)
    trained_on = _state(at, "digits").runs[0].signature
    # a canvas just mounted reports nothing at first, then its strokes, but not yet its picture
    canvas.update(image=None, calls=[], silent=True)
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/digits.py").run()
    assert not again.exception and not again.error
    assert again.radio(key="digits.source.mode").value == "Draw"
    assert canvas["calls"] and canvas["calls"][0] == strokes                     # the strokes, redrawn
    assert _captions(again)[0] == "Your drawing, as a 28 x 28 digit"
    back = _state(again, "digits")
    assert back.runs[0].signature == trained_on == back.reference.signature
    assert not any("inputs have changed" in c.value for c in again.caption)
    assert not again.button(key="digits.train").disabled
    # the next stroke: the canvas's own picture again, another problem
    canvas["image"] = draw_canvas("1", 4)
    again.run()
    assert any("inputs have changed" in c.value for c in again.caption)


def test_a_reload_brings_back_the_digit_pictures_of_the_runs():
    # After F5 the runs on an uploaded (or drawn) digit came back beside the bundled 0 and 4 in the inputs.
    at = _open("digits")
    token = at.session_state["session.token"]
    at.selectbox(key="digits.target.digit").set_value(7)
    at.selectbox(key="digits.target.index").set_value(1)
    at.radio(key="digits.source.mode").set_value("Upload").run()
    _upload(at, "one.png", _png(_stroke()))
    _train(at, "digits", steps=20)
    uploaded = _state(at, "digits").uploads["source"][1]
    trained_on = _state(at, "digits").runs[0].signature
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/digits.py").run()
    assert not again.exception and not again.error
    # the verdict in words comes back with the run, as the page had said it
    said = [box.value for box in [*again.success, *again.warning]]
    assert [box.value for box in [*at.success, *at.warning]] == said and len(said) == 1, said
    assert again.radio(key="digits.source.mode").value == "Upload"
    assert (again.radio(key="digits.target.mode").value, again.selectbox(key="digits.target.set").value,
            again.selectbox(key="digits.target.digit").value, again.selectbox(key="digits.target.index").value) == (
        "Example", "mnist", 7, 1)
    assert _captions(again) == ["Your picture of the last training here, kept over the reload",
                                "MNIST example: digit 7, #2"]
    np.testing.assert_allclose(_state(again, "digits").uploads["source"][1], uploaded, atol=1e-6)
    back = _state(again, "digits")
    assert back.runs[0].signature == trained_on == back.reference.signature
    assert not any("inputs have changed" in c.value for c in again.caption)
    assert not again.button(key="digits.train").disabled


def test_a_mixture_typed_in_other_units_gets_the_same_map():
    # The 2 -> 3 preset typed in hundredths (a review) was flagged at 25 % L2-UVP, at x100 at 8 %: it now trains in
    # rescaled coordinates (docs/method.md section 4.14), passes and scores as the preset does; a reload brings it back.
    at = _open("mixtures")
    token = at.session_state["session.token"]
    state = _state(at, "mixtures")
    for side, rows in zip(("source", "target"), presets.MIXTURE_ROWS["ICASSP 2023 example: 2 -> 3 components"]):
        frame = pd.DataFrame([{**r, "mean_x": r["mean_x"] / 100, "mean_y": r["mean_y"] / 100, "std_x": r["std_x"] / 100,
                               "std_y": r["std_y"] / 100} for r in rows])
        state.tables[side] = {"base": frame, "edited": frame, "version": 99}
    _train(at, "mixtures", steps=500)
    run = state.runs[0]
    assert [s.value for s in at.success] and not at.warning, [w.value for w in at.warning]
    assert run.metrics["l2_uvp"] < 5.0, run.metrics
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/mixtures.py").run()
    assert not again.exception
    back = _state(again, "mixtures").runs[0]
    assert back.metrics["l2_uvp"] == pytest.approx(run.metrics["l2_uvp"])
    np.testing.assert_allclose(back.mapped, run.mapped, rtol=1e-5, atol=1e-7)


def test_runs_on_other_inputs_are_set_aside_and_brought_back_with_their_inputs():
    # A page compares runs on one problem: a run on new inputs (trained, loaded or a demo) used to remove the others,
    # told only after (a review lost a live run to an opened demo). They are set aside, named in the notice, and come
    # back with the inputs and settings they were trained on; a reload keeps both sets.
    at = _open("gaussians")
    token = at.session_state["session.token"]
    _train(at, "gaussians", steps=20)
    _train(at, "gaussians", steps=30, seed=1)
    first = {name: at.slider(key=f"gaussians.target.{name}").value for name in ("mean_x", "mean_y", "std_x")}
    at.slider(key="gaussians.target.mean_x").set_value(1.0).run()
    said = [c.value for c in at.caption]
    assert any("a run on these inputs sets them aside, under **Runs on earlier inputs**" in c for c in said), said
    _train(at, "gaussians", steps=20)
    state = _state(at, "gaussians")
    assert [run.number for run in state.runs] == [3]
    assert [[run.number for run in group.runs] for group in state.earlier] == [[1, 2]]
    said = [i.value for i in at.info]
    assert any(text.startswith("Runs #1 and #2, trained on other inputs, were set aside: the page compares runs on "
                               "one problem at a time. **Runs on earlier inputs**, under the Train button, brings "
                               "them back with their inputs.") for text in said), said
    labels = at.selectbox(key="gaussians.earlier.%d" % state.runs_version).options
    assert labels == [f"Runs #1 and #2: preset {at.selectbox(key='gaussians.preset').options[0]}"], labels
    at.button(key="gaussians.bring_back").click().run()
    assert not at.exception
    assert [run.number for run in state.runs] == [1, 2] and state.shown == [2, 1]
    assert [[run.number for run in group.runs] for group in state.earlier] == [[3]]
    assert {name: at.slider(key=f"gaussians.target.{name}").value for name in first} == first
    assert (at.number_input(key="gaussians.steps").value, at.number_input(key="gaussians.seed").value) == (30, 1)
    assert not any("inputs have changed" in c.value for c in at.caption)
    assert any(i.value == "Runs #1 and #2 are back, with the inputs they were trained on and the settings of the last "
                          "one trained; run #3 was set aside in their place." for i in at.info), [i.value for i in at.info]
    assert [box.value for box in at.success]                       # run #2's verdict, as the page had said it
    assert _metrics(at)["map"].tolist()[0].startswith("#1 ")
    # Trained again on run #3's inputs: run #3 comes back beside the new run, and #1 and #2 go aside.
    at.slider(key="gaussians.target.mean_x").set_value(1.0).run()
    _train(at, "gaussians", steps=20, seed=2)
    assert [run.number for run in state.runs] == [3, 4] and state.shown == [4, 3]
    assert [[run.number for run in group.runs] for group in state.earlier] == [[1, 2]]
    said = [i.value for i in at.info]
    assert any("Run #3, trained on these inputs before, is back beside run #4." in text for text in said), said
    # A reload keeps both: the page's runs, and those aside.
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/gaussians.py").run()
    assert not again.exception
    back = _state(again, "gaussians")
    assert [run.number for run in back.runs] == [3, 4]
    assert [[run.number for run in group.runs] for group in back.earlier] == [[1, 2]]
    assert any("2 runs of this session brought back from before the reload, with the settings of the last one "
               "trained; 2 more on earlier inputs under **Runs on earlier inputs**." in i.value for i in again.info)
    again.button(key="gaussians.bring_back").click().run()
    assert not again.exception
    assert [run.number for run in back.runs] == [1, 2]
    assert again.slider(key="gaussians.target.mean_x").value == first["mean_x"]
    assert not any("inputs have changed" in c.value for c in again.caption)
    assert _metrics(again)["MSE"].tolist() == pytest.approx(
        [run.metrics["mse"] for run in state.earlier[0].runs])
    # ... and after bringing them back, a second reload shows them as the page's runs.
    third = AppTest.from_file(str(APP), default_timeout=60)
    third.query_params["session"] = token
    third.run().switch_page("pages/gaussians.py").run()
    assert [run.number for run in _state(third, "gaussians").runs] == [1, 2]


def test_a_demo_brought_back_gets_its_verdicts_box():
    at = _open("gaussians")
    at.button(key="gaussians.open_demo").click().run()
    at.slider(key="gaussians.target.mean_x").set_value(2.0).run()
    _train(at, "gaussians", steps=20)
    at.button(key="gaussians.bring_back").click().run()
    assert [run.number for run in _state(at, "gaussians").runs] == [1]
    said = [box.value for box in [*at.success, *at.warning, *at.info]]
    assert said == ["**The map is close to the optimal map.** Run #1 is back, with the inputs it was measured on; run "
                    "#2 was set aside in its place."], said


def test_an_opened_demo_sets_the_runs_aside_and_the_oldest_set_goes_past_the_limit():
    from studio.panels import MAX_ASIDE

    at = _open("gaussians")
    at.slider(key="gaussians.target.mean_x").set_value(3.0).run()
    _train(at, "gaussians", steps=20)
    at.button(key="gaussians.open_demo").click().run()
    said = [i.value for i in [*at.info, *at.success]]
    assert any("Demo opened as run #2" in text for text in said), said
    assert any(text.startswith("Run #1, trained on other inputs, was set aside") for text in said), said
    _train(at, "gaussians", steps=20)
    assert not any("set aside" in i.value for i in at.info)            # said once, not again
    state = _state(at, "gaussians")
    for mean in (0.5, 1.0, 1.5, 2.0):
        at.slider(key="gaussians.target.mean_x").set_value(mean).run()
        _train(at, "gaussians", steps=20)
    assert len(state.earlier) == MAX_ASIDE
    assert [[run.number for run in group.runs] for group in state.earlier][-1] == [2, 3]
    at.slider(key="gaussians.target.mean_x").set_value(2.5).run()
    _train(at, "gaussians", steps=20)
    assert [[run.number for run in group.runs] for group in state.earlier][-1] == [4]
    said = [i.value for i in at.info]
    assert any(f"Runs #2 and #3, on the earliest inputs set aside, were removed: the page keeps runs on {MAX_ASIDE} "
               "earlier inputs" in text for text in said), said


def test_runs_on_a_typed_mixture_and_an_uploaded_digit_come_back_with_their_inputs():
    # Weights typed 1 and 0.5 came back from the densities as 0.666667 and 0.333333, another problem to the last digit
    # ("The inputs have changed" after a bring-back or a reload; Train set the runs aside on the same inputs); a picture
    # brought back, or kept over a reload, went at the next rerun, and Train with it (a review).
    at = _open("mixtures")
    token = at.session_state["session.token"]
    state = _state(at, "mixtures")
    typed = [{"weight": "1", "mean_x": "0.5", "mean_y": "-0.5", "std_x": "0.6", "std_y": "0.4", "corr": "0.3"},
             {"weight": "0.5", "mean_x": "-1", "mean_y": "1", "std_x": "0.5", "std_y": "0.5", "corr": "0"}]
    frame = pd.DataFrame(typed, dtype=object)
    state.tables["source"] = {"base": frame, "edited": frame, "version": 99}
    at.run()
    _train(at, "mixtures", steps=20)
    at.selectbox(key="mixtures.preset").set_value("Four corners -> N(0, I)").run()
    _train(at, "mixtures", steps=20)
    assert at.selectbox(key=f"mixtures.earlier.{state.runs_version}").options == [
        "Run #1: 2 components at (0.5, -0.5), (-1, 1) → 3 components at (-3, 1), (0, -1), (3, 1)"]
    at.button(key="mixtures.bring_back").click().run()
    assert not at.exception and [run.number for run in state.runs] == [1]
    assert at.selectbox(key="mixtures.preset").value == "Custom"
    assert state.tables["source"]["edited"].to_dict("records") == typed
    assert not any("inputs have changed" in c.value for c in at.caption)
    _train(at, "mixtures", steps=20, seed=1)                       # on the same inputs: beside #1, nothing aside
    assert [run.number for run in state.runs] == [1, 3] and [len(g.runs) for g in state.earlier] == [1]
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/mixtures.py").run()
    assert not again.exception
    assert _state(again, "mixtures").tables["source"]["edited"].to_dict("records") == typed
    assert not any("inputs have changed" in c.value for c in again.caption)

    at = _open("digits")
    token = at.session_state["session.token"]
    at.radio(key="digits.source.mode").set_value("Upload").run()
    _upload(at, "one.png", _png(_stroke()))
    _train(at, "digits", steps=20)
    uploaded = _state(at, "digits").uploads["source"][1]
    at.radio(key="digits.source.mode").set_value("Example").run()
    _train(at, "digits", steps=20)
    state = _state(at, "digits")
    assert at.selectbox(key=f"digits.earlier.{state.runs_version}").options == ["Run #1: a picture → MNIST 4 #2"]
    at.button(key="digits.bring_back").click().run()
    assert not at.exception and not at.error
    assert at.radio(key="digits.source.mode").value == "Upload"
    for _ in range(2):                                             # and it stays over the next reruns
        assert _captions(at)[0] == "Your picture, brought back with the runs trained on it"
        np.testing.assert_allclose(state.uploads["source"][1], uploaded, atol=1e-6)
        assert not any("inputs have changed" in c.value for c in at.caption)
        assert not at.button(key="digits.train").disabled
        at.number_input(key="digits.seed").set_value(at.number_input(key="digits.seed").value + 1).run()
    assert at.selectbox(key=f"digits.earlier.{state.runs_version}").options == ["Run #2: MNIST 0 #1 → MNIST 4 #2"]
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/digits.py").run()
    for _ in range(2):
        assert _captions(again)[0] == "Your picture of the last training here, kept over the reload"
        assert not again.button(key="digits.train").disabled
        again.slider(key="digits.samples").set_value(1100).run()
    # taken out of the uploader by the user, a picture put in it goes
    _upload(again, "one.png", _png(_stroke()))
    again.file_uploader(key="digits.source.upload").set_value(None).run()
    assert "source" not in _state(again, "digits").uploads and again.button(key="digits.train").disabled


def test_removing_the_runs_brought_back_by_a_training_keeps_them_the_pages_over_a_reload():
    at = _open("gaussians")
    token = at.session_state["session.token"]
    _train(at, "gaussians", steps=20)
    at.slider(key="gaussians.source.mean_x").set_value(1.5).run()
    _train(at, "gaussians", steps=20)
    at.slider(key="gaussians.source.mean_x").set_value(1.0).run()
    _train(at, "gaussians", steps=20, seed=1)                      # #1 back beside #3, #2 aside
    remove = [w for w in at.selectbox if w.key.startswith("gaussians.remove")][0]
    remove.set_value(3).run()
    at.button(key="gaussians.remove_button").click().run()
    assert [i.value for i in at.info] == ["Run #3 was removed."]
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/gaussians.py").run()
    back = _state(again, "gaussians")
    assert [run.number for run in back.runs] == [1] and [[r.number for r in g.runs] for g in back.earlier] == [[2]]
    assert again.slider(key="gaussians.source.mean_x").value == 1.0


def test_a_reload_during_training_says_the_training_stopped():
    # A closed or reloaded tab ends its training (jobs.watch_session); a review reloaded at step 1,887 of 20,000 and
    # the page said nothing of it. A training that ended before the reload leaves no such note.
    at = _open("gaussians")
    token = at.session_state["session.token"]
    _train(at, "gaussians", steps=20)
    at.number_input(key="gaussians.steps").set_value(20000)
    at.run()
    at.button(key="gaussians.train").click().run()
    assert _state(at, "gaussians").job is not None
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = token
    again.run().switch_page("pages/gaussians.py").run()
    said = [i.value for i in again.info]
    assert any(text.startswith("A training (mGradNet-M, 20,000 steps) was running on this page when it was "
                               "reloaded or closed") for text in said), said
    assert any("1 run of this session brought back" in text for text in said), said
    at.button(key="gaussians.stop").click().run()
    _wait(at, "gaussians")
    third = AppTest.from_file(str(APP), default_timeout=60)
    third.query_params["session"] = token
    third.run().switch_page("pages/gaussians.py").run()
    assert not any("was running" in i.value for i in third.info), [i.value for i in third.info]


def test_runs_with_a_second_phase_survive_a_reload():
    # A mixture run goes on with a second phase: its TrainResult.phases came back from the store as JSON lists,
    # and the loss chart, which hashes them, ended the reloaded page in "unhashable type: 'list'" (a review).
    at = _open("mixtures")
    _train(at, "mixtures", steps=50)
    before = _state(at, "mixtures").runs
    assert before[0].result.phases, "the mixture preset's run has no second phase: this test tests nothing"
    again = AppTest.from_file(str(APP), default_timeout=60)
    again.query_params["session"] = at.session_state["session.token"]
    again.run().switch_page("pages/mixtures.py").run()
    assert not again.exception, again.exception
    assert _state(again, "mixtures").runs[0].result.phases == before[0].result.phases
    assert "mixtures.losses" in [c.key for c in _charts(again)]


def test_every_objective_respects_the_steps_and_work_limits():
    at = _press_train_on_the_flow(outer=1000, inner=1000)
    assert not at.exception and _state(at, "gaussians").job is None             # refused, nothing started
    assert any("asks for 1,000,000 steps; this server allows 20,000" in e.value for e in at.error)
    # The largest network the inputs allow, for 20 000 steps: past the work cap, refused with what to change.
    at.selectbox(key="gaussians.objective").set_value(presets.DEFAULT_OBJECTIVE).run()
    at.number_input(key="gaussians.mGradNet-M.width").set_value(512)
    at.number_input(key="gaussians.mGradNet-M.modules").set_value(64)
    at.number_input(key="gaussians.steps").set_value(20000)
    at.run()
    at.button(key="gaussians.train").click().run()
    assert _state(at, "gaussians").job is None
    assert any("GRADNET_MAX_WORK" in e.value and "fewer steps or a smaller network" in e.value for e in at.error)
    # Every job carries the time limit.
    at.number_input(key="gaussians.mGradNet-M.width").set_value(32)
    at.number_input(key="gaussians.mGradNet-M.modules").set_value(4)
    _train(at, "gaussians", steps=20)
    assert _state(at, "gaussians").runs[-1].settings["training"]["time_limit"] == 900.0


def test_a_session_memory_budget_caps_uploads_and_ground_truth_samples(monkeypatch):
    import studio.limits

    monkeypatch.setattr(studio.limits, "SESSION_BYTES", 100e6)       # GRADNET_SESSION_MB=100
    at = _open("digits")
    assert at.slider(key="digits.samples").max == 1000                  # sqrt(100 MB / 88 B), in hundreds
    at.radio(key="digits.source.mode").set_value("Upload").run()
    big = np.zeros((2500, 3000), dtype=np.uint8)
    big[1000:1500, 1200:1300] = 255
    _upload(at, "photo.png", _png(big))                                 # 7.5 megapixels: over the 5.56 budget
    assert [e.value for e in at.error] == ["The image is 3000 x 2500 pixels (8 megapixels); the limit is 5.56 "
                                           "megapixels. Shrink it before uploading."]


def test_one_training_at_a_time_per_session():
    at = _open("gaussians")
    at.number_input(key="gaussians.steps").set_value(20000).run()
    at.button(key="gaussians.train").click().run()
    assert _state(at, "gaussians").job is not None
    at.switch_page("pages/mixtures.py").run()
    at.button(key="mixtures.train").click().run()
    assert not at.exception and _state(at, "mixtures").job is None
    assert any("already training on its gaussians page" in e.value for e in at.error), [e.value for e in at.error]
    _state(at, "gaussians").job.stop()
    assert _state(at, "gaussians").job.wait(TIMEOUT)


def test_values_typed_just_before_train_stay_in_their_boxes_while_and_after_it_trains():
    """Issue 17: under load a seed typed and Train clicked at once came back as 0 after the click's rerun,
    where the inputs are disabled and Streamlit keeps the last completed run's values for them."""
    at = _open("gaussians")
    at.number_input(key="gaussians.seed").set_value(77)
    at.number_input(key="gaussians.steps").set_value(40)
    at.slider(key="gaussians.source.mean_x").set_value(0.5)
    at.button(key="gaussians.train").click().run()                  # one run: the values and the click
    assert not at.exception, at.exception
    assert _state(at, "gaussians").job is not None
    assert at.number_input(key="gaussians.seed").value == 77 and at.number_input(key="gaussians.seed").disabled
    assert at.number_input(key="gaussians.steps").value == 40
    assert at.slider(key="gaussians.source.mean_x").value == 0.5
    _wait(at, "gaussians")
    run = _state(at, "gaussians").runs[-1]
    assert run.settings["training"]["seed"] == 77 and run.result.steps == 40
    assert at.number_input(key="gaussians.seed").value == 77 and not at.number_input(key="gaussians.seed").disabled
    assert at.slider(key="gaussians.source.mean_x").value == 0.5
    at.number_input(key="gaussians.seed").set_value(78).run()           # editable again afterwards
    assert at.number_input(key="gaussians.seed").value == 78


def test_a_queued_training_says_its_place_refreshes_slowly_and_starts_when_the_slot_frees(monkeypatch):
    import studio.scheduler
    from studio.panels import POLL_SECONDS, QUEUED_POLL_SECONDS

    monkeypatch.setattr(studio.scheduler, "_SLOTS", studio.scheduler.Slots(workers=1, queue_limit=5))
    first, second = _open("gaussians"), _open("gaussians")
    first.number_input(key="gaussians.steps").set_value(20000).run()
    first.button(key="gaussians.train").click().run()
    deadline = time.monotonic() + TIMEOUT
    while _state(first, "gaussians").job.snapshot().phase != "training":
        assert time.monotonic() < deadline, "the first training did not start"
        time.sleep(0.2)
    second.number_input(key="gaussians.steps").set_value(20000).run()
    second.button(key="gaussians.train").click().run()
    assert not second.exception, second.exception
    text = second.get("progress")[0].proto.text
    assert text.startswith("Queued: place 1 of 1 for this server's 1 training slot"), text
    assert _state(second, "gaussians").cache["live_every"] == QUEUED_POLL_SECONDS
    first.button(key="gaussians.stop").click().run()
    _wait(first, "gaussians")
    while _state(second, "gaussians").job is not None and _state(second, "gaussians").job.snapshot().phase == "queued":
        assert time.monotonic() < deadline, "the queued training did not start"
        time.sleep(0.2)
    second.run()
    assert _state(second, "gaussians").cache["live_every"] == POLL_SECONDS     # training: refreshed faster
    second.button(key="gaussians.stop").click().run()
    _wait(second, "gaussians")
    assert 0 < _state(second, "gaussians").runs[-1].result.steps < 20000


def test_a_saved_inverse_map_comes_back_as_a_run():
    """A map the digits preset trained back is saved as its network and an inverse flag; loading it on a page
    measures the inverse (here of the Gaussians page's own trained network, with the strict term)."""
    import copy

    from gradnet_core import InverseMap
    from gradnet_core.files import map_to_bytes

    at = _open("gaussians")
    _train(at, "gaussians", steps=200)
    state = _state(at, "gaussians")
    network = copy.deepcopy(state.runs[-1].model)
    network.add_strict_term()
    inverse = InverseMap(network)
    uploader = [w for w in at.get("file_uploader") if w.key.startswith("gaussians.map_upload")][0]
    at.file_uploader(key=uploader.key).set_value(("back.safetensors", map_to_bytes(inverse),
                                                  "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    loaded = state.runs[-1]
    assert loaded.number == 2 and isinstance(loaded.model, InverseMap) and loaded.network == "mGradNet-M"
    points = torch.as_tensor(state.reference.points, dtype=torch.float32)
    np.testing.assert_allclose(loaded.mapped, inverse(points).double().numpy(), rtol=1e-5, atol=1e-5)


def test_new_random_pair_differs_from_session_to_session():
    # From 0 in every session, the first random pair after a reload was the one before it (a review).
    pairs = []
    for _ in range(2):
        at = _open("gaussians")
        at.button(key="gaussians.random").click().run()
        assert at.selectbox(key="gaussians.preset").value == "Random pair"
        pairs.append([at.slider(key=f"gaussians.{side}.{name}").value for side in ("source", "target")
                      for name in ("mean_x", "mean_y", "std_x", "std_y", "corr")])
    assert pairs[0] != pairs[1]
