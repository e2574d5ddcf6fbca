"""Functional explanation metrics: against slow loop references, and on models whose answer is known."""

import itertools
import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from lit_xai.masking import BaselineFill, TokenDrop
from lit_xai.metrics.functional import (
    effective_heat_ratio,
    eraser,
    insertion_deletion,
    localization,
    mean_confidence_interval,
    sensitivity_n,
    shapley_error,
)
from lit_xai.metrics.functional._utils import rank_players, rankdata
from lit_xai.players import FeatureGroups, PatchGrid

stats = pytest.importorskip("scipy.stats")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; with several, thread hand-offs dominate on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cnn(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, num_classes)
    ).eval()


def image_problem(batch: int = 5, seed: int = 1):
    """A nonlinear model on 2x8x8 images with 16 players (2x2 patches), zero filling, random attributions."""
    gen = torch.Generator().manual_seed(seed)
    grid = PatchGrid(8, 2)
    x = torch.randn(batch, 2, 8, 8, generator=gen)
    attributions = torch.randn(batch, grid.num_players, generator=gen)
    target = torch.randint(0, 3, (batch,), generator=gen)
    return tiny_cnn(), BaselineFill(grid), x, attributions, target


def value(model, masker, x, keep, target, link="softmax"):
    """The reference's single evaluation: one image, one mask."""
    with torch.no_grad():
        logits = masker(model, x.unsqueeze(0), keep.unsqueeze(0))[0]
    out = {"softmax": logits.softmax(-1), "logits": logits, "sigmoid": logits.sigmoid()}[link]
    return float(out[target])


def reference_curves(model, masker, x, attributions, target, counts, link="softmax"):
    """Slow insertion/deletion: one image and one count at a time (no ties in the attributions)."""
    d = attributions.shape[1]
    insertion, deletion = [], []
    for b in range(x.shape[0]):
        order = sorted(range(d), key=lambda i: -float(attributions[b, i]))
        ins_row, del_row = [], []
        for k in counts:
            top = torch.zeros(d, dtype=torch.bool)
            top[order[:k]] = True
            ins_row.append(value(model, masker, x[b], top, int(target[b]), link))
            del_row.append(value(model, masker, x[b], ~top, int(target[b]), link))
        insertion.append(ins_row)
        deletion.append(del_row)
    return torch.tensor(insertion), torch.tensor(deletion)


