"""Metric classes: batch accumulation equals the functional result on all data, and DDP equals one process."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lit_xai.masking import BaselineFill
from lit_xai.metrics import Eraser, InsertionDeletion, Localization, SensitivityN, ShapleyError
from lit_xai.metrics.functional import eraser, insertion_deletion, localization, sensitivity_n, shapley_error
from lit_xai.players import PatchGrid

NUM_IMAGES = 11  # odd, so batches and DDP shards have unequal sizes


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; with several, thread hand-offs dominate on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_problem():
    """Deterministic data, model and explanations (also rebuilt inside the DDP workers)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4)
    ).eval()
    grid = PatchGrid(8, 2)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(NUM_IMAGES, 1, 8, 8, generator=gen)
    attributions = torch.randn(NUM_IMAGES, grid.num_players, generator=gen)
    attributions[3] = attributions[3].round()  # ties, broken by the metrics' seed
    shapley_values = attributions + 0.5 * torch.randn(NUM_IMAGES, grid.num_players, generator=gen)
    annotation = (torch.rand(NUM_IMAGES, 8, 8, generator=gen) > 0.6).float()
    target = torch.randint(0, 4, (NUM_IMAGES,), generator=gen)
    return {
        "model": model,
        "masker": BaselineFill(grid),
        "grid": grid,
        "x": x,
        "attributions": attributions,
        "shapley_values": shapley_values,
        "annotation": annotation,
        "target": target,
    }


def make_metrics(p):
    return {
        "insertion_deletion": InsertionDeletion(p["masker"], num_steps=8, batch_size=40, seed=5),
        "sensitivity_n": SensitivityN(p["masker"], [2, 8], num_subsets=10, batch_size=50, seed=5),
        "shapley_error": ShapleyError(top_k=3),
        "localization": Localization(players=p["grid"]),
        "eraser": Eraser(p["masker"], fractions=(0.1, 0.5), batch_size=30, seed=5),
    }


def update_all(metrics, p, rows):
    for batch in rows.split(4):
        model, x, a, t = p["model"], p["x"][batch], p["attributions"][batch], p["target"][batch]
        metrics["insertion_deletion"].update(model, x, a, t)
        metrics["sensitivity_n"].update(model, x, a, t)
        metrics["shapley_error"].update(a, p["shapley_values"][batch])
        metrics["localization"].update(a, p["annotation"][batch])
        metrics["eraser"].update(model, x, a, t)


def results(metrics):
    out = {name: {k: v.clone() for k, v in m.compute().items()} for name, m in metrics.items()}
    out["curves"] = metrics["insertion_deletion"].curves()
    out["summary"] = {name: m.summary() for name, m in metrics.items()}
    return out


def functional_scores(p):
    """Per-image scores over all the data at once, named as the classes name their means."""

    def gen():  # the classes re-seed at every update, so one fresh generator per call matches them
        return torch.Generator().manual_seed(5)

    model, masker, x, a, t = p["model"], p["masker"], p["x"], p["attributions"], p["target"]
    ins = insertion_deletion(model, masker, x, a, t, num_steps=8, generator=gen())
    sens = sensitivity_n(model, masker, x, a, t, [2, 8], num_subsets=10, generator=gen())
    era = eraser(model, masker, x, a, t, fractions=(0.1, 0.5), generator=gen())
    return {
        "insertion_deletion": {k: ins[k] for k in ("insertion_auc", "deletion_auc")},
        "sensitivity_n": {
            "sensitivity_n": sens.mean(1),
            "sensitivity_n_2": sens[:, 0],
            "sensitivity_n_8": sens[:, 1],
        },
        "shapley_error": shapley_error(a, p["shapley_values"], top_k=3),
        "localization": localization(a, p["annotation"], players=p["grid"]),
        "eraser": {
            "sufficiency": era["sufficiency"],
            "comprehensiveness": era["comprehensiveness"],
            "sufficiency_0.1": era["sufficiency_per_fraction"][:, 0],
            "sufficiency_0.5": era["sufficiency_per_fraction"][:, 1],
            "comprehensiveness_0.1": era["comprehensiveness_per_fraction"][:, 0],
            "comprehensiveness_0.5": era["comprehensiveness_per_fraction"][:, 1],
        },
        "curves": ins,
    }


def test_batched_updates_equal_the_functional_result_on_all_data():
    # Imported here, not at module level: the DDP workers import this module and need not pay for SciPy.
    stats = pytest.importorskip("scipy.stats")
    p = make_problem()
    metrics = make_metrics(p)
    update_all(metrics, p, torch.arange(NUM_IMAGES))
    got = results(metrics)
    expected = functional_scores(p)
    for name in metrics:
        assert set(got[name]) == set(expected[name]), name
        for key, values in expected[name].items():
            assert got[name][key].item() == pytest.approx(values.mean().item(), abs=1e-5), (name, key)
            # The summary's t-interval equals SciPy's on the per-image values.
            summary = got["summary"][name][key]
            values = values.double().numpy()
            low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
            assert summary["count"] == NUM_IMAGES
            assert (summary["low"], summary["high"]) == pytest.approx((low, high), abs=1e-6), (name, key)
    torch.testing.assert_close(
        got["curves"]["insertion_curve"], expected["curves"]["insertion_curve"].mean(0)
    )
    torch.testing.assert_close(got["curves"]["deletion_curve"], expected["curves"]["deletion_curve"].mean(0))
    torch.testing.assert_close(got["curves"]["fractions"], expected["curves"]["fractions"])


