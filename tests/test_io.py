"""Tests of rnnfast.io: round trips, exact resume, atomic writes (failure injection and SIGKILL),
and rejection of truncated, corrupt, wrong-version, malicious and pickle-carrying files."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnfast.io as rio
from rnnfast.io import Checkpoint, CheckpointError, load, rng_from_state, rng_state, save
from rnnfast.optim import Adam, CosineAnnealingLR, LinearWarmup, ReduceLROnPlateau

__all__: list[str] = []


class TinyRNN:
    """Stand-in for an rnnfast module: state_dict, load_state_dict (strict), config, parameters."""

    def __init__(
        self, input_size: int, hidden_size: int, dtype: str = "float64", seed: int = 0
    ) -> None:
        rng = np.random.default_rng(seed)
        self.input_size, self.hidden_size, self.dtype = input_size, hidden_size, dtype
        self._p = {
            "weight_ih_l0": rng.standard_normal((hidden_size, input_size)).astype(dtype),
            "weight_hh_l0": rng.standard_normal((hidden_size, hidden_size)).astype(dtype),
            "bias_ih_l0": rng.standard_normal(hidden_size).astype(dtype),
            "bias_hh_l0": rng.standard_normal(hidden_size).astype(dtype),
        }

    def parameters(self) -> dict[str, np.ndarray]:
        return self._p

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._p.items()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if set(d) != set(self._p):
            raise ValueError(f"state_dict: keys {sorted(d)} != {sorted(self._p)}")
        for k, v in d.items():
            if np.shape(v) != self._p[k].shape:
                raise ValueError(f"state_dict[{k!r}]: shape {np.shape(v)} != {self._p[k].shape}")
            self._p[k][...] = v

    def config(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "dtype": self.dtype}


def _grads(model: TinyRNN, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.parameters().items()}


def _trained(steps: int = 3):
    model = TinyRNN(3, 4)
    opt = Adam(model.parameters(), lr=0.05, amsgrad=True)
    sched = LinearWarmup(opt, 2, after=CosineAnnealingLR(opt, T_max=5))
    rng = np.random.default_rng(42)
    for _ in range(steps):
        opt.step(_grads(model, rng))
        sched.step()
    return model, opt, sched, rng


def _assert_nested_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype and a.shape == b.shape, (
            f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        )
        assert np.array_equal(a, b, equal_nan=True), f"{where}: arrays differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _assert_nested_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_nested_equal(x, y, f"{where}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} vs {b!r}"


# ------------------------------------------------------------------------------------ round trip


def test_round_trip_everything(tmp_path: Path) -> None:
    model, opt, sched, rng = _trained()
    meta = {
        "epoch": 2,
        "step": 300,
        "rng": rng_state(rng),
        "history": [{"loss": 0.5, "val": float("nan")}, {"loss": float("inf"), "lr": 1e-3}],
        "note": "ünïcode ✓",
        "flags": [True, None, -1],
    }
    extra = {
        "carried_h": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ids": np.array([3, 1], np.int64),
        "best/weight_ih_l0": np.ones((4, 3)),  # '/' namespaces names (the trainer uses it)
    }
    path = tmp_path / "ckpt.npz"
    save(path, model, opt, meta, scheduler=sched, extra_arrays=extra)
    ck = load(path)
    assert isinstance(ck, Checkpoint) and ck.version == rio.FORMAT_VERSION
    _assert_nested_equal(ck.model_state, model.state_dict(), "model_state")
    assert ck.model_config == model.config()
    assert ck.model_class == f"{__name__}:TinyRNN"
    _assert_nested_equal(ck.optimizer_state, opt.state_dict(), "optimizer_state")
    _assert_nested_equal(ck.scheduler_state, sched.state_dict(), "scheduler_state")
    _assert_nested_equal(ck.meta, meta, "meta")
    _assert_nested_equal(ck.extra_arrays, extra, "extra_arrays")
    # stored under readable names, and loadable without pickle by plain NumPy
    with np.load(path, allow_pickle=False) as z:
        assert "model/weight_hh_l0" in z.files and "optimizer/state/bias_ih_l0/exp_avg" in z.files
        np.testing.assert_array_equal(z["model/weight_ih_l0"], model.parameters()["weight_ih_l0"])


def test_resume_continues_exactly(tmp_path: Path) -> None:
    # uninterrupted: 3 steps, checkpoint, 4 more steps
    model, opt, sched, rng = _trained(3)
    path = tmp_path / "ckpt.npz"
    save(path, model, opt, {"step": 3, "rng": rng_state(rng)}, scheduler=sched)
    for _ in range(4):
        opt.step(_grads(model, rng))
        sched.step()
    # resumed from the file in "another process": rebuild everything from the checkpoint
    ck = load(path)
    model2 = ck.build_model(TinyRNN)
    opt2 = Adam(model2.parameters(), lr=999.0)
    sched2 = LinearWarmup(opt2, 2, after=CosineAnnealingLR(opt2, T_max=5))
    ck.restore_optimizer(opt2)
    ck.restore_scheduler(sched2)
    rng2 = rng_from_state(ck.meta["rng"])
    for _ in range(4):
        opt2.step(_grads(model2, rng2))
        sched2.step()
    assert opt2.lr == opt.lr
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(model2.parameters()[k], v, err_msg=k)


def test_plain_dict_model_and_plateau_state(tmp_path: Path) -> None:
    weights = {"weight_ih_l0": np.ones((2, 2), np.float32)}
    opt = Adam({"w": np.zeros(2)})
    plateau = ReduceLROnPlateau(opt)  # best = +inf must survive strict JSON
    save(tmp_path / "a.npz", weights, scheduler=plateau)
    ck = load(tmp_path / "a.npz")
    assert ck.model_config is None and ck.model_class is None and ck.optimizer_state is None
    assert ck.scheduler_state["best"] == math.inf
    raw = _read_raw(tmp_path / "a.npz")[0]
    assert "Infinity" not in json.dumps(raw) and raw["scheduler"]["best"] == {"__float__": "inf"}
    with pytest.raises(ValueError, match="no model config"):
        ck.build_model(TinyRNN)
    with pytest.raises(ValueError, match="no optimizer state"):
        ck.restore_optimizer(opt)


def test_build_model_never_imports_foreign_classes(tmp_path: Path) -> None:
    save(tmp_path / "m.npz", TinyRNN(2, 3))
    ck = load(tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="TinyRNN.*not an rnnfast class"):
        ck.build_model()
    ck.model_class = "os:system"
    with pytest.raises(CheckpointError, match="'os:system' is not an rnnfast class"):
        ck.build_model()


def _with_class(good: Path, dst: Path, spec: str, config: dict[str, Any]) -> Path:
    header, arrays = _read_raw(good)
    header["model"]["class"] = spec
    header["model"]["config"] = config
    _write_raw(dst, header, arrays)
    return dst


def test_checkpoint_never_runs_code_by_import_path(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attribute chains under rnnfast reached subprocess.Popen and zipfile.ZipFile: a crafted file
    ran a shell command or truncated a file. Only registered model classes are constructed."""
    import subprocess as sp

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a checkpoint started a process")

    monkeypatch.setattr(sp, "Popen", no_process)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cases = {
        "rnnfast.io:np.f2py.subprocess.Popen": {"args": ["sh", "-c", f"echo pwned > {victim}"]},
        "rnnfast.io:subprocess.Popen": {"args": ["true"]},
        "rnnfast.io:zipfile.ZipFile": {"file": str(victim), "mode": "w"},
        "rnnfast.modules:np.save": {"file": str(victim), "arr": 1},
        "rnnfast:io.save": {"path": str(victim), "model": {}},
        "rnnfast.modules:RNNBase": {"mode": "RNN", "input_size": 1, "hidden_size": 1},
        "rnnfast.modules:model_from_config": {"cfg": {"type": "Linear"}},
        "builtins:eval": {"source": "1"},
    }
    for i, (spec, config) in enumerate(cases.items()):
        path = _with_class(good, tmp_path / f"evil{i}.npz", spec, config)
        with pytest.raises(CheckpointError, match=re.escape(repr(spec))):
            load(path).build_model()
    assert victim.read_text() == "precious"


