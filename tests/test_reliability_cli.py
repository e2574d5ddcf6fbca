"""Bad input through train.py: each mistake a user can make gives one ``error:`` line naming the problem and the
fix, a non-zero exit, and no checkpoint. The cases are the rows of the README's troubleshooting table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.cli import main, user_errors_exit

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2)
FAST = ["--trainer.fast_dev_run=2", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def save_module(module: L.LightningModule, path: Path) -> str:
    """A checkpoint as train.py writes it: LightningCLI records the module's class path in its hyperparameters."""
    hparams = dict(module.hparams, _class_path=f"{type(module).__module__}.{type(module).__name__}")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, path)
    return str(path)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    classifier = save_module(ClassifierModule("vit_tiny_patch16_224", 10, TINY_VIT), tmp / "classifier.ckpt")
    truncated = tmp / "truncated.ckpt"
    truncated.write_bytes(Path(classifier).read_bytes()[:4096])
    torch.save({"hyper_parameters": {"x": Payload(tmp / "code_ran")}}, tmp / "crafted.ckpt")
    return {
        "classifier": classifier,
        "truncated": str(truncated),
        "crafted": str(tmp / "crafted.ckpt"),
        "dir": tmp,
    }


def config(stage: str) -> list[str]:
    return ["fit", "--config", str(ROOT / f"configs/digits/{stage}.yaml")]


# (case, arguments, what the error line says)
CASES = [
    ("missing checkpoint", lambda f: [*config("surrogate"), "--model.init_args.classifier_checkpoint=nope.ckpt"],
     r"checkpoint not found: nope.ckpt \(check the path, or train the previous stage first\)"),
    ("checkpoint of another stage", lambda f: [*config("explainer"), f"--model.init_args.surrogate_checkpoint={f['classifier']}"],
     r"classifier.ckpt was written by ClassifierModule, but SurrogateModule is needed here: train one with configs/<dataset>/surrogate.yaml"),
    ("corrupt checkpoint", lambda f: [*config("surrogate"), f"--model.init_args.classifier_checkpoint={f['truncated']}"],
     r"could not load \S*truncated.ckpt safely \(weights only\): RuntimeError"),
    ("crafted pickle", lambda f: [*config("surrogate"), f"--model.init_args.classifier_checkpoint={f['crafted']}"],
     r"could not load \S*crafted.ckpt safely \(weights only\): UnpicklingError"),
    ("resume from another stage", lambda f: [*config("surrogate"), f"--ckpt_path={f['classifier']}"],
     r"--ckpt_path \S*classifier.ckpt was written by ClassifierModule, but SurrogateModule is needed here: resume from a checkpoint of this stage"),
    ("corrupt resume checkpoint", lambda f: [*config("classifier"), f"--ckpt_path={f['truncated']}", *FAST[1:], "--trainer.max_steps=1"],
     r"truncated.ckpt is not a readable checkpoint .* truncated or corrupt"),
    ("unknown masker", lambda f: [*config("surrogate"), f"--model.init_args.classifier_checkpoint={f['classifier']}", "--model.init_args.masker=tokendrop"],
     r"unknown masker 'tokendrop'; choose one of token_drop"),
    # Without the config's callbacks, whose own set-up checks would name the mismatch first.
    ("image size does not match the model", lambda f: [*config("classifier"), "--model.init_args.backbone_kwargs.img_size=16", "--trainer.callbacks=[]", *FAST],
     r"images are \(8, 8\) but the model was built for \(16, 16\); resize the images"),
    ("patch grid does not divide the image", lambda f: [*config("surrogate"), f"--model.init_args.classifier_checkpoint={f['classifier']}", "--model.init_args.patch_size=3"],
     r"patch_size \(3, 3\) does not divide image_size \(8, 8\)"),
]  # fmt: skip


@pytest.mark.parametrize("case, arguments, message", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(
    files, tmp_path, monkeypatch, case, arguments, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIT_XAI_TRACEBACK", "0")
    with pytest.raises(SystemExit) as stop, user_errors_exit():
        main(arguments(files))
    line = str(stop.value.code)
    assert line.startswith("error: ") and "\n" not in line
    assert re.search(message, line), line
    assert not list(tmp_path.rglob("*.ckpt")), "a failed run left a checkpoint"
    assert not (files["dir"] / "code_ran").exists()


@pytest.mark.parametrize(
    "arguments, name",
    [
        (["--model.init_args.learning_rate=0.1"], "learning_rate"),
        (["--trainer.max_epochs=many"], "max_epochs"),
    ],
)
def test_config_mistakes_get_lightning_cli_messages(tmp_path, monkeypatch, capsys, arguments, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*config("classifier"), *arguments])
    assert stop.value.code == 2
    assert name in capsys.readouterr().err


def test_train_py_exits_non_zero_with_one_line(files, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LIT_XAI_"))}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *CASES[1][1](files)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: ")
        and "was written by ClassifierModule, but SurrogateModule is needed" in last
    )
    assert not list(tmp_path.rglob("*.ckpt"))