def trapezoid_loop(ys, xs):
    return sum((ys[i] + ys[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(len(xs) - 1))


# ------------------------------------------------------------------------------------------------ insertion/deletion


@pytest.mark.parametrize("num_steps", [None, 5])
def test_insertion_deletion_matches_loop_reference(num_steps):
    model, masker, x, attributions, target = image_problem()
    d = masker.num_players
    counts = (
        list(range(d + 1)) if num_steps is None else [round(j * d / num_steps) for j in range(num_steps + 1)]
    )
    result = insertion_deletion(model, masker, x, attributions, target, num_steps=num_steps, batch_size=7)
    ref_ins, ref_del = reference_curves(model, masker, x, attributions, target, counts)
    fractions = [k / d for k in counts]
    assert result["insertion_curve"].shape == (5, len(counts))
    torch.testing.assert_close(result["fractions"], torch.tensor(fractions))
    torch.testing.assert_close(result["insertion_curve"], ref_ins, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result["deletion_curve"], ref_del, atol=1e-5, rtol=1e-5)
    for b in range(5):
        assert result["insertion_auc"][b].item() == pytest.approx(
            trapezoid_loop(ref_ins[b].tolist(), fractions), abs=1e-5
        )
        assert result["deletion_auc"][b].item() == pytest.approx(
            trapezoid_loop(ref_del[b].tolist(), fractions), abs=1e-5
        )


def test_insertion_deletion_with_vit_token_dropping():
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=3,
        img_size=8,
        patch_size=2,
        in_chans=2,
        embed_dim=16,
        depth=1,
        num_heads=2,
    ).eval()
    masker = TokenDrop(PatchGrid(8, 2))
    _, _, x, attributions, target = image_problem(batch=2)
    result = insertion_deletion(vit, masker, x, attributions, target, num_steps=4, batch_size=3)
    ref_ins, ref_del = reference_curves(vit, masker, x, attributions, target, [0, 4, 8, 12, 16])
    torch.testing.assert_close(result["insertion_curve"], ref_ins, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result["deletion_curve"], ref_del, atol=1e-5, rtol=1e-5)


def linear_problem(num_features: int = 5, batch: int = 1):
    """One-output linear model, positive weights and inputs: every contribution w_i x_i is positive."""
    torch.manual_seed(3)
    model = nn.Linear(num_features, 1)
    with torch.no_grad():
        model.weight.copy_(torch.rand(1, num_features) + 0.1)
    x = torch.rand(batch, num_features) + 0.1
    exact = (model.weight * x).detach()
    return model, BaselineFill(FeatureGroups(num_features)), x, exact


def test_exact_linear_attribution_gives_the_best_ordering():
    """Among all 120 orderings of 5 players, w*x maximises the insertion AUC and minimises the deletion AUC."""
    model, masker, x, exact = linear_problem()
    orderings = torch.tensor(list(itertools.permutations(range(5))))
    # Attributions that rank the players in each given order: the first listed player gets the largest value.
    ranked = torch.empty(len(orderings), 5).scatter_(
        1, orderings, torch.arange(5, 0, -1.0).expand(len(orderings), 5)
    )
    inputs = x.expand(len(orderings), 5)
    everyone = insertion_deletion(model, masker, inputs, ranked, 0, link="sigmoid")
    best = insertion_deletion(model, masker, x, exact, 0, link="sigmoid")
    assert best["insertion_auc"].item() == pytest.approx(everyone["insertion_auc"].max().item(), abs=1e-6)
    assert best["deletion_auc"].item() == pytest.approx(everyone["deletion_auc"].min().item(), abs=1e-6)
    # Contributions are distinct, so only the exact ordering attains the optimum.
    assert everyone["insertion_auc"].topk(2).values.diff().abs().item() > 1e-6
    # On the logit scale the curves of the exact ranking are monotone, with concave insertion (largest gains first).
    curves = insertion_deletion(model, masker, x, exact, 0, link="logits")
    assert (curves["insertion_curve"].diff() > 0).all() and (curves["deletion_curve"].diff() < 0).all()
    assert (curves["insertion_curve"].diff().diff() <= 1e-6).all()


def test_ties_are_broken_at_random_but_reproducibly():
    attributions = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 1.0]])
    ranks = [rank_players(attributions, torch.Generator().manual_seed(s))[0] for s in range(20)]
    for r in ranks:
        assert sorted(r.tolist()) == list(range(8))
        assert r[5] == 0 and {int(r[0]), int(r[6])} == {6, 7}  # ties only reorder players of equal value
    assert len({tuple(r.tolist()) for r in ranks}) > 5
    torch.testing.assert_close(ranks[3], rank_players(attributions, torch.Generator().manual_seed(3))[0])
    # An image's ranking does not depend on the other images in the batch.
    batch = torch.cat([attributions, torch.randn(3, 8)])
    torch.testing.assert_close(rank_players(batch, torch.Generator().manual_seed(3))[0], ranks[3])


def test_insertion_deletion_rejects_bad_input():
    model, masker, x, attributions, target = image_problem()
    with pytest.raises(ValueError, match="num_steps"):
        insertion_deletion(model, masker, x, attributions, target, num_steps=17)
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        insertion_deletion(model, masker, x, attributions[:, :8], target)
    with pytest.raises(ValueError, match="target"):
        insertion_deletion(model, masker, x, attributions, target[:2])


# ------------------------------------------------------------------------------------------------------ sensitivity-n


def test_sensitivity_n_of_exact_linear_attributions_is_one():
    torch.manual_seed(0)
    model = nn.Linear(12, 4)
    players = FeatureGroups(12, groups=[[0, 1], [2], [3, 4, 5], [6], [7, 8], [9], [10, 11]])
    x = torch.randn(6, 12)
    target = torch.randint(0, 4, (6,))
    exact = players.pool((model.weight[target] * x).detach())  # sum of w_i x_i over each group's columns
    scores = sensitivity_n(
        model, BaselineFill(players), x, exact, target, [1, 3, 6], num_subsets=30, link="logits"
    )
    torch.testing.assert_close(scores, torch.ones(6, 3), atol=1e-5, rtol=0)
    noisy = sensitivity_n(
        model,
        BaselineFill(players),
        x,
        exact + torch.randn_like(exact),
        target,
        [1, 3, 6],
        num_subsets=30,
        link="logits",
    )
    assert (noisy < 0.999).all()


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_sensitivity_n_matches_loop_reference(correlation):
    model, masker, x, attributions, target = image_problem(batch=3)
    sizes, m, d = [2, 9], 12, masker.num_players
    result = sensitivity_n(
        model,
        masker,
        x,
        attributions,
        target,
        sizes,
        num_subsets=m,
        correlation=correlation,
        batch_size=10,
        generator=torch.Generator().manual_seed(4),
    )
    # The documented draw: per size, m uniform subsets shared by all images.
    gen = torch.Generator().manual_seed(4)
    subsets = [torch.rand(m, d, generator=gen).argsort(1).argsort(1) < n for n in sizes]
    correlate = stats.pearsonr if correlation == "pearson" else stats.spearmanr
    for b in range(3):
        full = value(model, masker, x[b], torch.ones(d, dtype=torch.bool), int(target[b]))
        for j in range(len(sizes)):
            drops = [full - value(model, masker, x[b], ~s, int(target[b])) for s in subsets[j]]
            sums = [float(attributions[b][s].sum()) for s in subsets[j]]
            assert result[b, j].item() == pytest.approx(correlate(sums, drops)[0], abs=1e-4)