def test_builtin_classes_rebuild_from_their_recorded_class_string(tmp_path: Path) -> None:
    import rnnfast as rf

    models = {
        "SequenceModel": rf.build_model("lstm", 3, 4, 2, mode="many_to_one", seed=0),
        "RNN": rf.RNN(3, 4, nonlinearity="relu", seed=1),
        "LSTM": rf.LSTM(3, 4, num_layers=2, seed=2),
        "GRU": rf.GRU(3, 4, bidirectional=True, seed=3),
        "Linear": rf.Linear(3, 2, seed=4),
        "Embedding": rf.Embedding(7, 3, seed=5),
    }
    for name, m in models.items():
        path = tmp_path / f"{name}.npz"
        save(path, m)
        ck = load(path)
        assert ck.model_class == f"rnnfast.modules:{name}"  # what every version has written
        rebuilt = ck.build_model()
        assert type(rebuilt) is type(m) and rebuilt.config() == m.config()
        _assert_nested_equal(dict(rebuilt.state_dict()), dict(m.state_dict()), name)


def test_recorded_class_must_match_what_the_config_builds(good: Path, tmp_path: Path) -> None:
    import rnnfast as rf

    m = rf.build_model("gru", 2, 3, 1, mode="many_to_one", seed=0)
    save(tmp_path / "m.npz", m)
    header, arrays = _read_raw(tmp_path / "m.npz")
    header["model"]["class"] = "rnnfast.modules:LSTM"  # config still says SequenceModel
    _write_raw(tmp_path / "lie.npz", header, arrays)
    with pytest.raises(CheckpointError, match="records the class 'rnnfast.modules:LSTM'"):
        load(tmp_path / "lie.npz").build_model()
    header["model"]["class"] = "rnnfast.modules:SequenceModel"
    header["model"]["config"]["rnn"]["hidden_size"] = "many"
    _write_raw(tmp_path / "badcfg.npz", header, arrays)
    with pytest.raises(CheckpointError, match="model.config does not build"):
        load(tmp_path / "badcfg.npz").build_model()
    header["model"]["config"]["rnn"]["hidden_size"] = 5  # weights are for 3
    header["model"]["config"]["head"]["in_features"] = 5
    _write_raw(tmp_path / "badstate.npz", header, arrays)
    with pytest.raises(CheckpointError, match="model.state does not fit"):
        load(tmp_path / "badstate.npz").build_model()


