"""build_model: small models, timm models, safe local checkpoints, clear errors."""

import pickle

import pytest
import torch

from lit_xai.models import backbone_from_checkpoint, build_model, load_state_dict


def test_small_and_timm_models_build():
    assert build_model("mlp", 3, in_features=30)(torch.randn(2, 30)).shape == (2, 3)
    assert build_model("cnn", 4, in_chans=3)(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    vit = build_model(
        "vit_tiny_patch16_224", 10, img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=1, num_heads=2
    )
    assert vit(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_local_checkpoint_round_trip(tmp_path):
    model = build_model("cnn", 4, in_chans=1)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    lightning_style = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    torch.save(lightning_style, tmp_path / "stage.ckpt")
    for path in ("weights.pt", "stage.ckpt"):
        loaded = build_model("cnn", 4, in_chans=1, checkpoint_path=tmp_path / path)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
            assert torch.equal(a, b)


class _RunsCodeOnLoad:
    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_pickled_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    payload = _RunsCodeOnLoad()
    payload.marker = str(tmp_path / "ran.txt")
    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": payload}, f)
    with pytest.raises(ValueError, match="could not load .* safely"):
        load_state_dict(tmp_path / "evil.ckpt")
    assert not (tmp_path / "ran.txt").exists()


def test_bad_model_requests_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        build_model("cnn", 2, in_chans=1, checkpoint_path=tmp_path / "nowhere.ckpt")
    with pytest.raises(ValueError, match="unknown model 'vit_nonexistent'"):
        build_model("vit_nonexistent", 2)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("mlp", 2, pretrained=True, in_features=3)
    torch.save(build_model("cnn", 4, in_chans=1).state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(ValueError, match="does not match"):
        build_model("cnn", 4, in_chans=3, checkpoint_path=tmp_path / "cnn.pt", channels=(8,))
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="not a lit_xai checkpoint"):
        backbone_from_checkpoint(tmp_path / "plain.ckpt")