def test_sensitivity_n_rejects_bad_sizes():
    model, masker, x, attributions, target = image_problem()
    with pytest.raises(ValueError, match="1..15"):
        sensitivity_n(model, masker, x, attributions, target, [16])
    with pytest.raises(ValueError, match="correlation"):
        sensitivity_n(model, masker, x, attributions, target, [2], correlation="kendall")


# ------------------------------------------------------------------------------------------------------ shapley error


def test_shapley_error_matches_loop_reference():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(8, 20, generator=gen)
    estimate = truth + 0.7 * torch.randn(8, 20, generator=gen)
    estimate[0] = estimate[0].round()  # ties, for the average-rank Spearman
    estimate[1, :5] = 0.0
    truth[1, :3] = 0.0
    out = shapley_error(estimate, truth, top_k=4)
    for b in range(8):
        a, t = estimate[b].numpy().astype(np.float64), truth[b].numpy().astype(np.float64)
        assert out["squared_error"][b].item() == pytest.approx(float(((a - t) ** 2).sum()), rel=1e-5)
        assert out["pearson"][b].item() == pytest.approx(stats.pearsonr(a, t)[0], abs=1e-5)
        assert out["spearman"][b].item() == pytest.approx(stats.spearmanr(a, t)[0], abs=1e-5)
        assert out["sign_agreement"][b].item() == pytest.approx(float(np.mean(np.sign(a) == np.sign(t))))
        top_true = set(np.argsort(-t)[:4].tolist()) if b != 1 else None
        if top_true is not None:  # row 1 has ties among the true values' top
            top_est = set(np.argsort(-a)[:4].tolist())
            assert out["top_k_overlap"][b].item() == pytest.approx(len(top_true & top_est) / 4)
    perfect = shapley_error(truth, truth)
    assert (perfect["squared_error"] == 0).all() and (perfect["top_k_overlap"] == 1).all()
    torch.testing.assert_close(perfect["pearson"], torch.ones(8))


def test_rankdata_matches_scipy_with_ties():
    values = torch.randint(0, 4, (6, 11)).float()
    expected = np.stack([stats.rankdata(row) for row in values.numpy()])
    np.testing.assert_allclose(rankdata(values).numpy(), expected)


def test_shapley_error_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        shapley_error(torch.zeros(2, 5), torch.zeros(2, 6))


# ------------------------------------------------------------------------------------------------------- localization


def reference_ehr(heatmap, roi, base=0.1):
    """InputIBA's definition, one map at a time, with NumPy's quantiles (linear interpolation)."""
    h = heatmap.astype(np.float64)
    h = (h - h.min()) / (h.max() - h.min())
    h[h < base] = 0.0
    poi = np.sort(h[h >= base])
    qs = np.arange(11) / 10
    ratios = []
    for q in qs:
        # Linear-interpolation quantile; a position on an order statistic (up to round-off) is that statistic.
        position = q * (len(poi) - 1)
        if abs(position - round(position)) < 1e-6:
            position = round(position)
        low, high = math.floor(position), math.ceil(position)
        t = min(poi[low] + (poi[high] - poi[low]) * (position - low), h.max() * 0.99)
        selected = h >= t
        ratios.append(h[selected & roi].sum() / selected.sum())
    return trapezoid_loop(ratios, qs)


def test_localization_matches_loop_reference_on_pixel_maps():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 8, 8, generator=gen)
    maps[2] = maps[2].round()  # ties at the maximum
    annotation = (torch.rand(6, 8, 8, generator=gen) > 0.6).float()
    out = localization(maps, annotation)
    for b in range(6):
        m, roi = maps[b].numpy().astype(np.float64), annotation[b].numpy() >= 0.5
        at_max = m == m.max()
        assert out["pointing_game"][b].item() == pytest.approx((at_max & roi).sum() / at_max.sum())
        positive = np.clip(m, 0, None)
        assert out["relevance_mass"][b].item() == pytest.approx(
            positive[roi].sum() / positive.sum(), abs=1e-6
        )
        assert out["ehr_auc"][b].item() == pytest.approx(reference_ehr(m, roi), abs=1e-5)