def test_user_classes_are_built_only_when_registered(tmp_path: Path) -> None:
    save(tmp_path / "m.npz", TinyRNN(2, 3, seed=5))
    ck = load(tmp_path / "m.npz")
    spec = f"{__name__}:TinyRNN"
    with pytest.raises(CheckpointError, match=re.escape(repr(spec))):
        ck.build_model()
    ref = TinyRNN(2, 3, seed=5).state_dict()
    # one call: cls= (that class, whatever the file says) or classes= (looked up by the string)
    _assert_nested_equal(ck.build_model(TinyRNN).state_dict(), ref)
    _assert_nested_equal(ck.build_model(classes=[TinyRNN]).state_dict(), ref)
    _assert_nested_equal(ck.build_model(classes={spec: TinyRNN}).state_dict(), ref)
    with pytest.raises(CheckpointError, match=re.escape(repr(spec))):
        ck.build_model(classes={"other:Thing": TinyRNN})
    # process-wide: register_model_class (usable as a decorator; returns the class)
    import rnnfast as rf

    assert rf.register_model_class is rio.register_model_class
    try:
        assert rio.register_model_class(TinyRNN) is TinyRNN
        assert rio.register_model_class(TinyRNN) is TinyRNN  # again: a no-op
        assert rio.registered_model_classes()[spec] is TinyRNN
        _assert_nested_equal(ck.build_model().state_dict(), ref)
    finally:
        rio.unregister_model_class(TinyRNN)
    assert spec not in rio.registered_model_classes()
    with pytest.raises(CheckpointError, match="not an rnnfast class"):
        ck.build_model()


def test_register_model_class_refuses_misuse() -> None:
    import rnnfast as rf

    with pytest.raises(TypeError, match="cls: expected a class"):
        rio.register_model_class(TinyRNN(1, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no load_state_dict"):
        rio.register_model_class(dict)
    with pytest.raises(ValueError, match="rnnfast's own model class"):
        rio.register_model_class(TinyRNN, "rnnfast.modules:LSTM")
    assert rio.register_model_class(rf.LSTM) is rf.LSTM  # already known: fine
    with pytest.raises(TypeError, match="name: expected a non-empty str"):
        rio.register_model_class(TinyRNN, "")

    class Other(TinyRNN):
        pass

    try:
        rio.register_model_class(TinyRNN, "mine:Model")
        with pytest.raises(ValueError, match="already registered to"):
            rio.register_model_class(Other, "mine:Model")
    finally:
        rio.unregister_model_class("mine:Model")
    rio.unregister_model_class(rf.LSTM)  # rnnfast's own classes stay
    assert rio.registered_model_classes()["rnnfast.modules:LSTM"] is rf.LSTM


def test_rng_state_round_trip() -> None:
    for bg in (np.random.PCG64(7), np.random.MT19937(7), np.random.Philox(7)):
        rng = np.random.Generator(bg)
        rng.standard_normal(5)
        state = json.loads(json.dumps(rng_state(rng)))  # must be plain JSON
        a = rng.standard_normal(10)
        b = rng_from_state(state).standard_normal(10)
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="bit_generator"):
        rng_from_state({"bit_generator": "Evil"})


def _rng_case(name: str, edit: Any) -> dict[str, Any]:
    bg = {"PCG64": np.random.PCG64, "MT19937": np.random.MT19937, "Philox": np.random.Philox}[name]
    state = json.loads(json.dumps(rng_state(np.random.Generator(bg(1)))))
    edit(state)
    return state


@pytest.mark.parametrize(
    "state,match",
    [
        ({"bit_generator": "default_rng"}, "bit_generator"),  # a callable of np.random, not a BG
        ({"bit_generator": "BitGenerator"}, "bit_generator"),
        ({"bit_generator": ["PCG64"]}, "bit_generator"),
        (_rng_case("PCG64", lambda s: s["state"].update(inc=-1)), r"\['inc'\]"),
        (_rng_case("PCG64", lambda s: s["state"].update(inc=2**200)), r"\['inc'\]"),
        (_rng_case("PCG64", lambda s: s["state"].update(inc="1")), r"\['inc'\]"),
        (_rng_case("PCG64", lambda s: s.update(extra=1)), "keys"),
        (_rng_case("PCG64", lambda s: s.pop("uinteger")), "keys"),
        (_rng_case("MT19937", lambda s: s["state"]["key"].update(dtype="|O")), r"\['key'\]"),
        (_rng_case("MT19937", lambda s: s["state"]["key"].update(dtype="<f8")), r"\['key'\]"),
        (_rng_case("MT19937", lambda s: s["state"]["key"]["data"].pop()), r"\['key'\]"),
        (_rng_case("MT19937", lambda s: s["state"]["key"]["data"].__setitem__(0, 2**40)), "range"),
        (_rng_case("Philox", lambda s: s.update(buffer=[1, 2, 3, 4])), r"\['buffer'\]"),
        (_rng_case("Philox", lambda s: s.update(bit_generator="SFC64")), "keys"),
    ],
)
def test_rng_from_state_refuses_anything_but_a_bit_generator_state(
    state: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        rng_from_state(state)


def test_overwrite_replaces_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save(path, {"w": np.zeros(2)})
    os.chmod(path, 0o640)
    save(path, {"w": np.ones(2)})
    np.testing.assert_array_equal(load(path).model_state["w"], np.ones(2))
    assert (os.stat(path).st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"], "no temp files left behind"


# ------------------------------------------------------------------------------- save-side checks


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(model={"w": np.array([object()])}), TypeError, r"model.state_dict\(\)\['w'\].*dtype"),
        (dict(model={"a//b": np.zeros(1)}), ValueError, "a//b"),
        (dict(model={"w": np.zeros(1)}, extra_arrays={"../x": np.zeros(1)}), ValueError, r"\.\./x"),
        (
            dict(model={"w": np.zeros(1)}, optimizer={"a/b": np.zeros(1), "a": {"b": np.ones(1)}}),
            ValueError,
            "same path",
        ),
        (dict(model={"w": np.zeros(1)}, meta={"x": np.zeros(2)}), TypeError, "meta/x"),
        (dict(model={"w": np.zeros(1)}, meta={1: 2}), TypeError, "keys must be str"),
        (dict(model={"w": np.zeros(1)}, meta={"__ndarray__": "model/w"}), ValueError, "reserved"),
        (dict(model={"w": np.zeros(1)}, meta={"f": open}), TypeError, "meta/f"),
        (dict(model=object()), TypeError, "model"),
        (dict(model={"w": np.zeros(1)}, optimizer=42), TypeError, "optimizer"),
    ],
)
def test_save_rejects_unstorable(
    tmp_path: Path, kwargs: dict[str, Any], exc: type, match: str
) -> None:
    path = tmp_path / "x.npz"
    with pytest.raises(exc, match=match):
        save(path, **kwargs)
    assert not path.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- atomicity