def test_forward_reset_and_errors():
    p = make_problem()
    metric = ShapleyError(top_k=3)
    batch_value = metric(p["attributions"][:4], p["shapley_values"][:4])  # forward: this batch's means
    metric.update(p["attributions"][4:], p["shapley_values"][4:])
    everything = shapley_error(p["attributions"], p["shapley_values"], top_k=3)
    first = shapley_error(p["attributions"][:4], p["shapley_values"][:4], top_k=3)
    assert batch_value["pearson"].item() == pytest.approx(first["pearson"].mean().item(), abs=1e-6)
    assert metric.compute()["pearson"].item() == pytest.approx(everything["pearson"].mean().item(), abs=1e-6)
    metric.reset()
    assert metric.count.item() == 0
    with pytest.raises(ValueError, match="1..15"):
        SensitivityN(p["masker"], [16])
    with pytest.raises(ValueError, match="unique"):
        Eraser(p["masker"], fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="num_steps"):
        InsertionDeletion(p["masker"], num_steps=100)
    assert math.isnan(ShapleyError().summary()["pearson"]["mean"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_every_metric_refuses_nan_and_inf_attributions(bad):
    p = make_problem()
    attributions = p["attributions"][:4].clone()
    attributions[1, 5] = bad
    metrics = make_metrics(p)
    model, x, t = p["model"], p["x"][:4], p["target"][:4]
    updates = {
        "insertion_deletion": lambda m: m.update(model, x, attributions, t),
        "sensitivity_n": lambda m: m.update(model, x, attributions, t),
        "shapley_error": lambda m: m.update(attributions, p["shapley_values"][:4]),
        "localization": lambda m: m.update(attributions, p["annotation"][:4]),
        "eraser": lambda m: m.update(model, x, attributions, t),
    }
    for name, update in updates.items():
        with pytest.raises(
            ValueError, match=r"attributions hold \d+ NaN/inf value\(s\) of \d+; fix the explainer"
        ):
            update(metrics[name])
        assert metrics[name].count.item() == 0, f"{name} counted a refused batch"
    # The ground truth is checked too: a NaN there would make the errors NaN just the same.
    truth = p["shapley_values"][:4].clone()
    truth[0, 0] = bad
    with pytest.raises(ValueError, match="shapley_values hold 1 NaN/inf value.* fix the ground truth"):
        metrics["shapley_error"].update(p["attributions"][:4], truth)


def test_removal_metrics_take_an_empty_batch_through_token_dropping():
    """The last DDP shard or a filtered batch can be empty: it adds nothing, and the totals are unchanged."""
    timm = pytest.importorskip("timm")
    from lit_xai.masking import TokenDrop

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=8, patch_size=2, in_chans=1,
        embed_dim=16, depth=1, num_heads=2,
    ).eval()  # fmt: skip
    p = make_problem()
    masker = TokenDrop(p["grid"])
    empty = (torch.zeros(0, 1, 8, 8), torch.zeros(0, 16), torch.zeros(0, dtype=torch.long))
    for make in (
        lambda: InsertionDeletion(masker, num_steps=4, seed=5),
        lambda: SensitivityN(masker, [2, 8], num_subsets=5, seed=5),
        lambda: Eraser(masker, fractions=(0.1, 0.5), seed=5),
    ):
        with_empty, without = make(), make()
        with_empty.update(vit, *empty)
        assert with_empty.count.item() == 0
        for metric in (with_empty, without):
            metric.update(vit, p["x"][:3], p["attributions"][:3], p["target"][:3])
        for key, value in without.compute().items():
            assert torch.isfinite(value) and torch.equal(with_empty.compute()[key], value), key


# -------------------------------------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world_size: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        p = make_problem()
        metrics = make_metrics(p)
        half = (NUM_IMAGES + 1) // 2  # rank 0 gets 6 images, rank 1 gets 5
        rows = torch.arange(half) if rank == 0 else torch.arange(half, NUM_IMAGES)
        update_all(metrics, p, rows)
        out = results(metrics)
        if rank == 0:
            torch.save(out, out_path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_two_processes_equal_one_process(tmp_path):
    out_path = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out_path), nprocs=2, join=True)
    ddp = torch.load(out_path, weights_only=False)

    p = make_problem()
    metrics = make_metrics(p)
    update_all(metrics, p, torch.arange(NUM_IMAGES))
    single = results(metrics)
    for name in metrics:
        for key, value in single[name].items():
            assert ddp[name][key].item() == pytest.approx(value.item(), abs=1e-6), (name, key)
        for key, summary in single["summary"][name].items():
            assert ddp["summary"][name][key] == pytest.approx(summary, abs=1e-6), (name, key)
    for key, curve in single["curves"].items():
        torch.testing.assert_close(ddp["curves"][key], curve)


def test_intervals_are_clipped_to_the_values_a_score_can_take():
    """Three hits and one miss of the pointing game: the t-interval 0.75 ± 0.80 becomes [0, 1], not [-0.05, 1.55]."""
    grid = PatchGrid(4, 2)
    attributions = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(4, 1)  # every map points at player 0
    annotation = torch.zeros(4, 4, 4)
    annotation[:3, :2, :2] = 1  # player 0's pixels
    annotation[3, 2:, 2:] = 1  # player 3's: a miss
    metric = Localization(grid)
    metric.update(attributions, annotation)
    pointing = metric.summary()["pointing_game"]
    assert pointing["mean"] == 0.75 and pointing["half_width"] > 0.75
    assert (pointing["low"], pointing["high"]) == (0.0, 1.0)

    masker = BaselineFill(grid)
    assert InsertionDeletion(masker).value_ranges()["insertion_auc"] == (0.0, 1.0)
    assert InsertionDeletion(masker, link="logits").value_ranges() == {}  # logits are unbounded
    assert ShapleyError().value_ranges()["pearson"] == (-1.0, 1.0)
