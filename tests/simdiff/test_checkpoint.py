from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from simdiff import checkpoint as C
from simdiff.errors import CheckpointError


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model/w": torch.randn(4, 3, generator=g),
        "model/half": torch.randn(5, generator=g).half(),
        "counts": torch.arange(7),
        "scalar": torch.tensor(3.5),
        "mask": torch.tensor([True, False]),
        "view": torch.randn(6, 6, generator=g)[:, ::2],          # non-contiguous is stored as a copy
    }


def test_round_trip_preserves_values_dtypes_and_meta(tmp_path):
    ts = _tensors()
    meta = {"config": {"lr": 1e-3, "dims": [1, 2]}, "note": "x"}
    path = C.save_checkpoint(tmp_path / "ck", ts, meta)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "weights.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]                 # no temp dirs left behind
    back, m = C.load_checkpoint(path)
    assert set(back) == set(ts)
    for k, v in ts.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert m["config"] == meta["config"] and m["note"] == "x" and m["format_version"] == C.FORMAT_VERSION
    raw = (path / "weights.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and header_len < len(raw)                           # safetensors, not a pickle
    assert C.read_meta(path) == m


def test_save_replaces_previous_checkpoint_atomically(tmp_path):
    C.save_checkpoint(tmp_path / "ck", {"a": torch.zeros(2)}, {"step": 1})
    C.save_checkpoint(tmp_path / "ck", {"a": torch.ones(2)}, {"step": 2})
    back, meta = C.load_checkpoint(tmp_path / "ck")
    assert meta["step"] == 2 and torch.equal(back["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    # A save killed between its two renames leaves only ".ck.old": loading falls back to it.
    (tmp_path / "ck").rename(tmp_path / ".ck.old")
    assert C.resolve_checkpoint_dir(tmp_path / "ck") == tmp_path / ".ck.old"
    assert C.load_checkpoint(tmp_path / "ck")[1]["step"] == 2
    # ... and the next save takes over cleanly.
    C.save_checkpoint(tmp_path / "ck", {"a": torch.full((2,), 3.0)}, {"step": 3})
    assert C.load_checkpoint(tmp_path / "ck")[1]["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        C.load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        C.load_checkpoint(tmp_path / "empty")
    path = C.save_checkpoint(tmp_path / "ck", _tensors(), {})
    weights = path / "weights.safetensors"
    good = weights.read_bytes()

    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=rf"truncated or altered weights file: expected {len(good)} bytes"):
        C.load_checkpoint(path)
    flipped = bytearray(good)
    flipped[-3] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt weights file .SHA-256"):
        C.load_checkpoint(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="weights file is missing"):
        C.load_checkpoint(path)
    weights.write_bytes(good)
    assert C.load_checkpoint(path)[0].keys() == _tensors().keys()

    meta_path = path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 999}))
    with pytest.raises(CheckpointError, match="format version 999 is not supported; expected version 1"):
        C.load_checkpoint(path)
    meta_path.write_text('{"format_version": 1, "weights_')
    with pytest.raises(CheckpointError, match="corrupt metadata, not valid JSON"):
        C.load_checkpoint(path)
    meta_path.write_text("{}")
    with pytest.raises(CheckpointError, match="not a simdiff checkpoint"):
        C.load_checkpoint(path)


def test_save_rejects_reserved_keys_and_non_tensors(tmp_path):
    with pytest.raises(ValueError, match=r"keys \['format_version'\] are reserved"):
        C.save_checkpoint(tmp_path / "ck", {}, {"format_version": 3})
    with pytest.raises(TypeError, match="expected a mapping str -> Tensor"):
        C.save_checkpoint(tmp_path / "ck", {"a": [1.0]}, {})
    assert not (tmp_path / "ck").exists()


