"""Colour transfer: learn a monotone map between two images' RGB pixel distributions (sample-only losses),
recolour the source, and compare with POT's EMD colour transfer."""

import streamlit as st

from gradnet_core import color, ui
from gradnet_core.jobs import TrainingJob, seeded_map
from gradnet_core.plotting import loss_figure

PAGE = "color"
LOSSES = {"sinkhorn": "Sinkhorn divergence", "gaussian-kl": "Gaussian-moment KL (mean and covariance only)",
          "wasserstein": "Adversarial Wasserstein-1 (critic)"}
DEFAULTS = {"source": "daytime", "target": "sunset"}
state = st.session_state.setdefault(f"{PAGE}.state", {"job": None, "outcome": None, "notices": []})


def collect() -> bool:
    """Move a finished job into the state; True while one is running."""
    job = state["job"]
    if job is None or not job.done:
        return job is not None
    state["job"] = None
    if job.error is not None:
        state["notices"] = [("error", job.error)]
    else:
        kind = {"completed": "success", "stopped": "warning", "diverged": "error"}[job.result.stopped]
        state["notices"] = [(kind, job.result.message)]
        state["outcome"] = {**state.pop("pending"), "result": job.result, "comparison": job.evaluation}
    return False


def image_input(side: str, disabled: bool):
    """The image for one side, bundled or uploaded; None (after a message) when there is none."""
    st.subheader(side.capitalize())
    mode = st.radio("Image", ["Bundled", "Upload"], key=f"{PAGE}.{side}.mode", horizontal=True,
                    disabled=disabled, persist_state="session", label_visibility="collapsed")
    if mode == "Bundled":
        bundled = color.bundled_color_images()
        names = list(bundled)
        st.session_state.setdefault(f"{PAGE}.{side}.bundled", DEFAULTS[side])
        name = st.selectbox("Example", names, key=f"{PAGE}.{side}.bundled", disabled=disabled,
                            persist_state="session")
        image = color.load_rgb(bundled[name])
    else:
        file = st.file_uploader("Image file (PNG, JPEG, GIF, BMP or WebP)", type=ui.UPLOAD_TYPES,
                                key=f"{PAGE}.{side}.upload", disabled=disabled)
        if file is None:
            st.info("Upload a photo; it is shrunk to at most 512 px on its longer side.")
            return None
        try:
            image = color.load_rgb(file.getvalue())
        except ValueError as err:
            st.error(str(err))
            return None
    st.image(image, caption=f"{image.shape[1]} x {image.shape[0]} px")
    return image


def live_panel() -> None:
    job = state["job"]
    if job is None or job.done:
        st.rerun()
        return
    snap = job.snapshot()
    text = ("Training finished; recolouring and running POT's EMD transfer…" if snap.phase == "finishing" else
            f"Step {snap.step:,} / {snap.total:,} · {snap.steps_per_second:,.1f} steps/s")
    bar, stop = st.columns([5, 1], vertical_alignment="bottom")
    bar.progress(snap.fraction, text=text)
    if stop.button("Stop", key=f"{PAGE}.stop", disabled=job.stopping or snap.phase != "training"):
        job.stop()
    if snap.losses:
        st.plotly_chart(loss_figure(snap.loss_steps, snap.losses, height=240), key=f"{PAGE}.live_loss",
                        config={"displayModeBar": False})


ui.page_header("Colour transfer")
st.markdown(
    "Every pixel is a point in the RGB cube. A monotone gradient network $T$ learns to move the source "
    "image's cloud of colours onto the target's from **samples only** (no densities), then recolours every "
    "source pixel. Because $T$ is the gradient of a convex function, colour order is kept, and because it "
    "is continuous, smooth gradients stay smooth. POT's exact-OT (EMD) colour transfer on a subsample of "
    "pixels runs beside it."
)
training = collect()
images = {}
for side, column in zip(("source", "target"), st.columns(2)):
    with column:
        images[side] = image_input(side, disabled=training)

