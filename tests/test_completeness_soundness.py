"""Completeness and soundness (Gupta et al., NeurIPS 2022): hand-derived values on linear models, a cross-check of
the insertion mode against the insertion curve, batching and two-process DDP equal to one process."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lit_xai.masking import BaselineFill
from lit_xai.metrics import CompletenessSoundness
from lit_xai.metrics.functional import completeness_soundness, insertion_deletion
from lit_xai.players import FeatureGroups


def linear(weight) -> nn.Module:
    model = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return model


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_soft_masks_by_hand():
    # logits (2 x0, 0) at x = (1, 1): p = (s(2), s(-2)) = (0.8808, 0.1192).
    model = linear([[2.0, 0.0], [0.0, 0.0]])
    masker = BaselineFill(FeatureGroups(2))
    x = torch.ones(1, 2)
    # Label 0's mask keeps x0: q0 = p0, complete. Label 1's mask keeps nothing: logits (0, 0), q1 = 0.5, far above
    # p1, so the mask "certifies" label 1 better than the input does: soundness max(0.1, p1) / 0.5.
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (B, d, K): column k is label k's mask
    out = completeness_soundness(model, masker, x, maps, mode="soft")
    p0, p1 = sigmoid(2.0), sigmoid(-2.0)
    assert out["probability"][0].tolist() == pytest.approx([p0, p1], abs=1e-6)
    assert out["evidence"][0].tolist() == pytest.approx([p0, 0.5], abs=1e-6)
    assert out["completeness"].item() == pytest.approx(1.0)
    assert out["soundness"].item() == pytest.approx(p1 / 0.5, abs=1e-6)
    assert out["worst_soundness"].item() == pytest.approx(p1 / 0.5, abs=1e-6)
    assert out["completeness_per_label"][0, 1].item() == pytest.approx(1.0)  # 0.5 / p1 > 1, capped

    # Half of x0 kept for label 0: logit 1, q0 = s(1) < p0; completeness s(1) / s(2).
    maps[0, 0, 0] = 0.5
    out = completeness_soundness(model, masker, x, maps, mode="soft")
    assert out["completeness"].item() == pytest.approx(sigmoid(1.0) / p0, abs=1e-6)

    # The explained label given: label 1's completeness is capped, label 0's soundness is 1 (q0 <= p0).
    out = completeness_soundness(model, masker, x, maps, target=1, mode="soft")
    assert out["completeness"].item() == pytest.approx(1.0)
    assert out["soundness"].item() == pytest.approx(1.0)


def test_floors_by_hand():
    # A confident network: p1 = s(-6) = 0.0025 < beta. An empty mask for label 1 gives q1 = 0.5: soundness is
    # beta / q1 = 0.2, not p1 / q1; a mask with q below epsilon counts as epsilon for completeness.
    model = linear([[6.0, 0.0], [0.0, 0.0]])
    masker = BaselineFill(FeatureGroups(2))
    x = torch.ones(1, 2)
    maps = torch.zeros(1, 2, 2)
    out = completeness_soundness(model, masker, x, maps, mode="soft")
    assert out["soundness"].item() == pytest.approx(0.1 / 0.5, abs=1e-6)
    assert out["completeness"].item() == pytest.approx(0.5 / sigmoid(6.0), abs=1e-6)
    out = completeness_soundness(model, masker, x, maps, mode="soft", beta=0.0)
    assert out["soundness"].item() == pytest.approx(sigmoid(-6.0) / 0.5, rel=1e-4)


def test_insertion_mode_by_hand_and_against_the_insertion_curve():
    # Two players, curve at 0, 1, 2 players: q = (v0 / 2 + v1 + v2 / 2) / 2.
    model = linear([[2.0, -1.0], [0.0, 1.0]])
    masker = BaselineFill(FeatureGroups(2))
    x = torch.ones(1, 2)
    maps = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # label 0 ranks x0 first, label 1 ranks x1 first
    out = completeness_soundness(model, masker, x, maps)
    # label 0: logit gap z0 - z1 = 0 (nothing), 2 (x0), 0 (both); label 1: gap z1 - z0 = 0, 2 (x1), 0.
    q = (0.5 / 2 + sigmoid(2.0) + 0.5 / 2) / 2
    assert out["evidence"][0].tolist() == pytest.approx([q, q], abs=1e-6)
    assert out["probability"][0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)

    torch.manual_seed(0)
    cnn_like = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    masker = BaselineFill(FeatureGroups(6))
    x, maps = torch.randn(5, 6), torch.randn(5, 6, 4)
    out = completeness_soundness(cnn_like, masker, x, maps)
    for k in range(4):
        reference = insertion_deletion(cnn_like, masker, x, maps[:, :, k], k)["insertion_auc"]
        torch.testing.assert_close(out["evidence"][:, k], reference)
    # A subset of labels: the softmax is over those labels only (the paper's reduced model).
    out = completeness_soundness(cnn_like, masker, x, maps[:, :, [1, 3]], labels=[1, 3])
    probs = cnn_like(x)[:, [1, 3]].softmax(-1)
    torch.testing.assert_close(out["probability"], probs.detach())


def test_errors():
    model, masker = linear([[1.0, 0.0], [0.0, 1.0]]), BaselineFill(FeatureGroups(2))
    x = torch.ones(2, 2)
    with pytest.raises(ValueError, match="one map per label"):
        completeness_soundness(model, masker, x, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least two labels"):
        completeness_soundness(model, masker, x, torch.zeros(2, 2, 1))
    with pytest.raises(ValueError, match="evaluated labels"):
        completeness_soundness(model, masker, x, torch.zeros(2, 2, 2), target=5)
    with pytest.raises(ValueError, match="mode"):
        completeness_soundness(model, masker, x, torch.zeros(2, 2, 2), mode="hard")
    with pytest.raises(ValueError, match="fractions"):
        completeness_soundness(model, masker, x, torch.full((2, 2, 2), 2.0), mode="soft")
    with pytest.raises(ValueError, match="beta"):
        CompletenessSoundness(masker, beta=2.0)


NUM_IMAGES = 7


def problem():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, maps = torch.randn(NUM_IMAGES, 5), torch.randn(NUM_IMAGES, 5, 3)
    return model, BaselineFill(FeatureGroups(5)), x, maps


def test_batched_updates_equal_the_functional_means():
    model, masker, x, maps = problem()
    metric = CompletenessSoundness(masker)
    metric.update(model, x[:3], maps[:3])
    metric.update(model, x[3:], maps[3:])
    whole = completeness_soundness(model, masker, x, maps)
    for name, value in metric.compute().items():
        assert value.item() == pytest.approx(whole[name].mean().item(), abs=1e-6), name


def _ddp_worker(rank: int, world_size: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model, masker, x, maps = problem()
        rows = torch.arange(4) if rank == 0 else torch.arange(4, NUM_IMAGES)
        metric = CompletenessSoundness(masker)
        metric.update(model, x[rows], maps[rows])
        out = {name: value.clone() for name, value in metric.compute().items()}
        if rank == 0:
            torch.save(out, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_two_processes_equal_one_process(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out_path = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(2, port, out_path), nprocs=2, join=True)
    ddp = torch.load(out_path, weights_only=True)
    model, masker, x, maps = problem()
    whole = completeness_soundness(model, masker, x, maps)
    for name, value in ddp.items():
        assert value.item() == pytest.approx(whole[name].mean().item(), abs=1e-6), name
