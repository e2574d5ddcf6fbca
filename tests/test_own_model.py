"""evaluate.py scores a classifier trained outside lit_xai (issue 14, item 1): a timm name with a weights file
(state dict or safetensors) or a ``package.module:function`` factory, through the model's own removal."""

from __future__ import annotations

import contextlib
import io
import shlex
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file
from test_first_hour import make_image_folder  # tests/ is on sys.path

from lit_xai.cli import main as train_main
from lit_xai.evaluation import main
from lit_xai.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]

TINY_VIT = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2)
DATA = {"class_path": "lit_xai.data.DigitsDataModule", "init_args": {"batch_size": 8, "seed": 0}}


def evaluate(tmp_path, model: dict, **overrides):
    config = {
        "model": model,
        "baselines": ["gradient", "leave_one_out", "random"],
        "metrics": ["insertion_deletion"],
        "ground_truth": "none",
        "num_images": 8,
        "figure_images": 0,
        "output_dir": str(tmp_path / "out"),
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False},
        "data": DATA,
        **overrides,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    with contextlib.redirect_stdout(io.StringIO()):
        return main(["--config", str(path)])


def test_timm_name_and_safetensors_weights(tmp_path):
    torch.manual_seed(0)
    trained = timm.create_model("vit_tiny_patch16_224", num_classes=10, **TINY_VIT)  # "trained elsewhere"
    save_file(trained.state_dict(), str(tmp_path / "vit.safetensors"))
    spec = {"timm": "vit_tiny_patch16_224", "weights": str(tmp_path / "vit.safetensors"), "num_classes": 10}
    results = evaluate(tmp_path, {**spec, "kwargs": TINY_VIT})
    assert set(results["methods"]) == {"gradient", "leave_one_out", "random"}
    for method in results["methods"].values():
        assert 0.0 <= method["scores"]["insertion_auc"]["mean"] <= 1.0
    assert any("scored through the given model with TokenDrop" in note for note in results["notes"])
    assert (tmp_path / "out/results.md").is_file()


def test_factory_with_a_state_dict_and_wrong_weights_are_named(tmp_path):
    torch.manual_seed(0)
    torch.save(SmallCNN(in_chans=1, num_classes=10).state_dict(), tmp_path / "cnn.pt")
    spec = {
        "factory": "lit_xai.models:build_model",
        "kwargs": {"name": "cnn", "in_chans": 1},
        "num_classes": 10,
        "weights": str(tmp_path / "cnn.pt"),
        "patch_size": 2,
        "image_size": 8,
    }
    results = evaluate(tmp_path, spec)
    assert results["methods"]["leave_one_out"]["scores"]["deletion_auc"]["mean"] >= 0.0
    with pytest.raises(SystemExit) as stop:
        evaluate(tmp_path, {**spec, "num_classes": 3})
    assert stop.value.code == 2


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"timm": "vit_tiny_patch16_224", "factory": "a.b:c", "num_classes": 10},
            "exactly one of checkpoint",
        ),
        ({"timm": "vit_tiny_patch16_224"}, "needs num_classes"),
        ({"factory": "lit_xai.models.build_model"}, "must read 'package.module:function'"),
        (
            {"timm": "vit_tiny_patch16_224", "num_classes": 10, "weights": "nowhere.pt"},
            "not found: nowhere.pt",
        ),
    ],
)
def test_bad_model_specs_are_one_line_before_any_work(tmp_path, capsys, model, message):
    with pytest.raises(SystemExit) as stop:
        evaluate(tmp_path, model)
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and error.startswith("evaluate.py: error:") and message in error, error
    assert "\n" not in error and not (tmp_path / "out").exists()


OWN_METHOD = '''
import torch


def gradient_times_input(model, x, target):
    """A pixel map written without lit_xai: (B, H, W)."""
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return (x.grad * x).sum(1)
'''