def _good_old_checkpoint(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "ckpt.npz"
    old = np.full((3, 3), 7.0)
    save(path, {"w": old}, meta={"step": 1})
    return path, old


def test_failure_during_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, old = _good_old_checkpoint(tmp_path)
    before = path.read_bytes()

    def exploding_savez(file: Any, **arrays: Any) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(rio.np, "savez", exploding_savez)
    with pytest.raises(OSError, match="disk full"):
        save(path, {"w": np.zeros((3, 3))}, meta={"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    ck = load(path)
    np.testing.assert_array_equal(ck.model_state["w"], old)
    assert ck.meta == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"], "temp file must be removed"


def test_failure_at_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, old = _good_old_checkpoint(tmp_path)

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(rio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save(path, {"w": np.zeros((3, 3))})
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path).model_state["w"], old)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]


def test_interrupt_during_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, old = _good_old_checkpoint(tmp_path)
    real_savez = np.savez

    def interrupted(file: Any, **arrays: Any) -> None:
        real_savez(file, **arrays)
        raise KeyboardInterrupt  # Ctrl-C after the data, before fsync/rename

    monkeypatch.setattr(rio.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(path, {"w": np.zeros((3, 3))})
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path).model_state["w"], old)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]


def test_file_and_directory_are_fsynced_before_and_after_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        import stat

        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(rio.os, "fsync", fsync)
    monkeypatch.setattr(rio.os, "replace", replace)
    save(tmp_path / "c.npz", {"w": np.zeros(2)})
    assert events == ["fsync-file", "replace", "fsync-dir"], events


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from rnnfast.io import save
    path = sys.argv[1]
    w = np.zeros((64, 256))
    i = 0
    while True:
        i += 1
        w[...] = i
        save(path, {"w": w}, meta={"step": i})
        print(i, flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_while_checkpointing_leaves_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for kill_after in (3, 17, 40):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True
        )
        try:
            assert proc.stdout is not None
            for _ in range(kill_after):
                line = proc.stdout.readline()
                assert line, f"writer exited early (rc={proc.poll()})"
        finally:
            proc.send_signal(signal.SIGKILL)  # mid-write of the next checkpoint, most likely
            proc.wait(timeout=60)
            if proc.stdout is not None:
                proc.stdout.close()
        ck = load(path)  # the newest complete checkpoint: never a torn one
        step = ck.meta["step"]
        assert step >= kill_after
        assert np.all(ck.model_state["w"] == step), "arrays and metadata come from the same save"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.npz"]
    assert all(n.startswith(".rnnfast-") and n.endswith(".tmp") for n in leftovers), leftovers


# ----------------------------------------------------------------------- hostile / broken files


