"""The report of an evaluation: the methods x metrics table, results.json, results.md and the figures.

Tables show mean ± half-width of the confidence interval (Student t over images, as in
:meth:`lit_xai.metrics.ExplanationMetric.summary`; ``mean [low, high]`` where the interval is clipped to the
score's range) with the best method of each column marked, next to each
method's cost: wall time per image and forward passes per image (the ViT Shapley paper's point is that a learned
explainer costs one pass where sampling methods need thousands). Files are written through temporary files and
``os.replace``, results.json last, so a run that crashes leaves no half-written result.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lit_xai.data.base import class_names
from lit_xai.evaluation.config import base_method
from lit_xai.io import atomic_write_text

__all__ = [
    "COLUMNS",
    "collect_results",
    "best_methods",
    "ranked",
    "unresponsive_note",
    "format_table",
    "markdown_report",
    "write_outputs",
]

#: Table columns: (score, label, higher is better). Scores a run did not compute are left out.
COLUMNS = (
    ("insertion_auc", "insertion AUC", True),
    ("deletion_auc", "deletion AUC", False),
    ("sensitivity_n", "sensitivity-n", True),
    ("comprehensiveness", "comprehensiveness", True),
    ("sufficiency", "sufficiency", False),
    ("pointing_game", "pointing game", True),
    ("relevance_mass", "relevance mass", True),
    ("ehr_auc", "EHR AUC", True),
    ("completeness", "completeness", True),
    ("soundness", "soundness", True),
    ("shapley_squared_error", "GT squared error", False),
    ("shapley_pearson", "GT Pearson", True),
    ("shapley_spearman", "GT Spearman", True),
)
#: The scores recorded for KernelSHAP at each budget (those of :func:`lit_xai.metrics.functional.shapley_error`).
KERNEL_SCORES = ("squared_error", "pearson", "spearman", "sign_agreement", "top_k_overlap")
#: Scores measured by removing players: no method wins them when the model barely reacts to removal.
REMOVAL_SCORES = ("insertion_auc", "deletion_auc", "sensitivity_n", "comprehensiveness", "sufficiency")
#: Insertion and deletion AUCs closer than this for every method: the model barely reacts to removal (on the
#: probability scale, where the AUCs lie in [0, 1]).
REACTION_GAP = 0.05
FIGURES = {
    "explanations": "explanations.png",
    "insertion": "insertion_curves.png",
    "deletion": "deletion_curves.png",
    "kernel_shap": "kernel_shap_error.png",
}


def collect_results(module) -> dict[str, Any]:
    """Every number of a finished :class:`~lit_xai.evaluation.EvaluationModule` run, synchronised across processes.

    Every process must call it (the metric states are summed across processes here).
    """
    notes = list(module.scorer.notes)
    methods: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    num_images = 0
    with warnings.catch_warnings():
        # A process that received no images (or no ground-truth images) still takes part in the sums.
        warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
        for method in module.methods:
            scores: dict[str, dict[str, float]] = {}
            for name, metric in module.scores[method.name].items():
                scores.update(metric.summary(module.confidence))
                if name == "insertion_deletion":
                    curves[method.name] = {k: v.tolist() for k, v in metric.curves().items()}
            if len(module.shapley):
                summary = module.shapley[method.name].summary(module.confidence)
                scores.update({f"shapley_{k}": v for k, v in summary.items()})
            cost = module.costs[method.name].compute()
            seconds, passes = cost["mean"].tolist()
            num_images = int(cost["count"][0].item())
            methods[method.name] = {
                "kind": method.kind,
                "ms_per_image": 1000.0 * seconds,
                "passes_per_image": passes,
                "scores": {k: v for k, v in scores.items() if v["count"] > 0},
            }
        kernel = None
        if module.kernel_curve is not None:
            means = module.kernel_curve.compute()["mean"].view(len(module.kernel_budgets), -1).tolist()
            kernel = _kernel_comparison(module, methods, means)
    first = methods[module.methods[0].name]
    if "localization" in module.scores[module.methods[0].name] and "pointing_game" not in first["scores"]:
        notes.append("Localisation was skipped: the test batches carry no 'annotation'.")
    if len(module.shapley):
        notes.append(_ground_truth_note(module, first))
    best, ranking_notes = ranked(methods)
    return {
        "num_images": num_images,
        "world_size": module._world()[1],
        "target": module.target,
        "ground_truth": module.ground_truth,
        "num_players": module.scorer.masker.num_players,
        "classes": class_names(module.data),
        "masker": repr(module.scorer.masker),
        "link": module.scorer.link,
        "confidence": module.confidence,
        "methods": methods,
        "columns": [
            {"score": s, "label": label, "higher_is_better": h}
            for s, label, h in COLUMNS
            if any(s in m["scores"] for m in methods.values())
        ],
        "best": best,
        "curves": curves,
        "kernel_shap_vs_ground_truth": kernel,
        "notes": ranking_notes + notes + comparison_notes(methods, best),
    }


def _ground_truth_note(module, first: Mapping) -> str:
    count = int(first["scores"].get("shapley_squared_error", {}).get("count", 0))
    kind = (
        "exact Shapley values" if module.ground_truth == "exact" else "converged KernelSHAP (threshold 0.005)"
    )
    note = f"Ground truth: {kind} of the surrogate game ({module.scorer.link}) on the first {count} images."
    others = [
        m.name for m in module.methods if m.kind != "explainer" and base_method(m.name) != "kernel_shap"
    ]
    if others:
        note += (
            " Only the learned explainers and KernelSHAP estimate Shapley values on the game's scale; compare "
            f"{', '.join(others)} by GT Pearson/Spearman rather than by the squared error."
        )
    return note


def _kernel_comparison(module, methods: Mapping, means: list[list[float]]) -> dict[str, Any]:
    explainer = next(m.name for m in module.methods if m.kind == "explainer")
    errors = {
        str(b): dict(zip(KERNEL_SCORES, row))
        for b, row in zip(module.kernel_budgets, means)
        if not math.isnan(row[0])
    }
    reference = methods[explainer]["scores"].get("shapley_squared_error", {}).get("mean", math.nan)
    matching = next((int(b) for b, e in errors.items() if e["squared_error"] <= reference), None)
    return {
        "explainer": explainer,
        "explainer_squared_error": reference,
        "errors": errors,
        "matching_budget": matching,
    }


def unresponsive_note(methods: Mapping[str, Mapping]) -> str | None:
    """A warning when the model barely reacts to removal: insertion and deletion AUCs within
    :data:`REACTION_GAP` of each other for every method.

    Then removing the most important players first changes the prediction no more than adding them first, for
    every explanation: the removal scores measure noise (a model that ignores the masked inputs, a masker it was
    not trained for, or predictions with no confidence to lose), and marking a winner would mislead.
    """
    gaps = [
        abs(m["scores"]["insertion_auc"]["mean"] - m["scores"]["deletion_auc"]["mean"])
        for m in methods.values()
        if {"insertion_auc", "deletion_auc"} <= set(m["scores"])
    ]
    if not gaps or not all(math.isfinite(g) for g in gaps) or max(gaps) >= REACTION_GAP:
        return None
    return (
        f"Warning: the model barely reacts to removal: insertion and deletion AUCs differ by at most {max(gaps):.3f} "
        f"for every method (below {REACTION_GAP}), so the removal metrics cannot rank the methods and no best is "
        "marked in their columns. Score through a surrogate trained with players missing (configs/<dataset>/"
        "surrogate.yaml), with the masker it was trained with, on images it classifies confidently."
    )


def ranked(methods: Mapping[str, Mapping]) -> tuple[dict[str, list[str]], list[str]]:
    """The best method(s) of each column and the notes about the ranking: no winners in the removal columns when
    the model barely reacts to removal (:func:`unresponsive_note`)."""
    best = best_methods(methods)
    warning = unresponsive_note(methods)
    if warning is None:
        return best, []
    return {score: names for score, names in best.items() if score not in REMOVAL_SCORES}, [warning]


def best_methods(methods: Mapping[str, Mapping]) -> dict[str, list[str]]:
    """The method(s) with the best mean in every column (ties share the mark)."""
    best = {}
    for score, _, higher in COLUMNS:
        means = {
            name: m["scores"][score]["mean"]
            for name, m in methods.items()
            if score in m["scores"] and math.isfinite(m["scores"][score]["mean"])
        }
        if means:
            top = max(means.values()) if higher else min(means.values())
            best[score] = [
                name for name, value in means.items() if abs(value - top) <= 1e-12 * max(1.0, abs(top))
            ]
    return best


def comparison_notes(
    methods: Mapping[str, Mapping], best: Mapping[str, list[str]] | None = None
) -> list[str]:
    """Where a baseline beats a learned explainer: the column, both means, whether the intervals overlap, the cost.

    ``best``: the winners of each column (default: :func:`best_methods`); columns left out are not compared.
    """
    notes = []
    best = best_methods(methods) if best is None else best
    labels = {s: label for s, label, _ in COLUMNS}
    for explainer, info in methods.items():
        if info["kind"] != "explainer":
            continue
        for score, winners in best.items():
            if explainer in winners or score not in info["scores"]:
                continue
            winner = winners[0]
            ours, theirs = info["scores"][score], methods[winner]["scores"][score]
            overlap = ours["low"] <= theirs["high"] and theirs["low"] <= ours["high"]
            notes.append(
                f"{labels[score]}: {winner} ({_fmt(theirs)}) beats {explainer} ({_fmt(ours)}); the intervals "
                f"{'overlap, so the difference is within noise' if overlap else 'do not overlap'}. {winner} costs "
                f"{_passes(methods[winner])} and {methods[winner]['ms_per_image']:.3g} ms per image, {explainer} "
                f"{_passes(info)} and {info['ms_per_image']:.3g} ms."
            )
    return notes


def _passes(info: Mapping) -> str:
    count = info["passes_per_image"]
    return f"{count:.0f} pass{'' if round(count) == 1 else 'es'}"


def _fmt(summary: Mapping[str, float] | None, interval: bool = True) -> str:
    if summary is None or not math.isfinite(summary.get("mean", math.nan)):
        return "–"
    mean, half = summary["mean"], summary.get("half_width", math.nan)
    spec = ".2e" if 0 < abs(mean) < 0.01 else ".3f"
    if not interval or not math.isfinite(half):
        return format(mean, spec)
    low, high = summary.get("low", mean - half), summary.get("high", mean + half)
    if not math.isclose(high - low, 2 * half, rel_tol=1e-9, abs_tol=1e-12):  # clipped to the score's range
        return f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"
    return f"{mean:{spec}} ± {half:{'.1e' if spec == '.2e' else '.3f'}}"


def _rows(results: Mapping, bold: str, star: str) -> tuple[list[str], list[list[str]]]:
    columns = results["columns"]
    header = ["method"] + [f"{c['label']} {'↑' if c['higher_is_better'] else '↓'}" for c in columns]
    header += ["ms / image", "passes / image"]
    rows = []
    for name, info in results["methods"].items():
        row = [f"{name} (explainer)" if info["kind"] == "explainer" else name]
        for c in columns:
            text = _fmt(info["scores"].get(c["score"]))
            marked = name in results["best"].get(c["score"], [])
            row.append(f"{bold}{text}{bold}{star}" if marked else text)
        row += [f"{info['ms_per_image']:.3g}", f"{info['passes_per_image']:.0f}"]
        rows.append(row)
    return header, rows


def format_table(results: Mapping) -> str:
    """The table as aligned plain text, best per column marked with ``*``."""
    header, rows = _rows(results, "", "*")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_report(
    results: Mapping, config: Mapping | None = None, figures: Mapping[str, str] | None = None
) -> str:
    """results.md: how the numbers were made, the table (best per column in bold), the notes and the figures."""
    config = config or {}
    header, rows = _rows(results, "**", "")
    data = (
        config.get("data", {}).get("class_path", "the data module")
        if isinstance(config.get("data"), Mapping)
        else ""
    )
    lines = [
        "# Explanation evaluation",
        "",
        f"{results['num_images']} test images of {data or 'the data module'}, explaining the surrogate's "
        f"{results['target']} class. Removal metrics run through the surrogate ({results['masker']}, "
        f"{results['num_players']} players). Mean ± {results['confidence']:.0%} confidence interval (Student t over "
        "images); best per column in bold; ms / image is wall time of the explanation alone, passes / image the "
        "forward passes it makes through any network.",
        "",
    ]
    if config.get("command"):
        lines += [f"Command: `{config['command']}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if results["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in results["notes"]]
    kernel = results.get("kernel_shap_vs_ground_truth")
    if kernel:
        match = kernel["matching_budget"]
        lines += [
            "",
            f"KernelSHAP needs {match if match else 'more than ' + max(kernel['errors'], key=int, default='0')} "
            f"evaluations per image to match the squared error of {kernel['explainer']} "
            f"({kernel['explainer_squared_error']:.2e}).",
        ]
    for key, title in (
        ("explanations", "explanations"),
        ("insertion", "insertion curves"),
        ("deletion", "deletion curves"),
        ("kernel_shap", "KernelSHAP error vs evaluations"),
    ):
        if figures and key in figures:
            lines += ["", f"![{title}]({figures[key]})"]
    return "\n".join(lines) + "\n"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("lit_xai", "torch", "lightning", "torchmetrics", "timm", "jsonargparse"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    if torch.cuda.is_available():
        versions["cuda_device"] = torch.cuda.get_device_name()
    return versions


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (strict JSON); tuples, paths and other objects become lists and strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_outputs(
    results: Mapping, figure: Mapping | None, output_dir: str | Path, config: Mapping | None
) -> dict:
    """Write the figures, results.md and, last, results.json into ``output_dir``; returns ``{figure: file}``."""
    from lit_xai.evaluation.figures import draw_figures

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(results, figure, output_dir, FIGURES)
    atomic_write_text(output_dir / "results.md", markdown_report(results, config, figures))
    document = {**results, "figures": figures, "config": dict(config or {}), "versions": _versions()}
    atomic_write_text(output_dir / "results.json", json.dumps(_json_safe(document), indent=2) + "\n")
    return figures