def test_check_compatible_lists_every_differing_key():
    meta = {"config": {"lr": 1e-3, "model": {"hidden": 64, "depth": 3}, "betas": [0.9, 0.99], "old": 1}}
    C.check_compatible(meta, {"lr": 1e-3, "model": {"hidden": 64, "depth": 3}, "betas": (0.9, 0.99), "old": 1})
    expected = {"lr": 2e-3, "model": {"hidden": 128, "depth": 3}, "betas": [0.9, 0.99], "new": True}
    with pytest.raises(CheckpointError) as info:
        C.check_compatible(meta, expected)
    msg = str(info.value)
    assert "lr: checkpoint has 0.001, expected 0.002" in msg
    assert "model.hidden: checkpoint has 64, expected 128" in msg
    assert "new: missing in checkpoint, expected True" in msg
    assert "old: checkpoint has 1, not in the expected config" in msg
    assert "depth" not in msg and "betas" not in msg
    C.check_compatible(meta, {**meta["config"], "lr": 5.0}, ignore=("lr",))
    with pytest.raises(CheckpointError, match="no 'config' mapping"):
        C.check_compatible({}, {})


def test_pack_state_round_trips_nested_structures():
    state = {"state": {0: {"step": torch.tensor(3.0), "buf": torch.ones(2)}, 1: {}},
             "groups": [{"betas": (0.9, 0.999), "lr": 1e-3, "params": [0, 1], "name": None}],
             "__weird": "x", "flag": True}
    tensors, skel = C.pack_state("opt", state)
    assert set(tensors) == {"opt/state/0/step", "opt/state/0/buf"}
    back = C.unpack_state(json.loads(json.dumps(skel)), tensors)                 # survives JSON
    assert back["groups"] == state["groups"] and isinstance(back["groups"][0]["betas"], tuple)
    assert back["__weird"] == "x" and back["flag"] is True and list(back["state"]) == [0, 1]
    assert torch.equal(back["state"][0]["buf"], torch.ones(2))
    with pytest.raises(TypeError, match="cannot store set .* without pickling"):
        C.pack_state("x", {"a": {1, 2}})
    with pytest.raises(CheckpointError, match="missing tensor 'opt/state/0/buf'"):
        C.unpack_state(skel, {"opt/state/0/step": torch.tensor(3.0)})


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _steps(net: nn.Module, opt: torch.optim.Optimizer, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        loss = net(torch.randn(16, 3, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_optimizer_and_ema_state_restore_exactly(tmp_path, one_thread):
    torch.manual_seed(0)
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    _steps(net, opt, 5, seed=1)
    ema = copy.deepcopy(net)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    opt_t, opt_skel = C.optimizer_to_tensors("optimizer", opt)
    tensors = {**C.module_tensors("model", net), **C.module_tensors("ema", ema), **opt_t}
    C.save_checkpoint(tmp_path / "ck", tensors, {"optimizer": opt_skel})

    torch.manual_seed(123)
    net2, ema2 = _net(), _net()
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.5)
    loaded, meta = C.load_checkpoint(tmp_path / "ck")
    C.load_module_tensors(net2, "model", loaded)
    C.load_module_tensors(ema2, "ema", loaded)
    C.load_optimizer_tensors(opt2, meta["optimizer"], loaded)
    for a, b in zip(ema.state_dict().values(), ema2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]                             # lr, betas tuple, wd, ...
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(v, s2["state"][k][name]), (k, name)
    # Continuing from the restored state is bit-identical to continuing the original.
    _steps(net, opt, 3, seed=2)
    _steps(net2, opt2, 3, seed=2)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    C.load_weights(ema2, tmp_path / "ck", prefix="ema")
    with pytest.raises(CheckpointError, match="does not fit Sequential"):
        C.load_module_tensors(nn.Sequential(nn.Linear(3, 4)), "model", loaded)
    with pytest.raises(CheckpointError, match=r"no tensors under 'nope/' \(found prefixes: \['ema', 'model', "
                                              r"'optimizer'\]\)"):
        C.load_module_tensors(net2, "nope", loaded)