def _read_raw(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("__metadata__").tobytes().decode("utf-8"))
    return header, arrays


def _write_raw(
    path: Path, header: Any, arrays: dict[str, Any], *, meta_bytes: bytes | None = None
) -> None:
    """Write an archive by hand (not via rnnfast.io.save) to craft broken or hostile files.

    (np.savez pickles object arrays, which is how the hostile pickle test plants one.)"""
    blob = meta_bytes if meta_bytes is not None else json.dumps(header).encode("utf-8")
    payload = {"__metadata__": np.frombuffer(blob, dtype=np.uint8), **arrays}
    with open(path, "wb") as f:
        np.savez(f, **payload)


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    model, opt, sched, _ = _trained(2)
    path = tmp_path / "good.npz"
    save(path, model, opt, {"epoch": 1}, scheduler=sched)
    return path


def test_hand_written_file_loads(good: Path, tmp_path: Path) -> None:
    # sanity for the helpers below: rewriting the same content by hand gives a loadable file
    header, arrays = _read_raw(good)
    _write_raw(tmp_path / "same.npz", header, arrays)
    _assert_nested_equal(load(tmp_path / "same.npz").model_state, load(good).model_state)


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.3, 0.5, 0.9, 0.999])
def test_truncated(good: Path, tmp_path: Path, fraction: float) -> None:
    data = good.read_bytes()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="trunc.npz"):
        load(bad)


def test_corrupt_array_bytes_detected_by_crc(good: Path, tmp_path: Path) -> None:
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("model/weight_hh_l0.npy")
    # local header: 30 bytes + name + extra; the member's last byte is array data, not .npy header
    with open(good, "rb") as f:
        f.seek(info.header_offset + 26)
        n, m = np.frombuffer(f.read(4), dtype="<u2")
    data_end = info.header_offset + 30 + int(n) + int(m) + info.compress_size
    data[data_end - 3] ^= 0xFF
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model/weight_hh_l0"):
        load(bad)


def test_random_byte_flips_never_crash_or_mislead(good: Path, tmp_path: Path) -> None:
    """Any single flipped byte either raises CheckpointError or leaves content loadable and equal.

    (Some bytes -- zip timestamps, padding in .npy headers -- carry no content.)"""
    ref = load(good)
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    bad = tmp_path / "flip.npz"
    # every bit of 30 random bytes, plus every bit of the first local header (flags, method, sizes)
    positions = sorted(
        set(rng.choice(len(data), size=30, replace=False).tolist()) | set(range(4, 30))
    )
    for pos in positions:
        for bit in range(8):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            bad.write_bytes(bytes(flipped))
            try:
                ck = load(bad)
            except CheckpointError:
                continue
            _assert_nested_equal(ck.model_state, ref.model_state, f"flip at {pos}.{bit}")
            _assert_nested_equal(ck.meta, ref.meta, f"flip at {pos}.{bit}")
            _assert_nested_equal(ck.optimizer_state, ref.optimizer_state, f"flip at {pos}.{bit}")


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda h: h.update(version=2), "newer rnnfast"),
        (lambda h: h.update(version=0), "version"),
        (lambda h: h.update(version="1"), "version"),
        (lambda h: h.update(version=True), "version"),
        (lambda h: h.update(format="something-else"), "format"),
        (lambda h: h.pop("meta"), "missing keys"),
        (lambda h: h.update(surprise=1), "unexpected keys"),
        (lambda h: h["model"].update(state=[]), "model.state"),
        (lambda h: h["model"]["state"].update(evil={"__ndarray__": "nope"}), "not in the manifest"),
        (
            lambda h: h["model"]["state"].update(twice={"__ndarray__": "model/weight_ih_l0"}),
            "twice",
        ),
        (lambda h: h["model"]["state"].pop("bias_hh_l0"), "not referenced"),
        (lambda h: h["model"]["state"].update(x=3), "array reference"),
        (lambda h: h["arrays"]["model/weight_ih_l0"].update(shape=[4, 4]), "weight_ih_l0"),
        (lambda h: h["arrays"]["model/weight_ih_l0"].update(dtype="<f4"), "weight_ih_l0"),
        (lambda h: h["arrays"]["model/weight_ih_l0"].update(dtype="|O"), "allowed"),
        (lambda h: h["arrays"]["model/weight_ih_l0"].update(shape=[10**12]), "cannot hold"),
        (lambda h: h["arrays"]["model/weight_ih_l0"].update(shape=[-1, 3]), "shape"),
        (lambda h: h["arrays"].update({"ghost": {"dtype": "<f8", "shape": [1]}}), "ghost"),
        (lambda h: h["meta"].update(x={"__float__": "1e308"}), "malformed float"),
        (
            lambda h: h["meta"].update(x={"__ndarray__": "model/weight_ih_l0"}),
            "not in the manifest",
        ),
    ],
)
def test_bad_metadata(good: Path, tmp_path: Path, mutate, match: str) -> None:
    header, arrays = _read_raw(good)
    mutate(header)
    bad = tmp_path / "bad.npz"
    _write_raw(bad, header, arrays)
    with pytest.raises(CheckpointError, match=match):
        load(bad)


