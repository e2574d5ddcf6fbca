"""make demo's pipeline, shortened: every stage trains through train.py's configs and the report is written."""

import json
import os

import pytest

from lit_xai import demo


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path, monkeypatch):
    root = os.getcwd()
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(root, "configs"), tmp_path / "configs")
    results = demo.main(["--fast", "--num-images", "2"])
    report = (tmp_path / "outputs/demo/report.md").read_text()
    assert "explainer" in report and "KernelSHAP" in report
    assert (tmp_path / "outputs/demo/explanations.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "outputs/demo/results.json").read_text())
    assert saved["num_images"] == 2
    # Efficiency makes the explainer and the exact values agree on the sum; their error is finite and reported.
    assert results["explainer_vs_exact"]["squared_error"] >= 0
    for stage in demo.STAGES:
        assert (tmp_path / "outputs/digits" / stage / "checkpoints/best.ckpt").is_file()
