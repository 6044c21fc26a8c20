"""Every page of the app under streamlit.testing.v1.AppTest: renders, trains, shows results, refuses
bad input with st.error."""

import base64
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 120


def _open(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
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


def _metrics(at: AppTest) -> pd.DataFrame:
    tables = [df.value for df in at.dataframe if "MSE" in df.value.columns]
    assert len(tables) == 1, "no metrics table"
    return tables[0]


def _assert_results(at: AppTest, rows: int = 1) -> pd.DataFrame:
    assert not at.error, [e.value for e in at.error]
    assert any("Trained" in s.value for s in at.success)
    assert len(_charts(at)) >= 2                                  # animation and loss curve
    table = _metrics(at)
    assert len(table) == rows
    assert {"MSE", "L2-UVP (%)", "cosine", "Monge–Ampère residual", "smallest Jacobian eigenvalue",
            "training time (s)"} <= set(table.columns)
    assert np.isfinite(table["MSE"].to_numpy()).all()
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
    assert table["map"].tolist() == ["mGradNet-M"]
    run = _state(at, "gaussians").runs["learned"]
    before = len(_animation(at, "gaussians").proto.spec)
    at.toggle(key="gaussians.arrows").set_value(True).run()
    at.toggle(key="gaussians.paths").set_value(True).run()
    assert _state(at, "gaussians").job is None and _state(at, "gaussians").runs["learned"] is run
    assert len(_animation(at, "gaussians").proto.spec) > before                # arrows and paths drawn, no new training


def test_gaussians_baseline_joins_the_comparison():
    at = _open("gaussians")
    _train(at, "gaussians", steps=20)
    at.selectbox(key="gaussians.network").set_value("MLP baseline").run()
    _train(at, "gaussians", steps=20)
    table = _assert_results(at, rows=2)
    assert table["map"].tolist() == ["mGradNet-M", "MLP baseline"]
    assert "(not monotone)" in _animation(at, "gaussians").proto.spec           # third panel


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
    assert any("Stopped by request" in w.value for w in at.warning)
    run = _state(at, "gaussians").runs["learned"]
    assert 0 < run.result.steps < 20000 and run.result.stopped == "stopped"
    assert len(_metrics(at)) == 1
    assert not at.slider(key="gaussians.source.mean_x").disabled


def test_gaussians_bad_covariance_shows_an_error_and_blocks_training():
    at = _open("gaussians")
    at.slider(key="gaussians.source.corr").set_value(1.0).run()
    assert not at.exception
    assert any("positive definite" in e.value for e in at.error)
    assert at.button(key="gaussians.train").disabled
    at.slider(key="gaussians.source.corr").set_value(0.5).run()
    assert not at.error and not at.button(key="gaussians.train").disabled


def test_gaussians_divergence_is_reported_and_the_last_good_model_kept():
    at = _open("gaussians")
    _train(at, "gaussians", steps=30, lr=10.0)
    assert any("diverged" in e.value for e in at.error)
    assert not at.exception
    assert _state(at, "gaussians").runs["learned"].result.stopped == "diverged"


def test_mixtures_train_against_the_barycentric_projection():
    at = _open("mixtures")
    assert not at.error
    at.slider(key="mixtures.samples").set_value(300).run()
    _train(at, "mixtures")
    _assert_results(at)
    assert "barycentric, n=300" in _animation(at, "mixtures").proto.spec


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


def test_digits_train_from_bundled_examples():
    at = _open("digits")
    assert not at.error
    assert len(at.get("image")) == 2                               # source and target digits
    at.slider(key="digits.samples").set_value(300).run()
    _train(at, "digits", steps=20)
    _assert_results(at)


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


def test_results_survive_a_trip_to_another_page():
    at = _open("gaussians")
    at.slider(key="gaussians.target.mean_x").set_value(1.0).run()
    _train(at, "gaussians", steps=10)
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/gaussians.py").run()
    assert not at.exception
    assert len(_metrics(at)) == 1
    assert at.slider(key="gaussians.target.mean_x").value == 1.0



def test_gaussians_constrained_flow_is_selectable_and_trains():
    """Issue 8: the scheme is picked on the page and its outer steps drive the run."""
    at = _open("gaussians")
    label = "Constrained gradient flow, implicit"
    at.selectbox(key="gaussians.objective").set_value(label).run()
    at.number_input(key=f"gaussians.{label}.flow_outer_steps").set_value(2)
    at.number_input(key=f"gaussians.{label}.flow_inner_steps").set_value(5)
    at.run()
    at.button(key="gaussians.train").click().run()
    assert not at.exception, at.exception
    _wait(at, "gaussians")
    assert not at.error, [e.value for e in at.error]
    run = _state(at, "gaussians").runs["learned"]
    assert run.result.steps == 10
    assert "outer_step" in run.result.history and max(run.result.history["outer_step"]) == 2


def test_mixtures_flow_refuses_a_target_that_is_not_log_concave():
    at = _open("mixtures")
    at.selectbox(key="mixtures.objective").set_value("Constrained gradient flow, explicit").run()
    at.button(key="mixtures.train").click().run()
    assert any("log-concave" in e.value for e in at.error), [e.value for e in at.error]
    assert _state(at, "mixtures").job is None


def test_mixtures_sample_only_loss_trains():
    """Issue 7: a sample-only loss is selectable on the mixtures page."""
    at = _open("mixtures")
    at.selectbox(key="mixtures.objective").set_value("Sinkhorn divergence (target samples only)").run()
    _train(at, "mixtures", steps=10)
    assert not at.error, [e.value for e in at.error]
    assert _state(at, "mixtures").runs["learned"].result.stopped == "completed"