def test_an_own_method_by_import_path_is_scored_like_the_builtin_one(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(OWN_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    torch.save(SmallCNN(in_chans=1, num_classes=10).state_dict(), tmp_path / "cnn.pt")
    spec = {
        "factory": "lit_xai.models:build_model",
        "kwargs": {"name": "cnn", "in_chans": 1},
        "num_classes": 10,
        "weights": str(tmp_path / "cnn.pt"),
        "patch_size": 2,
        "image_size": 8,
    }
    results = evaluate(
        tmp_path,
        spec,
        baselines=["gradient_x_input"],
        own_methods={"mine": "my_methods:gradient_times_input"},
    )
    ours, builtin = (results["methods"][name]["scores"] for name in ("mine", "gradient_x_input"))
    assert results["methods"]["mine"]["kind"] == "own"
    for score in ("insertion_auc", "deletion_auc"):
        assert ours[score]["mean"] == pytest.approx(builtin[score]["mean"], abs=1e-6)


CNN_SPEC = {
    "factory": "lit_xai.models:build_model",
    "kwargs": {"name": "cnn", "in_chans": 1},
    "num_classes": 10,
    "patch_size": 2,
    "image_size": 8,
}


def test_captum_methods_are_scored_like_our_baselines_in_one_run(tmp_path):
    pytest.importorskip("captum")  # in the dev extra: never skipped in CI
    torch.manual_seed(0)
    torch.save(SmallCNN(in_chans=1, num_classes=10).state_dict(), tmp_path / "cnn.pt")
    results = evaluate(
        tmp_path,
        {**CNN_SPEC, "weights": str(tmp_path / "cnn.pt")},
        baselines=["leave_one_out", "integrated_gradients"],
        baseline_kwargs={"integrated_gradients": {"steps": 16}},
        captum_methods={
            "captum_ablation": {"class": "FeatureAblation", "perturbations_per_eval": 8},
            "captum_ig": {"class": "IntegratedGradients", "n_steps": 16},
        },
        metrics=["insertion_deletion", "sensitivity_n"],
    )
    methods = results["methods"]
    assert methods["captum_ig"]["kind"] == "captum"
    for theirs, ours in (("captum_ablation", "leave_one_out"), ("captum_ig", "integrated_gradients")):
        for score, value in methods[ours]["scores"].items():
            assert methods[theirs]["scores"][score]["mean"] == pytest.approx(value["mean"], abs=1e-5), score
    assert "captum_ig" in (tmp_path / "out/results.md").read_text()


@pytest.mark.parametrize(
    ("captum_methods", "message"),
    [
        ({"ig": {"n_steps": 8}}, "captum_methods.ig must be a mapping with 'class'"),
        (
            {"ig": {"class": "IntegratedGradients", "steps": 8}},
            "captum_methods.ig: IntegratedGradients: unknown option 'steps'",
        ),
        ({"ig": {"class": "LayerGradCam"}}, "captum_methods.ig: LayerGradCam: layer and neuron methods"),
    ],
)
def test_bad_captum_methods_are_one_line_before_any_work(tmp_path, capsys, captum_methods, message):
    pytest.importorskip("captum")
    with pytest.raises(SystemExit) as stop:
        evaluate(tmp_path, {**CNN_SPEC}, captum_methods=captum_methods)
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message in error and "\n" not in error, error
    assert not (tmp_path / "out").exists()


def test_without_captum_the_one_line_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # as if captum were not installed
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(SystemExit) as stop:
        evaluate(tmp_path, {**CNN_SPEC}, captum_methods={"ig": {"class": "IntegratedGradients"}})
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and 'pip install "lit_xai[captum]"' in error and "\n" not in error, error


def test_an_own_method_path_without_a_function_is_one_line(tmp_path, capsys):
    spec = {"timm": "vit_tiny_patch16_224", "num_classes": 10, "kwargs": TINY_VIT}
    with pytest.raises(SystemExit):
        evaluate(tmp_path, spec, own_methods={"mine": "my_methods.gradient_times_input"})
    assert "own_methods.mine must read 'package.module:function'" in capsys.readouterr().err


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(section: str, language: str) -> list[str]:
    return [block.split("```", 1)[0] for block in section.split(f"```{language}\n")[1:]]


@pytest.mark.slow  # about 3 min of CPU: three evaluations and two training steps
def test_readme_explain_your_own_model_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("captum")  # in the dev extra: never skipped in CI
    section = readme_section("Explain your own model")
    (config,), (methods,), (command, stages, together) = (
        code_blocks(section, lang) for lang in ("yaml", "python", "bash")
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # PYTHONPATH=.
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # run from a clone
    (tmp_path / "my_eval.yaml").write_text(config)
    (tmp_path / "my_methods.py").write_text(methods)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=64, patch_size=8)
    save_file(model.state_dict(), "my_model.safetensors")  # trained elsewhere
    make_image_folder(tmp_path / "my_images", per_class=6, size=32)
    words = shlex.split(command.split("#", 1)[0])
    assert words[:3] == ["PYTHONPATH=.", "python", "evaluate.py"], command
    with contextlib.redirect_stdout(io.StringIO()):
        results = main(
            [*words[3:], "--num_images", "2"]
        )  # two images show every row; the suite's time is short
    named = {"my_saliency", "captum_ig", "captum_shapley", "gradient", "leave_one_out", "random"}
    assert set(results["methods"]) == named
    table = (tmp_path / "outputs/eval/my_model/results.md").read_text()
    assert all(f"| {name} |" in table for name in named), table
    # The surrogate and explainer stages start from the same weights file (one step each here) ...
    short = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    for line, stage in zip(stages.strip().splitlines(), ("surrogate", "explainer"), strict=True):
        words = shlex.split(line)
        assert words[:3] == ["python", "train.py", "fit"], line
        train_main([*words[2:], *short])
        assert (tmp_path / f"outputs/image_folder/{stage}/checkpoints/best.ckpt").is_file()
    # ... and the learned explainer is scored next to the model's other explanations, in the same table.
    words = shlex.split(together)
    assert words[:3] == ["PYTHONPATH=.", "python", "evaluate.py"], together
    with contextlib.redirect_stdout(io.StringIO()), pytest.warns(UserWarning, match="different surrogate"):
        results = main([*words[3:], "--num_images", "2"])
    assert set(results["methods"]) == named | {"explainer"}
    assert "| explainer (explainer) |" in (tmp_path / "outputs/eval/my_model/results.md").read_text()
    assert any("explainer was trained for a different surrogate" in note for note in results["notes"])
    # --model null: every method scored through the explainer's surrogate (no note about a different one).
    cheap = ["--num_images", "1", "--metrics", "[insertion_deletion]", "--baselines", "[random]"]
    with contextlib.redirect_stdout(io.StringIO()):
        results = main([*words[3:], "--model", "null", "--output_dir", "outputs/eval/surrogate", *cheap])
    assert set(results["methods"]) == {"my_saliency", "captum_ig", "captum_shapley", "random", "explainer"}
    assert not any("different surrogate" in note for note in results["notes"]), results["notes"]


def test_surrogate_and_explainer_start_from_weights_saved_elsewhere(tmp_path):
    # The surrogate stage read only train.py checkpoints; a classifier saved as plain weights could not start it.
    from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule

    torch.manual_seed(0)
    trained = timm.create_model("vit_tiny_patch16_224", num_classes=10, **TINY_VIT).eval()
    weights = tmp_path / "vit.safetensors"
    save_file(trained.state_dict(), str(weights))
    backbone = {"backbone": "vit_tiny_patch16_224", "num_classes": 10, "backbone_kwargs": TINY_VIT}
    surrogate = SurrogateModule(str(weights), classifier_backbone=backbone)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(surrogate.teacher(x), trained(x)) and surrogate.players.num_players == 16
    checkpoint = tmp_path / "surrogate.ckpt"
    hparams = dict(surrogate.hparams, _class_path="lit_xai.algorithms.vit_shapley.SurrogateModule")
    torch.save(
        {
            "state_dict": surrogate.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": "2.6",
        },
        checkpoint,
    )
    weights.unlink()  # the surrogate's checkpoint rebuilds the network on its own
    reloaded = SurrogateModule.load_from_checkpoint(checkpoint, weights_only=True)
    assert torch.equal(reloaded.teacher(x), trained(x))
    explainer = ExplainerModule(str(checkpoint), num_masks=4)
    assert explainer.attribute(x, torch.tensor([0, 1])).shape == (2, 16)
    with pytest.raises(ValueError, match="classifier_backbone needs backbone"):
        SurrogateModule(str(checkpoint), classifier_backbone={"name": "vit_tiny_patch16_224"})
