"""evaluate.py end to end on tiny checkpoints: files, table, clear errors, atomic results, same numbers under DDP."""

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
import yaml
from torch.utils.data import DataLoader

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.data import DecoyDigitsDataModule
from lit_xai.evaluation import (
    EvaluationSettings,
    GlobalBatches,
    best_methods,
    build_methods,
    check_settings,
    count_forward_rows,
    format_table,
    load_classifier,
    load_explainers,
    load_scorer,
    main,
    markdown_report,
    prepare,
)
from lit_xai.evaluation.report import REMOVAL_SCORES, comparison_notes, ranked, unresponsive_note
from lit_xai.masking import TokenDrop
from lit_xai.players import PatchGrid

ROOT = Path(__file__).resolve().parents[1]
# 12x12 digits (8x8 digit, 2-pixel border) with the digit's ink as annotation; 4x4 patches: 9 players.
DATA = {
    "class_path": "lit_xai.data.DecoyDigitsDataModule",
    "init_args": {"decoy": False, "border": 2, "decoy_size": 2, "annotation": "ink", "batch_size": 4},
}
TINY_VIT = dict(img_size=12, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2)
FILES = (
    "results.json",
    "results.md",
    "explanations.png",
    "insertion_curves.png",
    "deletion_curves.png",
    "kernel_shap_error.png",
)


def save_module(module: L.LightningModule, path: Path) -> str:
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return str(path)