with st.expander("Map and training settings", expanded=False):
    a, b = st.columns(2)
    st.session_state.setdefault(f"{PAGE}.network", "M-MGN")
    network = a.selectbox("Map", color.COLOR_NETWORKS, key=f"{PAGE}.network", disabled=training,
                          persist_state="session", help="Every monotone map in the library.")
    loss = b.selectbox("Loss", list(LOSSES), format_func=LOSSES.get, key=f"{PAGE}.loss", disabled=training,
                       persist_state="session")
    c, d, e = st.columns(3)
    defaults = color.COLOR_CONFIG
    for name, value in (("steps", defaults.steps), ("lr", defaults.lr), ("seed", defaults.seed)):
        st.session_state.setdefault(f"{PAGE}.{name}", value)
    steps = c.number_input("Steps", min_value=1, max_value=ui.LIMITS["steps"], step=50, key=f"{PAGE}.steps",
                           disabled=training, persist_state="session")
    lr = d.number_input("Learning rate", min_value=1e-5, max_value=1.0, format="%g", key=f"{PAGE}.lr",
                        disabled=training, persist_state="session")
    seed = e.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=f"{PAGE}.seed",
                          disabled=training, persist_state="session")
    st.caption(f"{defaults.batch_size} pixels of each image per step; Sinkhorn blur "
               f"√{defaults.sinkhorn_epsilon:g}; the critic takes {defaults.critic_steps} steps per map step.")

ready = images["source"] is not None and images["target"] is not None
left, right = st.columns([1, 4], vertical_alignment="center")
clicked = left.button("Train", type="primary", key=f"{PAGE}.train", disabled=training or not ready)
right.caption(f"Training runs on the {ui.device_label()}.")
if clicked and ready:
    source, target = images["source"], images["target"]
    config = color.color_config(loss=loss, steps=int(steps), lr=float(lr), seed=int(seed))
    model = seeded_map(network, int(seed), dim=3)
    state["pending"] = {"source": source, "target": target, "network": network, "loss": loss}
    state["job"] = TrainingJob(
        model, color.image_pixels(source), color.image_pixels(target), config, cpu_threads=ui.CPU_THREADS,
        finish=lambda trained, result: color.compare_with_emd(trained, result, source, target, seed=int(seed)),
    ).start()
    state["notices"] = []
    st.rerun()
if training:
    st.fragment(run_every=ui.POLL_SECONDS)(live_panel)()
for kind, text in state["notices"]:
    getattr(st, kind)(text)

outcome = state["outcome"]
if outcome is not None:
    comparison = outcome["comparison"]
    st.divider()
    st.subheader(f"Results: {outcome['network']}, {LOSSES[outcome['loss']].split(' (')[0]}")
    columns = st.columns(4)
    shown = (("Source", outcome["source"]), ("Target", outcome["target"]),
             (f"Recoloured by {outcome['network']}", comparison.recoloured),
             (f"POT EMD transfer ({comparison.emd.samples} pixels)", comparison.emd.image))
    for column, (caption, image) in zip(columns, shown):
        column.image(image, caption=caption)
    st.download_button("Download the recoloured image (.png)", color.to_png_bytes(comparison.recoloured),
                       file_name="recoloured.png", mime="image/png", key=f"{PAGE}.download")
    st.dataframe({
        "method": ["source as it is", f"{outcome['network']} ({outcome['loss']})", "POT EMD transfer"],
        "time (s)": [None, round(comparison.learned_seconds, 2), round(comparison.emd.seconds, 2)],
        "colour distance to the target": [comparison.distances[k] for k in ("source", "learned", "EMD")],
    }, hide_index=True)
    st.caption("Colour distance: energy distance between 1500 random pixels of each image and of the target "
               "(0 for the same colour distribution). EMD matches the colours of its subsample exactly but "
               "moves neighbouring pixels independently, so smooth regions turn speckled; the monotone map "
               "keeps them smooth.")
    before, after = st.columns(2)
    before.plotly_chart(color.pixel_cloud_figure({"source": outcome["source"], "target": outcome["target"]}),
                        key=f"{PAGE}.cloud_before")
    after.plotly_chart(color.pixel_cloud_figure({"recoloured": comparison.recoloured,
                                                 "target": outcome["target"]}), key=f"{PAGE}.cloud_after")
    before.caption("Before: source and target pixels in RGB space (2000 of each).")
    after.caption("After: recoloured source pixels and target pixels.")
