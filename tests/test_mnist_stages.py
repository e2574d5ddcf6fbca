"""The MNIST configs (ViT on real 28x28 digits, 2x2 patches: 196 players) run as written, on a tiny split.

Each stage reads the previous stage's best.ckpt from the path its config names, so the three commands of the README
are exercised in order; one epoch of two batches each, 40 digits per class.
"""

from pathlib import Path

import pytest
import torch
from test_cli import ROOT, run_train

from lit_xai.algorithms.vit_shapley import ExplainerModule

TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.per_class=40",  # 40 validation digits: the callbacks ask for up to 32
]


@pytest.mark.slow
def test_mnist_classifier_surrogate_explainer_configs_run_in_order(tmp_path: Path):
    for stage in ("classifier", "surrogate", "explainer"):
        result = run_train("fit", "--config", str(ROOT / f"configs/mnist/{stage}.yaml"), *TINY, cwd=tmp_path)
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
        assert (tmp_path / f"outputs/mnist/{stage}/checkpoints/best.ckpt").is_file()
    explainer = ExplainerModule.load_from_checkpoint(
        tmp_path / "outputs/mnist/explainer/checkpoints/best.ckpt", weights_only=True
    ).eval()
    assert explainer.players.num_players == 196
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        phi = explainer.attribute(x)
        grand, null = explainer.net.grand(x), explainer.net.null_value(x)
    assert phi.shape == (2, 196, 10)
    torch.testing.assert_close(phi.sum(1), grand - null, atol=1e-5, rtol=0)  # efficient: v(all) - v(∅)