def test_localization_spreads_player_attributions_over_pixels():
    grid = PatchGrid(8, 2)
    gen = torch.Generator().manual_seed(1)
    attributions = torch.randn(4, 16, generator=gen)
    annotation = (torch.rand(4, 8, 8, generator=gen) > 0.5).float()
    by_players = localization(attributions, annotation, players=grid)
    by_pixels = localization(grid.upsample(attributions), annotation)
    for key in by_players:
        torch.testing.assert_close(by_players[key], by_pixels[key])
    with pytest.raises(ValueError, match="players="):
        localization(attributions, annotation)


def test_localization_known_answers():
    annotation = torch.zeros(1, 10, 10)
    annotation[0, 2:5, 3:8] = 1
    perfect = localization(annotation.clone(), annotation)
    assert {k: v.item() for k, v in perfect.items()} == pytest.approx(
        {"pointing_game": 1.0, "relevance_mass": 1.0, "ehr_auc": 1.0}
    )
    outside = localization(1 - annotation, annotation)
    assert {k: v.item() for k, v in outside.items()} == pytest.approx(
        {"pointing_game": 0.0, "relevance_mass": 0.0, "ehr_auc": 0.0}
    )
    constant = effective_heat_ratio(torch.ones(1, 100), annotation.flatten(1) > 0)
    assert constant["auc"].item() == 0.0 and constant["ratios"].shape == (1, 11)


def test_random_attributions_score_the_annotated_fraction():
    """Pointing game and relevance mass of random maps are, in expectation, the annotated fraction (30%)."""
    gen = torch.Generator().manual_seed(0)
    annotation = torch.zeros(4000, 50)
    annotation[:, :15] = 1
    out = localization(torch.rand(4000, 50, generator=gen), annotation)
    assert out["pointing_game"].mean().item() == pytest.approx(0.3, abs=0.03)
    assert out["relevance_mass"].mean().item() == pytest.approx(0.3, abs=0.01)


# ------------------------------------------------------------------------------------------------------------- ERASER


def test_eraser_matches_loop_reference():
    model, masker, x, attributions, target = image_problem(batch=4)
    fractions = (0.1, 0.25, 0.5)
    out = eraser(model, masker, x, attributions, target, fractions=fractions, batch_size=5)
    d = masker.num_players
    for b in range(4):
        order = sorted(range(d), key=lambda i: -float(attributions[b, i]))
        full = value(model, masker, x[b], torch.ones(d, dtype=torch.bool), int(target[b]))
        suff, comp = [], []
        for f in fractions:
            top = torch.zeros(d, dtype=torch.bool)
            top[order[: max(1, math.floor(f * d + 0.5))]] = True
            suff.append(full - value(model, masker, x[b], top, int(target[b])))
            comp.append(full - value(model, masker, x[b], ~top, int(target[b])))
        torch.testing.assert_close(out["sufficiency_per_fraction"][b], torch.tensor(suff), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            out["comprehensiveness_per_fraction"][b], torch.tensor(comp), atol=1e-5, rtol=0
        )
        assert out["sufficiency"][b].item() == pytest.approx(np.mean(suff), abs=1e-5)
        assert out["comprehensiveness"][b].item() == pytest.approx(np.mean(comp), abs=1e-5)


def test_eraser_exact_linear_attribution_beats_reversed_ranking():
    model, masker, x, exact = linear_problem(num_features=10, batch=3)
    good = eraser(model, masker, x, exact, 0, link="sigmoid")
    bad = eraser(model, masker, x, -exact, 0, link="sigmoid")
    assert (good["comprehensiveness"] > bad["comprehensiveness"]).all()
    assert (good["sufficiency"] < bad["sufficiency"]).all()
    with pytest.raises(ValueError, match="fractions"):
        eraser(model, masker, x, exact, 0, fractions=(0.0, 0.5))


# --------------------------------------------------------------------------------------------- confidence intervals


def test_mean_confidence_interval_matches_scipy():
    values = torch.randn(37, generator=torch.Generator().manual_seed(0)) * 2 + 1
    out = mean_confidence_interval(values, confidence=0.9)
    low, high = stats.t.interval(
        0.9, 36, loc=values.double().mean().item(), scale=stats.sem(values.double().numpy())
    )
    assert (out["low"], out["high"]) == pytest.approx((low, high), rel=1e-9)
    assert out["count"] == 37 and out["std"] == pytest.approx(values.double().std().item())
    assert math.isnan(mean_confidence_interval(torch.tensor([1.0]))["half_width"])
