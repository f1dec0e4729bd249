"""Results on disk without pickle: every result type round-trips bit for bit; bad files are refused clearly."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from deep_equal import same
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.core import archive
from neuronviz.core.archive import FORMAT_VERSION, weights_fingerprint


def _image(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _images(n: int = 24) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# every result type, from a real small computation


def _scores() -> nv.NeuronScores:
    return nv.score_neurons(tiny_cnn(), _image(), ["conv1", "conv2"], n_samples=6, keep_channel_means=True,
                            keep_maps=[0, 2], bootstrap=4, perturbation="occlusion")


def _top() -> nv.TopExamples:
    labels = torch.arange(24) % 3
    return nv.top_examples(tiny_cnn(), _images(), ["conv1", "conv2"], k=3, labels=labels)


RESULTS: dict[str, Callable[[], Any]] = {
    "NeuronScores": _scores,
    "PCACEScores": lambda: nv.pcace(tiny_cnn(), _images(), "conv2", 1),
    "LayerRanking": lambda: nv.rank_layers(tiny_cnn(), _images(), ["conv1", "conv2"], 0, k=2),
    "InversionResult": lambda: nv.guided_feature_inversion(tiny_cnn(), _image(), target=2, stage1_steps=2,
                                                           stage2_steps=3),
    "FaithfulnessCurves": lambda: nv.deletion_curve(tiny_cnn(), _image(), _scores(), ks=[0, 1, 2], random=2),
    "Curve": lambda: nv.deletion_curve(tiny_cnn(), _image(), _scores(), ks=[0, 1, 2], random=2).curves[-1],
    "KnockoutEffect": lambda: nv.knockout_effect(tiny_cnn(), _image(), [{"conv1": [0, 1]}, {"conv2": [3]}]),
    "TopExamples": _top,
    "Generality": lambda: _top().generality("conv1"),
    "SelectionStability": lambda: nv.selection_stability(tiny_cnn(), _image(), ["conv1", "conv2"], k=2,
                                                         bootstrap=4, n_samples=6),
    "BaselineScores": lambda: nv.baseline_scores(tiny_cnn(), _image(), ["conv1", "conv2"]),
    "AceResult": lambda: nv.ace(torch.randn(40, 2, generator=torch.Generator().manual_seed(3)),
                                torch.randn(40, generator=torch.Generator().manual_seed(4))),
    "ReceptiveField": lambda: nv.receptive_field(tiny_cnn(), "conv2", _image()),
}


@pytest.mark.parametrize("kind", list(RESULTS))
def test_every_result_type_round_trips_bit_for_bit(kind, tmp_path):
    result = RESULTS[kind]()
    assert type(result).__name__ == kind
    path = result.save(tmp_path / "result.nvz", model=tiny_cnn())
    assert path == tmp_path / "result.nvz" and path.exists()  # the name as given, no suffix added
    back = nv.load(path)
    same(result, back, kind)
    assert type(back).load(path) is not back  # the class's own load reads it too
    header = archive.read_header(path)
    assert header["type"] == kind and header["format_version"] == FORMAT_VERSION
    assert header["model"] == {"class": "Sequential", "fingerprint": weights_fingerprint(tiny_cnn())}
    assert header["neuronviz"]


def test_every_public_result_class_is_registered():
    public = [getattr(nv, n) for n in nv.__all__]
    results = [c for c in public if isinstance(c, type) and dataclasses.is_dataclass(c)]
    assert results, "no result classes found in nv.__all__"
    names = set(archive.registered().values())
    assert [c.__name__ for c in results if c not in names] == []
    assert all(hasattr(c, "save") for c in results)
    assert set(RESULTS) >= {c.__name__ for c in results}  # each one has a round-trip case above


def test_scores_header_records_the_settings_that_produced_them(tmp_path):
    scores = _scores()
    _obj, header = archive.read(scores.save(tmp_path / "s.nvz", settings={"note": "run 1"}))
    s = header["settings"]
    assert s["perturbation"] == scores.perturbation and s["seed"] == 0 and s["target"] == scores.target
    assert s["layers"] == ["conv1", "conv2"] and s["n_samples"] == 6 and s["note"] == "run 1"
    assert header["model"] is None  # no model given
    raw = json.loads(np.load(tmp_path / "s.nvz", allow_pickle=False)["header"].tobytes())
    assert raw["settings"]["perturbation"]["$obj"]["type"] == "perturb.Occlusion"  # readable JSON


def test_values_keep_their_types_dtypes_order_and_aliasing(tmp_path):
    t = torch.tensor([1.0, float("nan"), -0.0, float("inf")])
    value = {
        "t": t, "same": t, "b": torch.tensor([True, False]), "h": torch.randn(3).half(),
        "bf": torch.randn(4).bfloat16(), "i": torch.arange(5, dtype=torch.int16),
        "c": torch.randn(2, dtype=torch.cfloat),
        "0d": torch.tensor(3.5), "empty": torch.zeros(0, 4), "view": torch.arange(12.0).reshape(3, 4)[:, 1],
        "np": np.array([[1, 2]], dtype=np.uint8), "npb": np.array([True]), "np32": np.float32(2.5), "npi": np.int64(7),
        "floats": [math.nan, math.inf, -math.inf, -0.0, 1e-310], "tuple": (1, "a", None), 3: "int key",
        "$odd": 1, "od": OrderedDict([("z", 1), ("a", 2)]), "set": {1, 2}, "fs": frozenset({"x"}), "cx": 1 + 2j,
        "bytes": b"\x00\xff", "dtype": torch.float16, "device": torch.device("cpu"), "size": torch.Size([2, 3]),
        "big": 2**70, "nested": {"k": [{"x": (torch.ones(1),)}]},
    }
    if hasattr(torch, "float8_e4m3fn"):
        value["f8"] = torch.randn(3).to(torch.float8_e4m3fn)
    archive.save(tmp_path / "v.nvz", value)
    back = nv.load(tmp_path / "v.nvz")
    same({k: v for k, v in value.items() if k not in ("set", "fs", "f8")},
         {k: v for k, v in back.items() if k not in ("set", "fs", "f8")})
    assert back["set"] == {1, 2} and back["fs"] == frozenset({"x"})
    assert back["same"] is back["t"]  # one tensor saved once, one object back
    if "f8" in value:
        assert back["f8"].dtype == value["f8"].dtype and torch.equal(back["f8"].view(torch.uint8),
                                                                     value["f8"].view(torch.uint8))


def test_a_gpu_or_grad_tensor_is_saved_detached_from_the_cpu(tmp_path):
    p = torch.nn.Parameter(torch.randn(3))
    archive.save(tmp_path / "p.nvz", {"p": p})
    back = nv.load(tmp_path / "p.nvz")["p"]
    assert type(back) is torch.Tensor and not back.requires_grad and torch.equal(back, p.detach())


@pytest.mark.parametrize("bad, what", [
    (lambda x: x, "function"),
    (tiny_cnn(), "model"),
    (torch.utils.data.DataLoader(torch.zeros(4, 1)), "data loader"),
    (np.array([object()], dtype=object), "object array"),
    (object(), "unregistered class"),
])
def test_non_data_is_refused_naming_the_field(bad, what, tmp_path):
    scores = _scores()
    scores.maps = {"conv1": bad}  # type: ignore[dict-item]
    with pytest.raises(nv.NeuronvizError, match=r"NeuronScores\.maps\['conv1'\]") as err:
        scores.save(tmp_path / "bad.nvz")
    assert what.split()[0] in str(err.value)
    assert not (tmp_path / "bad.nvz").exists() and list(tmp_path.iterdir()) == []  # no half-written file


def test_an_unregistered_perturbation_is_refused_with_how_to_register_it(tmp_path):
    @dataclasses.dataclass
    class Mine(nv.perturb.Perturbation):
        scale: float = 1.0

    scores = _scores()
    scores.perturbation = Mine()
    with pytest.raises(nv.NeuronvizError, match=r"perturbation.*archived\('Mine'\)"):
        scores.save(tmp_path / "s.nvz")


def test_a_dropped_field_comes_back_as_its_default(tmp_path):
    rf = nv.receptive_field(tiny_cnn(), "conv2", _image(), method="gradient")
    assert rf._probe is not None  # holds the model: not data
    rf.measure([0, 5])
    back = nv.load(rf.save(tmp_path / "rf.nvz"))
    assert back._probe is None and back._boxes == rf._boxes and back.box(5) == rf.box(5)


def test_weights_fingerprint_follows_the_weights_and_buffers_only():
    a, b = tiny_cnn(seed=0), tiny_cnn(seed=0)
    assert weights_fingerprint(a) == weights_fingerprint(b) and weights_fingerprint(a).startswith("sha256:")
    b.eval()  # the mode is not a weight
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b.fc.bias[0] += 1e-7
    assert weights_fingerprint(a) != weights_fingerprint(b)
    c = tiny_cnn(seed=0)
    c.bn2.running_mean[0] += 1.0
    assert weights_fingerprint(a) != weights_fingerprint(c)
    d = tiny_cnn(seed=0).double()
    assert weights_fingerprint(a) != weights_fingerprint(d)  # same values, other dtype
    with pytest.raises(nv.NeuronvizTypeError, match="torch.nn.Module"):
        weights_fingerprint(lambda x: x)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# files that must be refused


@pytest.fixture
def saved(tmp_path) -> Path:
    return _scores().save(tmp_path / "scores.nvz")


def test_a_damaged_file_is_refused_as_damaged(saved):
    data = bytearray(saved.read_bytes())
    refused = 0
    for offset in range(60, len(data) - 30, max(1, len(data) // 25)):  # flip a byte at places across the file
        bad = bytearray(data)
        bad[offset] ^= 0xFF
        saved.write_bytes(bytes(bad))
        try:
            nv.load(saved)
        except nv.NeuronvizError as err:
            refused += 1
            assert "damaged" in str(err) or "truncated" in str(err) or "not a neuronviz" in str(err), str(err)
    assert refused >= 20  # zip's CRC-32 catches a flipped byte in any array or the header


def test_a_truncated_file_is_refused(saved):
    data = saved.read_bytes()
    for size in (len(data) // 2, len(data) - 10, 10, 0):
        saved.write_bytes(data[:size])
        with pytest.raises(nv.NeuronvizError, match="damaged|truncated|empty"):
            nv.load(saved)


def _rewrite(path: Path, change: Callable[[dict, dict], None]) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["header"].tobytes())
    change(header, arrays)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with path.open("wb") as f:
        np.savez(f, **arrays)


def test_a_file_from_a_newer_format_version_is_refused_saying_so(saved):
    _rewrite(saved, lambda h, a: h.update(format_version=FORMAT_VERSION + 1, neuronviz="9.0"))
    with pytest.raises(nv.NeuronvizError, match=rf"format version {FORMAT_VERSION + 1}.*9\.0.*upgrade neuronviz"):
        nv.load(saved)


def test_an_unknown_type_is_refused_and_nothing_is_imported(saved):
    def rename(h: dict, _a: dict) -> None:
        h["value"]["$obj"]["type"] = "os.system"

    _rewrite(saved, rename)
    with pytest.raises(nv.NeuronvizError, match=r"unknown type 'os\.system'"):
        nv.load(saved)


def test_a_missing_array_is_refused_naming_it(saved):
    def drop(h: dict, a: dict) -> None:
        name = h["value"]["$obj"]["fields"]["outputs"]["$tensor"]["array"]
        del a[name]

    _rewrite(saved, drop)
    with pytest.raises(nv.NeuronvizError, match=r"array 'a\d+' .*missing"):
        nv.load(saved)


def test_an_array_of_the_wrong_dtype_is_refused(saved):
    def retype(h: dict, a: dict) -> None:
        name = h["value"]["$obj"]["fields"]["outputs"]["$tensor"]["array"]
        a[name] = a[name].astype(np.int64)

    _rewrite(saved, retype)
    with pytest.raises(nv.NeuronvizError, match="damaged"):
        nv.load(saved)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    (tmp_path / "x.nvz").write_text("hello")
    with pytest.raises(nv.NeuronvizError, match="not a neuronviz archive"):
        nv.load(tmp_path / "x.nvz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(nv.NeuronvizError, match="no header"):
        nv.load(tmp_path / "plain.npz")
    with pytest.raises(nv.NeuronvizError, match="no such file"):
        nv.load(tmp_path / "missing.nvz")


class _Payload:
    """Unpickling this creates the file ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_is_refused_and_its_code_never_runs(saved, tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists()  # the payload does run when unpickled: the test below can fail

    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)

    # 1. an object array inside a valid-looking archive, named where a tensor is expected
    def plant(h: dict, a: dict) -> None:
        name = h["value"]["$obj"]["fields"]["outputs"]["$tensor"]["array"]
        a[name] = payload

    with np.load(saved, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["header"].tobytes())
    plant(header, arrays)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with saved.open("wb") as f:
        np.savez(f, allow_pickle=True, **arrays)
    with pytest.raises(nv.NeuronvizError, match="pickle"):
        nv.load(saved)
    assert not marker.exists()

    # 2. the pickled object array as the header itself
    with (tmp_path / "header.nvz").open("wb") as f:
        np.savez(f, allow_pickle=True, header=payload)
    with pytest.raises(nv.NeuronvizError, match="pickle"):
        nv.load(tmp_path / "header.nvz")
    assert not marker.exists()

    # 3. a crafted .npy member: a valid npy header saying dtype object, then pickle bytes
    with zipfile.ZipFile(tmp_path / "crafted.nvz", "w") as z:
        z.writestr("header.npy", _npy_bytes(np.frombuffer(b'{"format":"neuronviz-archive"}', dtype=np.uint8)))
        head = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
        head = head + " " * (118 - len(head)) + "\n"
        z.writestr("a0.npy", b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode()
                   + pickle.dumps(payload[0]))
    with pytest.raises(nv.NeuronvizError):
        nv.load(tmp_path / "crafted.nvz")
    assert not marker.exists()

    # 4. a plain pickle file under the archive's name
    (tmp_path / "raw.nvz").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(nv.NeuronvizError, match="pickle"):
        nv.load(tmp_path / "raw.nvz")
    assert not marker.exists()


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_a_crafted_object_member_referenced_by_a_valid_header_is_refused_as_pickle(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    header = {"format": "neuronviz-archive", "format_version": 1, "type": "x",
              "value": {"$tensor": {"array": "a0", "dtype": "float32"}}}
    with zipfile.ZipFile(tmp_path / "crafted.nvz", "w") as z:
        z.writestr("header.npy", _npy_bytes(np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)))
        z.writestr("a0.npy", _npy_bytes_pickled(payload))
    with pytest.raises(nv.NeuronvizError, match="pickle"):
        nv.load(tmp_path / "crafted.nvz")
    assert not marker.exists()


def _npy_bytes_pickled(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()
