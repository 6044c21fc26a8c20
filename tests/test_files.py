"""save_map / load_map: exact round trips, and refusal of anything that is not our file."""

import inspect
import io
import itertools
import json
import math
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from gradnet_core import InverseMap, MGradNetC, MGradNetM, MLPMap, load_map, save_map
from gradnet_core.files import _weights_bound, map_from_bytes, map_to_bytes
from gradnet_core.networks import NETWORKS


@pytest.mark.parametrize("model", [MGradNetM(2, width=8, modules=3), MGradNetC(3, width=5, depth=2, strict=True),
                                   MLPMap(2, width=16, depth=2)])
def test_round_trip_gives_identical_outputs(tmp_path, model):
    path = tmp_path / "map.safetensors"
    save_map(model, path, extra={"note": "test"})
    loaded = load_map(path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    x = torch.randn(10, model.dim)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bytes_round_trip():
    model = MGradNetM(2, width=4, modules=2)
    loaded = map_from_bytes(map_to_bytes(model))
    x = torch.randn(3, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickle_payload_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="not a GradNetOT Studio map"):
        load_map(path)
    buffer = io.BytesIO()
    torch.save({"W": torch.zeros(2)}, buffer)
    with pytest.raises(ValueError, match="not a GradNetOT Studio map"):
        map_from_bytes(buffer.getvalue())
    assert not (tmp_path / "PWNED").exists()


def test_truncated_file_is_refused(tmp_path):
    # Said as what it is (a review's half file and empty file were both "not a GradNetOT Studio map file").
    data = map_to_bytes(MGradNetM(2))
    header_end = 8 + int.from_bytes(data[:8], "little")
    for cut in (len(data) // 2, header_end + 1, len(data) - 1):
        assert cut > header_end
        with pytest.raises(ValueError, match="the map file is incomplete"):
            map_from_bytes(data[:cut])
    with pytest.raises(ValueError, match="not a GradNetOT Studio map"):      # cut inside the header
        map_from_bytes(data[: header_end // 2])
    with pytest.raises(ValueError, match="the file is empty"):
        map_from_bytes(b"")


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="not a GradNetOT Studio map"):
        load_map(path)


def test_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "map.safetensors"
    model = MGradNetM(2, width=8, modules=3)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    info = {"format": "gradnetot-map", "version": 1, "class": "MGradNetM",
            "config": {**model.config(), "width": 16}}
    save_file(tensors, str(path), metadata={"gradnetot": json.dumps(info)})
    with pytest.raises(ValueError, match="does not match"):
        load_map(path)
    info["class"] = "os.system"
    save_file(tensors, str(path), metadata={"gradnetot": json.dumps(info)})
    with pytest.raises(ValueError, match="unknown architecture"):
        load_map(path)


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_map(tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------------------------
# Files from anyone: an upload makes load_map reachable by every visitor of the app
# --------------------------------------------------------------------------------------------
def _forged(path, cls: str, config: dict, tensors: dict | None = None, extra_text: str | None = None) -> None:
    """A safetensors file with our metadata naming ``cls`` and ``config`` (or the raw ``extra_text``)."""
    text = extra_text if extra_text is not None else json.dumps(
        {"format": "gradnetot-map", "version": 1, "class": cls, "config": config})
    save_file(tensors if tensors is not None else {"W": torch.zeros(2, 2)}, str(path), metadata={"gradnetot": text})


_PROBE = """
import json, os, resource, sys, time
from gradnet_core.files import load_map
# Each file in a child forked after the imports: its own memory high-water mark, one torch import for all.
for path in sys.argv[1:]:
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            load_map(path)
            outcome = "loaded"
        except ValueError as err:
            outcome = "ValueError: " + str(err)
        except BaseException as err:
            outcome = type(err).__name__ + ": " + str(err)[:200]
        seconds = time.perf_counter() - start
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        os.write(write, json.dumps({"path": path, "outcome": outcome, "seconds": seconds, "grown_mb": grown}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        print(answer.read() or json.dumps({"path": path, "outcome": "the child died"}))
    os.wait()
"""


def _probe(paths) -> dict:
    """load_map(path) for each of ``paths`` in a fresh process: what it raised, and how much memory it grew by
    (MB), per path."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *map(str, paths)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found = [json.loads(line) for line in done.stdout.strip().splitlines()[-len(paths):]]
    return {row.pop("path"): row for row in found}


HOSTILE = {
    "width 2e8": "accepts 1 to 4096",
    "width 1e9": "accepts 1 to 4096",
    "MLP depth 1e6": "accepts 1 to 64",
    "metadata nested 100 000 deep": "not a GradNetOT Studio map",
    "NaN weights": "NaN or infinite",
    "inf weights": "NaN or infinite",
    "sizes within the caps, weights too small for them": "does not match",
    "a setting the class does not take": "does not take",
}


def _hostile_file(path, case: str) -> None:
    small = MGradNetM(2, width=4, modules=2)
    weights = {k: v.contiguous() for k, v in small.state_dict().items()}
    if case == "width 2e8":
        _forged(path, "MGradNetM", {**small.config(), "width": 200_000_000}, weights)
    elif case == "width 1e9":
        _forged(path, "MGradNetC", {"dim": 2, "width": 1_000_000_000, "depth": 2}, weights)
    elif case == "MLP depth 1e6":
        _forged(path, "MLPMap", {"dim": 2, "width": 8, "depth": 1_000_000}, weights)
    elif case == "metadata nested 100 000 deep":
        _forged(path, "MGradNetM", {}, weights, extra_text="[" * 100_000 + "]" * 100_000)
    elif case in ("NaN weights", "inf weights"):
        weights["W"][0, 0, 0] = math.nan if case == "NaN weights" else math.inf
        _forged(path, "MGradNetM", small.config(), weights)
    elif case == "sizes within the caps, weights too small for them":
        _forged(path, "MGradNetM", {**small.config(), "width": 4096, "modules": 1024}, weights)
    else:
        _forged(path, "MGradNetM", {**small.config(), "callback": "os.system"}, weights)


@pytest.fixture(scope="module")
def hostile_outcomes(tmp_path_factory) -> dict:
    """Every hostile file written and loaded in one fresh process (a child each): outcome per case."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = {case: folder / f"{k}.safetensors" for k, case in enumerate(HOSTILE)}
    for case, path in paths.items():
        _hostile_file(path, case)
    found = _probe(list(paths.values()))
    return {case: found[str(path)] for case, path in paths.items()}


@pytest.mark.parametrize("case, fragment", HOSTILE.items())
def test_hostile_files_are_refused_at_once_without_allocating(hostile_outcomes, case, fragment):
    result = hostile_outcomes[case]
    assert result["outcome"].startswith("ValueError") and fragment in result["outcome"], result
    assert result["grown_mb"] < 100, result


def test_the_memory_probe_sees_a_load_that_allocates(tmp_path):
    # The check above can fail: an honest file near the caps (mGradNet-M on 512 dimensions, 28 modules x 1024:
    # 14.7 M weights, 59 MB) loads, and its child's high-water mark grows by more than 100 MB.
    path = tmp_path / "big.safetensors"
    big = MGradNetM(512, width=1024, modules=28)
    _forged(path, "MGradNetM", big.config(), {k: v.contiguous() for k, v in big.state_dict().items()})
    del big
    result = _probe([path])[str(path)]
    assert result["outcome"] == "loaded" and result["grown_mb"] > 100, result


@pytest.mark.parametrize("cls", sorted(NETWORKS.values(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_the_weights_bound_holds_for_every_network(cls):
    # read_map builds a network on the CPU, not on the meta device, when this bound is under MAX_PARAMETERS
    params = inspect.signature(cls.__init__).parameters
    for dim, width, count in itertools.product((1, 2, 5, 17), (1, 3, 32), (1, 2, 5)):
        config = {"dim": dim, "width": width, **{k: count for k in ("modules", "depth") if k in params}}
        for strict in ((False, True) if "strict" in params else (None,)):
            if strict is not None:
                config["strict"] = strict
            try:
                built = cls(**config)
            except ValueError:                # a size the class refuses (an mGradNet-M module of width 1)
                continue
            allocated = sum(t.numel() for t in itertools.chain(built.parameters(), built.buffers()))
            assert allocated <= _weights_bound(cls, config), config
    assert _weights_bound(cls, {"dim": "2"}) == math.inf


def test_a_small_map_loads_without_the_compiler(tmp_path):
    # Built on the meta device to check its shapes, every map imported torch._dynamo (2.5 CPU s): the gallery's
    # first page render paid it. A map whose settings bound its size is built on the CPU once.
    path = tmp_path / "small.safetensors"
    save_map(MGradNetM(2, width=32, modules=4), path)
    probe = ("import sys\nfrom gradnet_core.files import load_map\n"
             f"load_map({str(path)!r})\nprint('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["False"], done.stderr


def test_oversized_files_are_refused_before_reading(tmp_path):
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.truncate(65_000_000)
    with pytest.raises(ValueError, match="the limit is 64,000,000 bytes"):
        load_map(path)
    with pytest.raises(ValueError, match="the limit is 64,000,000 bytes"):
        map_from_bytes(bytes(65_000_000))


def test_the_extra_description_comes_back_with_the_map(tmp_path):
    from gradnet_core.files import load_map_file

    path = tmp_path / "map.safetensors"
    save_map(MGradNetC(2, width=4, depth=2), path, extra={"network": "mGradNet-C", "problem": {"type": "x"}})
    loaded = load_map_file(path)
    assert isinstance(loaded.model, MGradNetC) and loaded.extra == {"network": "mGradNet-C", "problem": {"type": "x"}}


def test_an_inverse_map_comes_back_as_the_inverse_of_its_network(tmp_path):
    network = MGradNetM(2, width=8, modules=2, strict=True)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = tmp_path / "inverse.safetensors"
    save_map(InverseMap(network), path)
    loaded = load_map(path)
    assert isinstance(loaded, InverseMap) and isinstance(loaded.base, MGradNetM) and loaded.base.strict
    x = torch.rand(100, 2)
    torch.testing.assert_close(loaded(x), InverseMap(network)(x), atol=0, rtol=0)
    # the file holds the network's weights, as a plain network's file does
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert json.loads(header["__metadata__"]["gradnetot"])["inverse"] is True
    assert set(header) - {"__metadata__"} == set(network.state_dict())


def test_a_rescaled_map_round_trips_with_its_frame():
    from gradnet_core import RescaledMap
    torch.manual_seed(0)
    for base in (MGradNetM(2, width=4, modules=2), InverseMap(MGradNetC(2, width=4, depth=2, strict=True))):
        model = RescaledMap(base, 250.0, [10.0, -20.0], [110.0, -20.0])
        loaded = map_from_bytes(map_to_bytes(model))
        assert isinstance(loaded, RescaledMap) and type(loaded.base) is type(base)
        assert loaded.scale == 250.0 and loaded.center.tolist() == [10.0, -20.0]
        assert loaded.center_out.tolist() == [110.0, -20.0]
        x = 10.0 + 250.0 * torch.randn(5, 2)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))


def test_a_rescaled_map_file_from_before_the_targets_own_centre_loads(tmp_path):
    """Files written before RescaledMap had a target centre hold one centre, for both sides."""
    from gradnet_core import RescaledMap
    torch.manual_seed(0)
    model = MGradNetM(2, width=4, modules=2)
    info = {"format": "gradnetot-map", "version": 1, "class": "MGradNetM", "config": model.config(),
            "rescaled": {"scale": 3.0, "center": [5.0, 1.0]}}
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"gradnetot": json.dumps(info)})
    loaded = load_map(path)
    assert isinstance(loaded, RescaledMap) and loaded.center_out.tolist() == [5.0, 1.0]
    x = torch.randn(4, 2)
    with torch.no_grad():
        centre = torch.tensor([5.0, 1.0])
        torch.testing.assert_close(loaded(x), 3.0 * model((x - centre) / 3.0) + centre)


def test_a_bad_frame_in_a_map_file_is_refused(tmp_path):
    path = tmp_path / "map.safetensors"
    model = MGradNetM(2, width=4, modules=2)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    for bad in ({"scale": -1.0, "center": [0.0, 0.0]}, {"scale": 2.0, "center": [0.0]},
                {"scale": 2.0, "center": ["a", "b"]}, "tall", {"scale": float("nan"), "center": [0.0, 0.0]},
                {"scale": 2.0, "center": [0.0, 0.0], "center_out": [1.0]},
                {"scale": 2.0, "center": [0.0, 0.0], "center_out": [float("inf"), 0.0]}):
        info = {"format": "gradnetot-map", "version": 1, "class": "MGradNetM", "config": model.config(),
                "rescaled": bad}
        save_file(tensors, str(path), metadata={"gradnetot": json.dumps(info)})
        with pytest.raises(ValueError, match="rescaling"):
            load_map(path)