def fit(module: L.LightningModule, x: torch.Tensor, y: torch.Tensor, steps: int = 2) -> L.LightningModule:
    batches = [{"input": x[i : i + 16], "target": y[i : i + 16]} for i in range(0, len(x), 16)]
    L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    ).fit(module, DataLoader(batches, batch_size=None))
    return module


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Classifier -> surrogate -> explainer, a few steps each (quality does not matter here)."""
    tmp = tmp_path_factory.mktemp("stages")
    torch.manual_seed(0)
    data = DecoyDigitsDataModule(**DATA["init_args"])
    data.setup("fit")
    x, y = data.train_dataset.inputs[:64], data.train_dataset.targets[:64]
    classifier = fit(ClassifierModule("vit_tiny_patch16_224", 10, TINY_VIT), x, y)
    surrogate = fit(SurrogateModule(save_module(classifier, tmp / "classifier.ckpt")), x, y)
    surrogate_path = save_module(surrogate, tmp / "surrogate.ckpt")
    explainer = fit(ExplainerModule(surrogate_path, num_masks=4), x, y)
    return {
        "classifier": str(tmp / "classifier.ckpt"),
        "surrogate": surrogate_path,
        "explainer": save_module(explainer, tmp / "explainer.ckpt"),
    }


def write_config(path: Path, checkpoints: dict, **overrides) -> Path:
    config = {
        "surrogate_checkpoint": checkpoints["surrogate"],
        "explainers": {"vit_shapley": checkpoints["explainer"]},
        "baselines": ["gradient", "leave_one_out", "kernel_shap", "random"],
        "baseline_kwargs": {"kernel_shap": {"threshold": None, "max_evaluations": 2000}},
        "metrics": [
            "insertion_deletion",
            "sensitivity_n",
            "eraser",
            "localization",
            "completeness_soundness",
        ],
        "metric_kwargs": {"sensitivity_n": {"num_subsets": 8}},
        "num_images": 8,
        "ground_truth_images": 4,
        "kernel_budgets": [64, 256],
        "figure_images": 2,
        "output_dir": str(path.parent / "out"),
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False},
        "data": DATA,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def evaluation(checkpoints, tmp_path_factory):
    """One in-process run of ``evaluate.py --config``: its stdout, results and output folder."""
    config = write_config(tmp_path_factory.mktemp("eval") / "eval.yaml", checkpoints)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        results = main(["--config", str(config)])
    return {"stdout": stdout.getvalue(), "results": results, "out": config.parent / "out", "config": config}


def test_writes_every_file_and_prints_the_table(evaluation):
    out = evaluation["out"]
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"], "temporary files were left behind"
    stdout = evaluation["stdout"]
    for method in ("vit_shapley (explainer)", "gradient", "leave_one_out", "kernel_shap", "random"):
        assert method in stdout
    assert "insertion AUC ↑" in stdout and "deletion AUC ↓" in stdout and "*" in stdout
    markdown = (out / "results.md").read_text()
    assert "| vit_shapley (explainer) |" in markdown and "**" in markdown
    assert "![explanations](explanations.png)" in markdown


def reject_constant(token: str):
    raise ValueError(f"results.json holds {token}, which is not JSON")


def test_results_json_holds_every_number_config_and_versions(evaluation):
    # Strict JSON: NaN or Infinity would be written as bare tokens, which parse_constant rejects here.
    document = json.loads((evaluation["out"] / "results.json").read_text(), parse_constant=reject_constant)
    assert document["num_images"] == 8 and document["world_size"] == 1 and document["num_players"] == 9
    assert document["config"]["num_images"] == 8 and document["config"]["command"].startswith(
        "python evaluate.py"
    )
    assert {"torch", "lightning", "torchmetrics", "timm", "lit_xai"} <= set(document["versions"])
    expected = {
        "insertion_auc",
        "deletion_auc",
        "sensitivity_n",
        "sufficiency",
        "comprehensiveness",
        "pointing_game",  # the annotation is present, so localisation ran
        "ehr_auc",
        "completeness",  # Gupta et al.: the maps of every class are explained for soundness
        "soundness",
        "worst_soundness",
        "shapley_squared_error",
        "shapley_spearman",
    }
    for name, info in document["methods"].items():
        assert expected <= set(info["scores"]), name
        insertion = info["scores"]["insertion_auc"]
        assert 0 <= insertion["mean"] <= 1 and insertion["count"] == 8
        for score in ("completeness", "soundness", "worst_soundness"):
            assert 0 < info["scores"][score]["mean"] <= 1 and info["scores"][score]["count"] == 8
        assert info["scores"]["worst_soundness"]["mean"] <= info["scores"]["soundness"]["mean"] + 1e-6
        assert insertion["low"] <= insertion["mean"] <= insertion["high"]
        assert (
            info["scores"]["shapley_squared_error"]["count"] == 4
        )  # ground truth on the first 4 images only
        assert info["ms_per_image"] > 0
    assert set(document["curves"]) == set(document["methods"])
    assert document["kernel_shap_vs_ground_truth"]["errors"], "KernelSHAP's error curve is missing"


def test_costs_and_ground_truth_follow_from_the_methods(evaluation):
    methods = evaluation["results"]["methods"]
    # Forward passes per image: the explainer's network plus the surrogate's v(all); one gradient pass;
    # leave-one-out's d + 1 coalitions; KernelSHAP's budget plus the pass that checks the prediction; none at random.
    assert methods["vit_shapley"]["passes_per_image"] == 2
    assert methods["gradient"]["passes_per_image"] == 1
    assert methods["leave_one_out"]["passes_per_image"] == 10
    assert methods["kernel_shap"]["passes_per_image"] == 2001
    assert methods["random"]["passes_per_image"] == 0
    # 2000 KernelSHAP evaluations on 9 players (512 coalitions) land next to the exact Shapley values.
    kernel = methods["kernel_shap"]["scores"]
    assert kernel["shapley_pearson"]["mean"] > 0.99 and kernel["shapley_squared_error"]["mean"] < 1e-3
    assert methods["random"]["scores"]["shapley_pearson"]["mean"] < 0.6


def test_results_name_the_classes_of_the_data(evaluation):
    assert evaluation["results"]["classes"] == list("0123456789")


def test_best_method_is_marked_per_column(evaluation):
    results = evaluation["results"]
    flat = unresponsive_note(results["methods"])  # the tiny test model may barely react to removal
    assert (flat in results["notes"]) if flat else not any("barely reacts" in n for n in results["notes"])
    for column in results["columns"]:
        score, higher = column["score"], column["higher_is_better"]
        if flat and score in REMOVAL_SCORES:
            assert score not in results["best"]
            continue
        means = {n: m["scores"][score]["mean"] for n, m in results["methods"].items() if score in m["scores"]}
        target = max(means.values()) if higher else min(means.values())
        assert [n for n, v in means.items() if v == target] == results["best"][score], score


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"baselines": ["gradient", "gradcamm"]}, "unknown baseline(s) gradcamm"),
        ({"metrics": ["insertion_auc"]}, "unknown metric(s) insertion_auc"),
        ({"baseline_kwargs": {"rsie": {"num_masks": 10}}}, "options for 'rsie', which is not a baseline"),
        ({"metric_kwargs": {"eraser": {"fraction": [0.1]}}}, "eraser: unknown option(s) fraction"),
        ({"num_images": 0}, "num_images must be at least 1"),
        ({"explainers": ["missing/explainer.ckpt"]}, "checkpoint not found: missing/explainer.ckpt"),
        ({"kernel_budgets": [64, 32]}, "kernel_budgets must be increasing"),
        ({"surrogate_checkpoint": None, "explainers": []}, "nothing scores the explanations"),
    ],
)
def test_bad_config_values_give_one_clear_line(checkpoints, tmp_path, capsys, overrides, message):
    config = write_config(tmp_path / "bad.yaml", checkpoints, **overrides)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("evaluate.py: error:") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists(), "work started before the config was checked"


def test_bad_value_type_is_refused_by_the_parser(checkpoints, tmp_path, capsys):
    config = write_config(tmp_path / "bad.yaml", checkpoints)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "--target", "favourite"])
    assert exit_info.value.code == 2 and "target" in capsys.readouterr().err


def test_a_crash_halfway_leaves_no_results(checkpoints, tmp_path):
    settings = EvaluationSettings(
        surrogate_checkpoint=checkpoints["surrogate"],
        baselines=["random"],
        metrics=["insertion_deletion"],
        num_images=12,
        output_dir=str(tmp_path / "out"),
    )
    module = prepare(settings, DecoyDigitsDataModule(**DATA["init_args"]))
    calls = []

    def failing(x, target):
        calls.append(1)
        if len(calls) > 2:  # the warm-up and the first batch succeed
            raise RuntimeError("out of memory halfway")
        return torch.rand(x.shape[0], 9)

    module.methods[0].explain = failing
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, inference_mode=False, use_distributed_sampler=False
    )
    with pytest.raises(RuntimeError, match="halfway"):
        trainer.test(module)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_models_are_wired_as_configured(checkpoints, tmp_path):
    explainers = load_explainers({"vit_shapley": checkpoints["explainer"]})
    scorer = load_scorer(checkpoints["surrogate"], explainers)
    assert scorer.notes == () and scorer.link == "softmax" and scorer.players.num_players == 9
    classifier = load_classifier(checkpoints["classifier"])
    methods = build_methods(
        scorer, explainers, ["gradient", "rise", "random"], {"rise": {"num_masks": 8}}, classifier
    )
    by_name = {m.name: m for m in methods}
    assert [m.name for m in methods] == ["vit_shapley", "gradient", "rise", "random"]
    assert by_name["gradient"].networks == (classifier,)  # gradients explain the given classifier ...
    assert by_name["rise"].networks == (scorer.model,)  # ... removal queries the surrogate game
    assert by_name["random"].generator is not None and by_name["rise"].generator is None
    # An explainer trained for another surrogate is scored anyway, with a warning and a note.
    other = SurrogateModule.load_from_checkpoint(checkpoints["surrogate"], weights_only=True)
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    with pytest.warns(UserWarning, match="different surrogate"):
        scorer = load_scorer(save_module(other, tmp_path / "other.ckpt"), explainers)
    assert "different surrogate" in scorer.notes[0]


def test_one_method_runs_with_several_settings_under_labelled_names(checkpoints):
    explainers = load_explainers({"vit_shapley": checkpoints["explainer"]})
    scorer = load_scorer(checkpoints["surrogate"], explainers)
    options = {
        name: {"threshold": None, "max_evaluations": budget}
        for name, budget in (("kernel_shap@64", 64), ("kernel_shap@512", 512))
    }
    methods = build_methods(scorer, {}, list(options), options)
    x = torch.randn(3, 1, 12, 12)
    target = torch.zeros(3, dtype=torch.long)
    with count_forward_rows([scorer.model]) as rows:
        methods[0].explain(x, target)
    small = rows[0]
    with count_forward_rows([scorer.model]) as rows:
        methods[1].explain(x, target)
    assert [m.name for m in methods] == list(options) and rows[0] > 4 * small


def test_black_box_estimators_run_by_name_on_the_surrogate_game(checkpoints):
    explainers = load_explainers({"vit_shapley": checkpoints["explainer"]})
    scorer = load_scorer(checkpoints["surrogate"], explainers)
    options = {
        "leverage_shap": {"max_evaluations": 130},
        "permutation_shap": {"max_evaluations": 130},
        "beta_shapley": {"max_evaluations": 130, "alpha": 4, "beta": 1},
        "banzhaf": {"num_masks": 130},
        "weighted_shap": {"max_evaluations": 130},
        "sobol": {"num_designs": 8},
        "hsic": {"num_designs": 64},
        "h_shap": {},
    }
    # Evaluations per image (9 players on a 3 x 3 grid): the budgets; WeightedSHAP adds at most 13 recovery curves
    # of 10 coalitions; Sobol N (d + 2); h-Shap at most 16 at the root plus 16 + 4 + 4 below it.
    budgets = {**{name: 130 for name in options}, "weighted_shap": 130 + 13 * 10, "sobol": 8 * 11, "hsic": 64}
    budgets["h_shap"] = 16 + 16 + 4 + 4
    check_settings(
        EvaluationSettings(
            surrogate_checkpoint=checkpoints["surrogate"], baselines=list(options), baseline_kwargs=options
        )
    )
    methods = build_methods(scorer, {}, list(options), options)
    x = torch.randn(2, 1, 12, 12)
    target = torch.tensor([1, 3])
    for method in methods:
        with count_forward_rows([scorer.model]) as rows:
            values = method.explain(x, target)
        assert values.shape == (2, 9) and values.isfinite().all(), method.name
        # plus the pass that finds the prediction
        assert rows[0] <= 2 * (budgets[method.name] + 1), method.name


@pytest.mark.parametrize("target", ["predicted", "true"])
def test_target_chooses_the_class_that_is_explained_and_scored(checkpoints, target):
    settings = EvaluationSettings(
        surrogate_checkpoint=checkpoints["surrogate"],
        baselines=["random"],
        metrics=["insertion_deletion"],
        target=target,
        ground_truth="none",
        num_images=6,
        output_dir=None,
    )
    data = DecoyDigitsDataModule(**DATA["init_args"])
    module = prepare(settings, data)
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, inference_mode=False, use_distributed_sampler=False
    )
    trainer.test(module)
    # The insertion curve ends with every player present: the surrogate's probability of the explained class.
    x, y = data.test_dataset.inputs[:6], data.test_dataset.targets[:6]
    with torch.no_grad():
        probs = module.scorer.model(x).softmax(-1)
    expected = probs.max(-1).values if target == "predicted" else probs[torch.arange(6), y]
    assert module.results["target"] == target
    assert module.results["curves"]["random"]["insertion_curve"][-1] == pytest.approx(
        expected.mean().item(), abs=1e-5
    )


@pytest.mark.parametrize("world_size", [1, 2, 3, 6])
def test_global_batches_split_the_images_once_and_identically(world_size):
    samplers = [GlobalBatches(10, 3, rank, world_size) for rank in range(world_size)]
    real = [
        (sampler.global_batch(i, world_size), batch)
        for sampler in samplers
        for i, batch in enumerate(sampler)
        if not sampler.is_placeholder(sampler.global_batch(i, world_size))
    ]
    assert sorted(i for _, batch in real for i in batch) == list(range(10))  # every image once
    assert dict(real) == {
        0: [0, 1, 2],
        1: [3, 4, 5],
        2: [6, 7, 8],
        3: [9],
    }  # the same batches for any world size
    # Lightning refuses empty loaders: a process without a batch gets one placeholder, which it skips.
    assert all(len(sampler) == max(1, len(list(sampler))) >= 1 for sampler in samplers)


def test_forward_rows_are_counted_through_token_dropping():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, **TINY_VIT).eval()
    masker = TokenDrop(PatchGrid(12, 4))
    x, keep = torch.randn(5, 1, 12, 12), torch.rand(5, 9) > 0.5
    keep[:, 0] = True
    with count_forward_rows([vit]) as rows:
        masker(vit, x, keep)
        vit(x[:2])
    assert rows[0] == 7


def summary(mean, half=0.01):
    return {
        "mean": mean,
        "std": 0.1,
        "half_width": half,
        "low": mean - half,
        "high": mean + half,
        "count": 10,
    }


def test_report_marks_lower_and_higher_is_better_and_explains_losses():
    methods = {
        "ours": {
            "kind": "explainer",
            "ms_per_image": 1.0,
            "passes_per_image": 2.0,
            "scores": {"insertion_auc": summary(0.9), "deletion_auc": summary(0.3)},
        },
        "kernel": {
            "kind": "baseline",
            "ms_per_image": 90.0,
            "passes_per_image": 4000.0,
            "scores": {"insertion_auc": summary(0.8), "deletion_auc": summary(0.1)},
        },
    }
    assert best_methods(methods) == {"insertion_auc": ["ours"], "deletion_auc": ["kernel"]}
    notes = comparison_notes(methods)
    assert len(notes) == 1 and notes[0].startswith("deletion AUC: kernel") and "do not overlap" in notes[0]
    assert "4000 passes" in notes[0]
    results = {
        "methods": methods,
        "best": best_methods(methods),
        "columns": [
            {"score": "insertion_auc", "label": "insertion AUC", "higher_is_better": True},
            {"score": "deletion_auc", "label": "deletion AUC", "higher_is_better": False},
        ],
        "num_images": 10,
        "target": "predicted",
        "masker": "TokenDrop",
        "num_players": 4,
        "confidence": 0.95,
        "notes": notes,
    }
    table = format_table(results).splitlines()
    assert "0.900 ± 0.010*" in table[2] and "0.100 ± 0.010*" in table[3]
    assert "| **0.900 ± 0.010** |" in markdown_report(results)


def test_a_model_that_barely_reacts_to_removal_gets_a_warning_instead_of_winners():
    def method(kind, insertion, deletion, pointing):
        scores = {"insertion_auc": summary(insertion), "deletion_auc": summary(deletion)}
        return {
            "kind": kind,
            "ms_per_image": 1.0,
            "passes_per_image": 1.0,
            "scores": scores | {"pointing_game": summary(pointing)},
        }

    flat = {"ours": method("explainer", 0.52, 0.50, 0.4), "kernel": method("baseline", 0.53, 0.49, 0.6)}
    best, notes = ranked(flat)
    assert best == {"pointing_game": ["kernel"]}  # localisation does not remove players: still ranked
    assert len(notes) == 1 and "barely reacts to removal" in notes[0] and "0.040" in notes[0]
    assert [n for n in comparison_notes(flat, best) if "AUC" in n] == []  # no "kernel beats ours" on noise

    responsive = {"ours": method("explainer", 0.9, 0.3, 0.4), "kernel": method("baseline", 0.53, 0.49, 0.6)}
    best, notes = ranked(responsive)
    assert notes == [] and best["insertion_auc"] == ["ours"] and unresponsive_note(responsive) is None


def test_an_interval_clipped_to_the_scores_range_is_shown_as_its_bounds():
    clipped = summary(0.98, half=0.05) | {"high": 1.0}
    results = {
        "methods": {
            "ours": {
                "kind": "explainer",
                "ms_per_image": 1.0,
                "passes_per_image": 1.0,
                "scores": {"insertion_auc": clipped},
            }
        },
        "best": {},
        "columns": [{"score": "insertion_auc", "label": "insertion AUC", "higher_is_better": True}],
    }
    assert "0.980 [0.930, 1.000]" in format_table(results)


@pytest.mark.slow
def test_two_processes_give_the_same_numbers_as_one(evaluation, tmp_path):
    """DDP on two CPU processes (gloo): every score and curve equals the single-process run."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "--config",
            str(evaluation["config"]),
            "--output_dir",
            str(out),
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = evaluation["results"], json.loads((out / "results.json").read_text())
    assert two["world_size"] == 2 and two["num_images"] == one["num_images"]
    for name, info in one["methods"].items():
        for score, values in info["scores"].items():
            other = two["methods"][name]["scores"][score]
            assert other["count"] == values["count"], (name, score)
            for key in ("mean", "std"):
                if values[key] is not None and math.isfinite(values[key]):
                    assert other[key] == pytest.approx(values[key], rel=1e-9, abs=1e-12), (name, score, key)
        assert two["methods"][name]["passes_per_image"] == info["passes_per_image"]
        assert two["curves"][name]["deletion_curve"] == pytest.approx(one["curves"][name]["deletion_curve"])
    assert (
        two["kernel_shap_vs_ground_truth"]["errors"].keys()
        == one["kernel_shap_vs_ground_truth"]["errors"].keys()
    )
