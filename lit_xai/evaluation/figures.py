"""The figures of an evaluation report, drawn with :mod:`lit_xai.viz`.

- ``explanations.png``: the first test images with each method's heatmap (player values spread over their pixels),
  captioned with class names; one colour scale and colour bar per method, since methods answer in different units
  (a gradient, a probability, the random baseline's noise) and one scale for all would blank all but the largest;
- ``insertion_curves.png`` / ``deletion_curves.png``: the mean curves of every method (Petsiuk et al., RISE, 2018);
- ``kernel_shap_error.png``: KernelSHAP's error against the ground truth as its budget grows, with the learned
  explainer's error as a horizontal line (ViT Shapley, Covert, Kim & Lee, ICLR 2023, Fig. 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt

from lit_xai.viz import curves, explanation_grid, save_figure

__all__ = ["draw_figures"]


def draw_figures(
    results: Mapping, figure: Mapping | None, output_dir: Path, names: Mapping[str, str]
) -> dict[str, str]:
    """Draw every figure the results allow; returns ``{figure key: file name}`` of those written."""
    written: dict[str, str] = {}
    if figure is not None and figure["images"].dim() == 4:  # image data (tabular rows get no grid)
        labels = {
            name: f"{name} (explainer)" if results["methods"][name]["kind"] == "explainer" else name
            for name in figure["maps"]
        }
        fig = explanation_grid(
            figure["images"],
            {labels[name]: maps for name, maps in figure["maps"].items()},
            figure["captions"],
            scale="method",
        )
        _save(fig, output_dir / names["explanations"])
        written["explanations"] = names["explanations"]

    if results["curves"]:
        for kind in ("insertion", "deletion"):
            x = next(iter(results["curves"].values()))["fractions"]
            fig = curves(
                {name: c[f"{kind}_curve"] for name, c in results["curves"].items()},
                x=x,
                xlabel=f"fraction of players {'inserted' if kind == 'insertion' else 'deleted'}, most important first",
                ylabel="surrogate probability of the target class",
                title=f"{kind.capitalize()} curves (mean over {results['num_images']} images)",
            )
            _save(fig, output_dir / names[kind])
            written[kind] = names[kind]

    kernel = results.get("kernel_shap_vs_ground_truth")
    if kernel and kernel["errors"]:
        budgets = [int(b) for b in kernel["errors"]]
        explainers = {
            f"{name} ({info['passes_per_image']:.0f} passes per image)": info["scores"][
                "shapley_squared_error"
            ]["mean"]
            for name, info in results["methods"].items()
            if info["kind"] == "explainer" and "shapley_squared_error" in info["scores"]
        }
        fig = curves(
            {"KernelSHAP": [e["squared_error"] for e in kernel["errors"].values()]},
            x=budgets,
            xlabel="model evaluations per image",
            ylabel="squared error vs ground truth",
            title="KernelSHAP against the learned explainer",
            hlines=explainers,
            logx=True,
        )
        fig.axes[0].set_yscale("log")
        _save(fig, output_dir / names["kernel_shap"])
        written["kernel_shap"] = names["kernel_shap"]
    return written


def _save(fig: plt.Figure, path: Path) -> None:
    save_figure(fig, path)
    plt.close(fig)
