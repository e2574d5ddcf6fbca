"""README "Extending lit_xai": its four files, exactly as written there, register a masker, a baseline, a metric and a
learned explainer, and evaluate.py runs them by name from the README's config."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.attribution import ATTRIBUTIONS, Attribution, register_attribution
from lit_xai.data import DigitsDataModule
from lit_xai.evaluation import main as evaluate
from lit_xai.masking import MASKERS, BaselineFill, build_masker, register_masker
from lit_xai.metrics.registry import METRICS
from lit_xai.players import FeatureGroups, PatchGrid

README = Path(__file__).resolve().parents[1] / "README.md"
FILES = ("my_masker", "my_baseline", "my_metric", "my_explainer")
NAMES = {
    "masker": "image_mean",
    "baseline": "input_magnitude",
    "metric": "top_k_drop",
    "explainer": "linear_loo",
}


def readme_section() -> tuple[dict[str, str], dict]:
    """The section's Python files ``{module: source}`` (each block starts with ``# <module>.py``) and its config."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Extending lit_xai\n", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        name = re.match(r"# (\w+)\.py", block).group(1)
        files[name] = block
    (config,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    return files, yaml.safe_load(config)


@pytest.fixture
def extensions(tmp_path, monkeypatch):
    """Write the README's files into a folder on sys.path; afterwards forget them and their registrations."""
    files, config = readme_section()
    assert tuple(files) == FILES
    for name, source in files.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield config
    for name in FILES:
        sys.modules.pop(name, None)
    MASKERS.pop(NAMES["masker"], None)
    ATTRIBUTIONS.pop(NAMES["baseline"], None)
    ATTRIBUTIONS.pop(NAMES["explainer"], None)
    METRICS.pop(NAMES["metric"], None)


def save_classifier(path: Path) -> str:
    torch.manual_seed(0)
    module = ClassifierModule("cnn", 10, {"in_chans": 1, "channels": [4, 8]})
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return str(path)


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_the_readme_extensions_run_through_evaluate(extensions, tmp_path):
    import my_explainer  # noqa: F401  (the README's file; importing it registers linear_loo)

    classifier = save_classifier(tmp_path / "classifier.ckpt")
    data = DigitsDataModule(batch_size=16, seed=0)
    explainer = my_explainer.LinearLeaveOneOut(classifier_checkpoint=classifier)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    before = explainer.loss(batch["input"]).item()
    trainer = quiet_trainer(max_steps=30)
    trainer.fit(explainer, datamodule=data)
    assert explainer.loss(batch["input"]).item() < before  # it learns the classifier's leave-one-out drops
    trainer.save_checkpoint(tmp_path / "explainer.ckpt")

    config = dict(extensions)
    config["model"] = {**config["model"], "checkpoint": classifier}
    config["baseline_kwargs"] = {"linear_loo": {"checkpoint": str(tmp_path / "explainer.ckpt")}}
    config.update(
        num_images=16,
        ground_truth="none",
        figure_images=0,
        output_dir=str(tmp_path / "out"),
        trainer={"accelerator": "cpu", "enable_progress_bar": False},
        data={"class_path": "lit_xai.data.DigitsDataModule", "init_args": {"batch_size": 8, "seed": 0}},
    )
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    with contextlib.redirect_stdout(io.StringIO()):
        results = evaluate(["--config", str(path)])

    assert set(results["methods"]) == {"gradient", "input_magnitude", "linear_loo"}
    for name, method in results["methods"].items():
        scores = method["scores"]
        assert scores["top_k_drop"]["count"] == 16, name
        assert -1.0 <= scores["top_k_drop"]["mean"] <= 1.0 and 0.0 <= scores["insertion_auc"]["mean"] <= 1.0
    assert any("ImageMeanFill" in note for note in results["notes"])  # the registered masker scored them
    # The learned explainer's own network counts in its cost: one pass of its linear map per image (the explained
    # class is given, so the model itself is not run); |x| runs no network at all.
    assert results["methods"]["linear_loo"]["passes_per_image"] == 1
    assert results["methods"]["input_magnitude"]["passes_per_image"] == 0


def test_the_readme_extensions_compute_what_they_say(extensions):
    import my_baseline  # noqa: F401
    import my_masker  # noqa: F401
    import my_metric

    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).view(2, 2, 4, 4) - 20
    grid = PatchGrid(4, 2)
    masker = build_masker("image_mean", grid)
    keep = torch.tensor([[True, False, False, True]] * 2)
    seen = masker.mask_input(x, keep)
    means = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    pixels = grid.expand_mask(keep).bool().expand_as(x)
    assert torch.equal(seen, torch.where(pixels, x, means)) and not masker.constant_null

    magnitude = ATTRIBUTIONS["input_magnitude"](torch.nn.Identity(), grid).attribute(x)
    torch.testing.assert_close(magnitude, grid.pool(x.abs().sum(1), reduce="sum"))

    # A linear "model" on 4 columns whose class-0 logit is the first column: removing (zeroing) the top-ranked column
    # drops the softmax of class 0 from its full value to its value at zero.
    players = FeatureGroups(4)
    model = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0, 0, 0], [0, 0, 0, 0]]))
    metric = my_metric.TopKDrop(BaselineFill(players), k=1)
    rows = torch.tensor([[1.0, 0.5, 0.5, 0.5], [2.0, 0.1, 0.1, 0.1]])
    metric.update(model, rows, torch.tensor([[9.0, 0, 0, 0], [9.0, 0, 0, 0]]), torch.tensor([0, 0]))
    expected = (torch.sigmoid(3 * rows[:, 0]) - 0.5).mean()
    torch.testing.assert_close(metric.compute()["top_k_drop"], expected)


def test_a_taken_name_is_refused_and_the_same_class_again_is_fine():
    with pytest.raises(ValueError, match="baseline 'gradient' is already registered"):

        @register_attribution
        class Other(Attribution):
            name = "gradient"

    assert register_attribution(ATTRIBUTIONS["gradient"]) is ATTRIBUTIONS["gradient"]
    with pytest.raises(ValueError, match="masker 'baseline' is already registered"):
        register_masker("baseline")(type("OtherFill", (BaselineFill,), {}))
    with pytest.raises(ValueError, match="Masker subclass"):
        register_masker("not_a_masker")(int)