def test_extra_and_missing_members(good: Path, tmp_path: Path) -> None:
    header, arrays = _read_raw(good)
    bad = tmp_path / "bad.npz"
    _write_raw(bad, header, {**arrays, "smuggled": np.zeros(1)})
    with pytest.raises(CheckpointError, match="smuggled"):
        load(bad)
    arrays.pop("model/bias_ih_l0")
    _write_raw(bad, header, arrays)
    with pytest.raises(CheckpointError, match="missing from the archive"):
        load(bad)


@pytest.mark.parametrize(
    "blob,match",
    [
        (b"\xff\xfe not utf8", "UTF-8 JSON"),
        (b"{not json", "JSON"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100000, "JSON"),
    ],
)
def test_metadata_not_json(good: Path, tmp_path: Path, blob: bytes, match: str) -> None:
    _, arrays = _read_raw(good)
    bad = tmp_path / "bad.npz"
    _write_raw(bad, None, arrays, meta_bytes=blob)
    with pytest.raises(CheckpointError, match=match):
        load(bad)


def test_no_metadata_at_all(tmp_path: Path) -> None:
    bad = tmp_path / "plain.npz"
    np.savez(bad, w=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an rnnfast checkpoint"):
        load(bad)


class _Boom:
    def __reduce__(self) -> Any:
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_is_never_loaded(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_unpickling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle.load called while loading a checkpoint")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    # 1. a raw pickle file
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps({"w": _Boom()}))
    with pytest.raises(CheckpointError, match="not an .npz"):
        load(raw)
    # 2. an npz whose array member is a pickled object array, with a manifest claiming it is numeric
    header, arrays = _read_raw(good)
    obj = np.empty(header["arrays"]["model/bias_ih_l0"]["shape"], dtype=object)
    obj[...] = _Boom()
    arrays["model/bias_ih_l0"] = obj
    bad = tmp_path / "obj.npz"
    _write_raw(bad, header, arrays)
    with pytest.raises(CheckpointError, match="bias_ih_l0"):
        load(bad)
    # 3. a bare .npy file
    npy = tmp_path / "x.npz"
    np.save(npy.with_suffix(".npy"), np.zeros(3))
    os.replace(npy.with_suffix(".npy"), npy)
    with pytest.raises(CheckpointError, match="not an .npz"):
        load(npy)


@pytest.mark.parametrize("new_size", [2**32 - 1, 2**20, 1])
def test_zip_directory_lying_about_sizes(good: Path, tmp_path: Path, new_size: int) -> None:
    """A central directory that claims a member inflates to a different size (a zip-bomb trick,
    or corruption) is rejected before anything is allocated or decompressed."""
    data = bytearray(good.read_bytes())
    name = b"model/weight_hh_l0.npy"
    pos = 0
    while True:
        pos = data.index(b"PK\x01\x02", pos + 1)  # central directory entry
        n = int.from_bytes(data[pos + 28 : pos + 30], "little")
        if bytes(data[pos + 46 : pos + 46 + n]) == name:
            break
    data[pos + 24 : pos + 28] = new_size.to_bytes(4, "little")  # "uncompressed size"
    bad = tmp_path / "lying.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="weight_hh_l0"):
        load(bad)


def test_compressed_members_are_refused(good: Path, tmp_path: Path) -> None:
    """save never compresses; a deflated member is refused before anything is decompressed."""
    header, arrays = _read_raw(good)
    blob = json.dumps(header).encode("utf-8")
    path = tmp_path / "z.npz"
    np.savez_compressed(path, __metadata__=np.frombuffer(blob, dtype=np.uint8), **arrays)
    with pytest.raises(CheckpointError, match="compressed"):
        load(path)


def test_decompression_bomb_is_refused_without_inflating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crafted file: a consistent manifest declaring a 64 MiB array whose member is 64 KiB of
    deflated zeros (~1000x). Nothing may be inflated (zlib is never asked to decompress)."""
    import zlib

    n = 8 * 2**20  # float64 elements: 64 MiB
    header = {
        "format": "rnnfast-checkpoint",
        "version": 1,
        "numpy_version": np.__version__,
        "model": {"class": None, "config": None, "state": {"w": {"__ndarray__": "model/w"}}},
        "optimizer": None,
        "scheduler": None,
        "meta": {},
        "extra_arrays": {},
        "arrays": {"model/w": {"dtype": "<f8", "shape": [n]}},
    }
    path = tmp_path / "bomb.npz"
    meta = _npy(np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    with zipfile.ZipFile(path, "w") as zf:  # zeros streamed through the compressor
        zf.writestr("__metadata__.npy", meta)
        info = zipfile.ZipInfo("model/w.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as dst:
            dst.write(_npy_header(np.dtype("<f8"), (n,)))
            chunk = bytes(2**20)
            for _ in range(8 * n // len(chunk)):
                dst.write(chunk)
    assert path.stat().st_size < 2**20, "the bomb should be small on disk"

    def no_inflate(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a compressed member was decompressed")

    monkeypatch.setattr(zlib, "decompressobj", no_inflate)
    with pytest.raises(CheckpointError, match="model/w.npy.*compressed"):
        load(path)


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype.str, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def test_deeply_nested_metadata_is_a_checkpoint_error(good: Path, tmp_path: Path) -> None:
    """700+ levels gave RecursionError (decoding after a successful json.loads)."""
    header, arrays = _read_raw(good)
    bad = tmp_path / "deep.npz"
    base = json.dumps(header)
    for depth in (150, 700, 990, 5000):
        # an otherwise valid checkpoint with meta = {"deep": [[[...]]]}
        blob = base.replace('"meta": {', '"meta": {"deep": ' + "[" * depth + "]" * depth + ", ", 1)
        _write_raw(bad, None, arrays, meta_bytes=blob.encode())
        with pytest.raises(CheckpointError, match="nested|JSON"):
            load(bad)


def test_save_refuses_metadata_load_would_refuse(tmp_path: Path) -> None:
    deep: Any = 1
    for _ in range(rio.MAX_METADATA_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper than"):
        save(tmp_path / "d.npz", {"w": np.zeros(2)}, meta={"x": deep})
    assert not list(tmp_path.iterdir())
    ok: Any = 1
    for _ in range(rio.MAX_METADATA_DEPTH - 5):
        ok = [ok]
    save(tmp_path / "ok.npz", {"w": np.zeros(2)}, meta={"x": ok})
    assert load(tmp_path / "ok.npz").meta["x"] == ok


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_refused_before_open_can_block(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    result: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            load(fifo)
            result["exc"] = None
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout=30)
    if t.is_alive():  # blocked in open(): unblock it by opening the write end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(timeout=30)
        pytest.fail("load blocked opening a FIFO")
    assert isinstance(result["exc"], CheckpointError), result
    assert "FIFO" in str(result["exc"]) and str(fifo) in str(result["exc"])


@pytest.mark.parametrize("kind", ["directory", "device"])
def test_special_files_are_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path if kind == "directory" else Path("/dev/zero")
    if not path.exists():
        pytest.skip(f"no {path}")
    with pytest.raises(CheckpointError, match=f"is a {kind}"):
        load(path)


def test_save_accepts_the_longest_file_name(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    name = "c" * (min(limit, 255) - 4) + ".npz"
    save(tmp_path / name, {"w": np.arange(3.0)}, meta={"n": len(name)})
    save(tmp_path / name, {"w": np.arange(4.0)}, meta={"n": len(name)})  # and over an old one
    ck = load(tmp_path / name)
    assert ck.meta["n"] == len(name) and ck.model_state["w"].shape == (4,)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError):
        load(tmp_path)


# --------------------------------------------------------------------------------- fit resume


def _fit_run(path: Path, *, epochs: int, resume: bool = False, **kw: Any) -> Any:
    import rnnfast as rf

    mode = "many_to_many" if kw.get("bptt") or kw.get("stateful") else "many_to_one"
    m = rf.build_model("gru", 2, 3, 1, mode=mode, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8, 2)).astype(np.float32)
    y = rng.standard_normal((6, 8, 1) if mode == "many_to_many" else (8, 1)).astype(np.float32)
    kw.setdefault("batch_size", 4)
    return rf.fit(
        m,
        (x, y),
        rf.MSELoss(),
        rf.Adam(m.parameters(), lr=0.01),
        epochs=epochs,
        checkpoint=path,
        resume=resume,
        progress=False,
        seed=0,
        **kw,
    )


def _tamper_fit(src: Path, dst: Path, edit: Any, extra: dict[str, Any] | None = None) -> Path:
    ck = load(src)
    meta = json.loads(json.dumps(ck.meta, allow_nan=True))  # a deep copy
    edit(meta["fit"])
    save(
        dst,
        ck.model_state,
        ck.optimizer_state,
        meta,
        scheduler=ck.scheduler_state,
        extra_arrays={**ck.extra_arrays, **(extra or {})},
    )
    return dst


@pytest.fixture(scope="module")
def fit_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fit") / "ck.npz"
    _fit_run(path, epochs=2)
    return path


@pytest.mark.parametrize(
    "edit,extra,key",
    [
        (lambda f: f["pos"].update(epoch=-5), None, "fit.pos.epoch"),  # trained ~for ever before
        (lambda f: f["pos"].update(epoch="2"), None, "fit.pos.epoch"),
        (lambda f: f["pos"].update(epoch=True), None, "fit.pos.epoch"),
        (lambda f: f["pos"].update(step=-1), None, "fit.pos.step"),
        (lambda f: f["pos"].update(batch=99), None, "fit.pos.batch"),
        (lambda f: f["pos"].update(chunk=3), None, "fit.pos.chunk"),
        (lambda f: f.update(pos=[0, 0, 0, 0]), None, "fit.pos"),
        (lambda f: f["pos"].update(batch=1), None, "extra_arrays['order']"),
        (lambda f: f["pos"].update(batch=1), {"order": np.zeros(8, np.int64)}, "order"),
        (lambda f: f["pos"].update(batch=1), {"order": np.arange(7)}, "order"),
        (lambda f: f["pos"].update(batch=1), {"order": np.arange(8.0)}, "order"),
        (lambda f: f.update(history={}), None, "fit.history"),
        (lambda f: f["history"].pop(), None, "fit.history"),
        (lambda f: f["history"][1].update(epoch=7), None, "fit.history[1]"),
        (lambda f: f["history"][0].update(loss="low"), None, "fit.history[0]"),
        (lambda f: f["acc"].update(n=-3.0), None, "fit.acc['n']"),
        (lambda f: f["acc"].update(updates=float("inf")), None, "fit.acc['updates']"),
        (lambda f: f["acc"].update(loss="x"), None, "fit.acc['loss']"),
        (lambda f: f.update(acc=[1]), None, "fit.acc"),
        (lambda f: f.update(best_loss="low"), None, "fit.best_loss"),
        (lambda f: f.update(best_loss=float("nan")), None, "fit.best_loss"),
        (lambda f: f["data_rng"].update(bit_generator="default_rng"), None, "fit.data_rng"),
        (lambda f: f["model_rng"]["state"].update(inc=-1), None, "fit.model_rng"),
        (lambda f: f.pop("data_rng"), None, "fit.data_rng"),
        (lambda f: f.update(stream_ints={"batch": "x"}), None, "fit.stream_ints"),
    ],
)
def test_resume_validates_the_recorded_state(
    fit_ckpt: Path, tmp_path: Path, edit: Any, extra: Any, key: str
) -> None:
    path = _tamper_fit(fit_ckpt, tmp_path / "t.npz", edit, extra)
    with pytest.raises(CheckpointError, match=re.escape(key)) as info:
        _fit_run(path, epochs=3, resume=True)
    assert str(path) in str(info.value)


def test_resume_validates_early_stopping_state(fit_ckpt: Path, tmp_path: Path) -> None:
    import rnnfast as rf

    path = _tamper_fit(
        fit_ckpt, tmp_path / "t.npz", lambda f: f.update(early_stopping={"wait": -1, "best": 1.0})
    )
    with pytest.raises(CheckpointError, match=re.escape("fit.early_stopping.wait")):
        _fit_run(path, epochs=3, resume=True, early_stopping=rf.EarlyStopping(patience=2))


def test_untampered_resume_still_works(fit_ckpt: Path, tmp_path: Path) -> None:
    path = _tamper_fit(fit_ckpt, tmp_path / "t.npz", lambda f: None)
    hist = _fit_run(path, epochs=3, resume=True)
    assert [e["epoch"] for e in hist.epochs] == [1, 2, 3]


@pytest.mark.parametrize(
    "first,second,key,values",
    [
        ({"batch_size": 4}, {"batch_size": 2}, "batch_size", ("batch_size=4", "batch_size=2")),
        ({"bptt": (2, 4)}, {"bptt": (3, 6)}, "bptt", ("bptt=[2, 4]", "bptt=[3, 6]")),
        ({"bptt": (2, 4)}, {"stateful": True}, "bptt", ("bptt=[2, 4]", "bptt=None")),
        ({"stateful": True, "bptt": (6, 6)}, {"bptt": (6, 6)}, "stateful", ("True", "False")),
    ],
)
def test_resume_with_other_settings_is_refused(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any], key: str, values: tuple[str, str]
) -> None:
    path = tmp_path / "ck.npz"
    _fit_run(path, epochs=1, **first)
    with pytest.raises(ValueError, match=key) as info:
        _fit_run(path, epochs=2, resume=True, **second)
    for v in values:
        assert v in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------------
# fit checks its checkpoint paths before training (a bad path must not cost the epochs before it)
# --------------------------------------------------------------------------------------------------


def test_check_writable_accepts_a_new_file_and_returns_it(tmp_path: Path) -> None:
    target = tmp_path / "new.npz"
    assert rio.check_writable(target, "checkpoint") == str(target)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda d: d, "is a directory"),
        (lambda d: d / "missing" / "ck.npz", "does not exist"),
    ],
    ids=["directory", "missing-parent"],
)
def test_fit_refuses_a_bad_checkpoint_path_before_training(
    tmp_path: Path, make: Any, match: str
) -> None:
    calls: list[int] = []

    def count_epochs(epoch: int, logs: dict[str, Any]) -> None:
        calls.append(epoch)

    from rnnfast.training import LambdaCallback

    with pytest.raises(ValueError, match=rf"checkpoint: .*{match}"):
        _fit_run(make(tmp_path), epochs=2, callbacks=[LambdaCallback(on_epoch_begin=count_epochs)])
    assert calls == []  # refused before the first epoch began


def test_fit_refuses_a_best_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "ck.best.npz").mkdir()
    with pytest.raises(ValueError, match=r"checkpoint \(best model\): .*is a directory"):
        _fit_run(tmp_path / "ck.npz", epochs=1)
    assert not (tmp_path / "ck.npz").exists()
