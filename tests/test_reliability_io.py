"""Atomic outputs (a killed writer leaves no truncated file), safe loading (a crafted pickle is refused and its code
never runs), and the safetensors + JSON export of a trained explainer."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.algorithms.vit_shapley.export import export_explainer, load_explainer
from lit_xai.io import (
    AtomicCheckpointIO,
    atomic_open,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    safe_torch_load,
)
from lit_xai.models import backbone_from_checkpoint, load_state_dict

TINY_VIT = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2)

# A child process that writes OLD to the target, then starts writing a much longer NEW and is killed half way.
WRITER = textwrap.dedent(
    """
    import sys, time
    path, how = sys.argv[1], sys.argv[2]
    with open(path, "wb") as f:
        f.write(b"OLD" * 1000)
    if how == "atomic":
        from lit_xai.io import atomic_open
    writer = atomic_open(path, "wb") if how == "atomic" else open(path, "wb")
    handle = writer.__enter__()  # the block never ends: the process is killed inside it
    handle.write(b"NEW" * 1000)
    handle.flush()
    print("half written", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["atomic", "naive"])
def test_killing_a_writer_never_leaves_a_truncated_file(tmp_path, how):
    target = tmp_path / "results.json"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), how], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert child.stdout.readline().strip() == "half written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    if how == "atomic":
        assert target.read_bytes() == b"OLD" * 1000  # the previous complete file, untouched
    else:  # the control: a plain open() leaves the new file cut short, which is what the test would catch
        assert target.read_bytes() == b"NEW" * 1000


def start_writer(target: Path) -> subprocess.Popen:
    """A child process stopped half way through an atomic write of ``target`` (its temporary file exists)."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), "atomic"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=target.parent,
    )
    assert child.stdout.readline().strip() == "half written"
    return child


def test_the_next_write_removes_what_killed_writers_left_and_nothing_else(tmp_path):
    live = start_writer(tmp_path / "other.json")  # still writing: its temporary file must survive
    try:
        killed = start_writer(tmp_path / "results.json")
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
        (orphan,) = tmp_path.glob(".results.json.*.tmp")
        (held,) = tmp_path.glob(".other.json.*.tmp")
        # Another machine's temporaries (a shared file system), and those of an older lit_xai that did not name the
        # writer: a day-old one is stale, a fresh one may be live.
        old = [tmp_path / ".model.ckpt.pid12@node-7.abcd1234.tmp", tmp_path / ".best.ckpt.k3j2_x9a.tmp"]
        fresh = [tmp_path / ".model.ckpt.pid12@node-7.efgh5678.tmp", tmp_path / ".last.ckpt.0a1b2c3d.tmp"]
        for path in old + fresh:
            path.write_bytes(b"partial")
        two_days_ago = time.time() - 2 * 24 * 3600
        for path in old:
            os.utime(path, (two_days_ago, two_days_ago))

        atomic_write_text(tmp_path / "report.md", "new")  # any write into the folder cleans it

        assert not orphan.exists() and not any(path.exists() for path in old)
        assert held.exists() and all(path.exists() for path in fresh)
        assert (tmp_path / "results.json").read_bytes() == b"OLD" * 1000  # the target itself is untouched
        assert (tmp_path / "report.md").read_text() == "new"
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait(timeout=60)


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out" / "report.md"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["report.md"]
    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):
        pass


def test_atomic_files_get_the_permissions_of_a_plain_open(tmp_path):
    # The temporary file is created private (0600); the result must be as readable as open() would make it,
    # or results written on a shared machine cannot be read by the rest of the group.
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {})
        with open(tmp_path / "b.json", "w"):
            pass
    finally:
        os.umask(old)
    assert (
        (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644
    )


def test_atomic_checkpoint_io_round_trips_and_refuses_unsafe_loads(tmp_path):
    io = AtomicCheckpointIO()
    state = {"state_dict": {"w": torch.arange(4.0)}, "epoch": 3}
    io.save_checkpoint(state, tmp_path / "ckpts" / "last.ckpt")
    assert torch.equal(
        io.load_checkpoint(tmp_path / "ckpts" / "last.ckpt")["state_dict"]["w"], torch.arange(4.0)
    )
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["last.ckpt"]
    with pytest.raises(ValueError, match="weights_only=False"):
        io.load_checkpoint(tmp_path / "ckpts" / "last.ckpt", weights_only=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        io.load_checkpoint(tmp_path / "missing.ckpt")


class Payload:
    """Unpickling this object runs ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def crafted(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "colleague.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(2)}, "hyper_parameters": {"x": Payload(marker)}}, path)
    return path, marker


def test_crafted_pickle_is_refused_everywhere_and_never_runs(crafted):
    path, marker = crafted
    with pytest.raises(ValueError, match=r"refusing to load .*posix.system|nt.system"):
        safe_torch_load(path)
    with pytest.raises(ValueError, match="refusing to load"):
        AtomicCheckpointIO().load_checkpoint(path)
    for load in (load_state_dict, backbone_from_checkpoint, SurrogateModule, ExplainerModule):
        # The whole reason, on one line: torch names the refused global after a long preamble.
        with pytest.raises(ValueError, match=r"(safely|refusing).*GLOBAL (posix|nt)\.system") as refused:
            load(str(path))
        assert "\n" not in str(refused.value)
    with pytest.raises(Exception, match="Weights only load failed"):  # Lightning's loader, torch's default
        ExplainerModule.load_from_checkpoint(path)
    assert not marker.exists(), "the crafted checkpoint ran code"


def test_truncated_checkpoint_gets_a_clear_error(tmp_path):
    good = atomic_save({"w": torch.randn(1000)}, tmp_path / "good.ckpt")
    bad = tmp_path / "copied.ckpt"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        safe_torch_load(bad)


def test_legacy_format_checkpoint_is_read_even_when_mapping_is_asked(tmp_path):
    """The pre-1.6 (non-zip) format cannot be memory-mapped, but it is not corrupt: ``--ckpt_path`` reads it."""
    path = tmp_path / "legacy.ckpt"
    saved = {"state_dict": {"w": torch.randn(5)}, "epoch": 3}
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    for mmap in (False, True):  # train.py checks --ckpt_path with mmap=True
        loaded = safe_torch_load(path, mmap=mmap)
        assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], saved["state_dict"]["w"])
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        safe_torch_load(truncated, mmap=True)


