"""save_map / load_map: exact round trips, and refusal of anything that is not our file."""

import io
import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from gradnet_core import MGradNetC, MGradNetM, MLPMap, load_map, save_map
from gradnet_core.files import map_from_bytes, map_to_bytes


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
    data = map_to_bytes(MGradNetM(2))
    with pytest.raises(ValueError, match="not a GradNetOT Studio map"):
        map_from_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a GradNetOT Studio map"):
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