def save_module(module: L.LightningModule, path: Path) -> str:
    state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save({**state, "pytorch-lightning_version": L.__version__}, path)
    return str(path)


@pytest.fixture(scope="module")
def explainer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    classifier = ClassifierModule("vit_tiny_patch16_224", 3, TINY_VIT)
    surrogate = SurrogateModule(save_module(classifier, tmp / "c.ckpt"))
    module = ExplainerModule(save_module(surrogate, tmp / "s.ckpt"), num_masks=4).eval()
    module.net.null_value(torch.randn(2, 1, 8, 8))  # fill the cached v(∅) as training does
    return module


def test_export_round_trip_gives_the_same_explanations(explainer, tmp_path):
    weights, config = export_explainer(explainer, tmp_path / "digits_explainer")
    assert (weights.name, config.name) == ("digits_explainer.safetensors", "digits_explainer.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.name, weights.name]  # no temporary left
    assert json.loads(config.read_text())["config"]["surrogate_spec"]["backbone_spec"]["num_classes"] == 3
    restored = load_explainer(config)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(restored.net.null, explainer.net.null)
    assert torch.allclose(restored.attribute(x), explainer.attribute(x), atol=1e-6)
    assert not restored.training


def test_export_errors_name_the_problem(explainer, tmp_path):
    weights, config = export_explainer(explainer, tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="side by side"):
        load_explainer(tmp_path / "other")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="safetensors"):
        load_explainer(config)
    export_explainer(explainer, tmp_path / "e")
    payload = json.loads(config.read_text())
    payload["config"]["head_kwargs"] = {"mlp_layers": 2}  # a different network than the weights
    config.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="does not match"):
        load_explainer(config)
    config.write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ValueError, match="not an exported ViT Shapley explainer"):
        load_explainer(config)
    with pytest.raises(ValueError, match="ExplainerModule"):
        export_explainer(ClassifierModule("mlp", 2, {"in_features": 3}), tmp_path / "c")


def test_export_command_reads_a_checkpoint_weights_only(explainer, tmp_path, crafted):
    from lit_xai.algorithms.vit_shapley.export import main as export_main

    checkpoint = save_module(explainer, tmp_path / "explainer.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    state["lit_xai_class_names"] = ["cat", "dog", "fox"]  # as ClassNamesInCheckpoint stores them
    torch.save(state, checkpoint)
    weights, config = export_main([checkpoint, str(tmp_path / "exported" / "digits")])
    assert weights.is_file() and config.is_file()
    assert json.loads(config.read_text())["class_names"] == ["cat", "dog", "fox"]
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(load_explainer(config).attribute(x), explainer.attribute(x), atol=1e-6)
    path, marker = crafted
    with pytest.raises(ValueError, match="safely"):
        export_main([str(path), str(tmp_path / "never")])
    assert not marker.exists() and not (tmp_path / "never.json").exists()
