"""A run killed hard (SIGKILL) mid-epoch and resumed with ``--ckpt_path last`` ends exactly where an uninterrupted
run ends: same weights, optimizer state, cached v(∅) and metrics, for the classifier, surrogate, explainer,
saliency-guided, VisFIS, both dynamic-feature-selection stages and DIME; and the InputIBA command, whose per-image GAN
prior is trained by a plain loop that keeps its own progress (lit_xai/algorithms/input_iba/resume.py)."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2)
# The others: configs/digits/<stage>.yaml
CONFIGS = {
    "visfis": "decoy_digits/visfis.yaml",
    "dfs_pretrain": "dfs/digits_patches_pretrain.yaml",
    "dfs_policy": "dfs/digits_patches.yaml",
    "dfs_dime": "dfs/digits_patches_dime.yaml",
}
KILL_AT_STEP = 9  # epoch 1 (6 batches per epoch), with last.ckpt from step 8: two batches into the epoch

EXTRA_CONFIG = """
trainer:
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: logs, name: "", version: run}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: ckpts, every_n_train_steps: 2, save_last: true, save_top_k: 0}
"""


class KillAtStep(L.Callback):
    """Test helper: SIGKILL this very process when a given global step is about to run (no clean-up runs)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def save_module(module: L.LightningModule, path: Path) -> str:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return str(path)


def start(cwd: Path, stage: str, *extra: str, kill: bool = False) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "extra.yaml").write_text(EXTRA_CONFIG)
    args = [
        "fit",
        "--config",
        str(ROOT / "configs" / CONFIGS.get(stage, f"digits/{stage}.yaml")),
        "--config",
        "extra.yaml",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.init_args.batch_size=32",
        *extra,
    ]
    if kill:
        args += [
            "--trainer.callbacks+=test_reliability_resume.KillAtStep",
            f"--trainer.callbacks.step={KILL_AT_STEP}",
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent), LIT_XAI_TRACEBACK="1")
    command = [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def train(cwd: Path, stage: str, *extra: str, kill: bool = False) -> subprocess.CompletedProcess:
    return finish(start(cwd, stage, *extra, kill=kill))


def stage_args(stage: str, tmp: Path) -> list[str]:
    from lit_xai.algorithms.classifier import ClassifierModule
    from lit_xai.algorithms.vit_shapley import SurrogateModule

    if stage == "saliency_guided":  # a small CNN, random fill of the masked pixels
        return ["--model.init_args.warmup_steps=2", "--model.init_args.backbone_kwargs.channels=[4, 8]"]
    if stage == "visfis":  # an MLP on decoy digits with annotations; random subsets of unimportant pixels
        return ["--model.init_args.warmup_steps=2", "--model.init_args.backbone_kwargs.hidden=[8]"]
    # Random masks (pretraining), Gumbel noise (the policy), epsilon-greedy exploration (DIME)
    if stage.startswith("dfs"):
        selector = "value" if stage == "dfs_dime" else "policy"
        tiny = [f"--model.init_args.{net}_kwargs.{k}={v}" for net in ("predictor", selector) for k, v in
                (("embed_dim", 16), ("depth", 1))]  # fmt: skip
        if stage == "dfs_pretrain":
            return tiny[:2]
        from lit_xai.algorithms.dynamic_selection import MaskedPredictorModule

        torch.manual_seed(0)
        kwargs = dict(patch_size=2, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0)
        predictor = MaskedPredictorModule(
            10, image_size=8, patch_size=2, predictor="vit_tiny_patch16_224", predictor_kwargs=kwargs
        )
        return [
            *tiny,
            f"--model.init_args.predictor_checkpoint={save_module(predictor, tmp / 'predictor.ckpt')}",
        ]
    torch.manual_seed(0)
    classifier = ClassifierModule("vit_tiny_patch16_224", 10, TINY_VIT)
    if stage == "classifier":
        sizes = [
            f"--model.init_args.backbone_kwargs.{k}={TINY_VIT[k]}"
            for k in ("embed_dim", "depth", "num_heads")
        ]
        return ["--model.init_args.warmup_steps=2", *sizes]
    classifier_path = save_module(classifier, tmp / "classifier.ckpt")
    if stage == "surrogate":
        return [
            "--model.init_args.warmup_steps=2",
            f"--model.init_args.classifier_checkpoint={classifier_path}",
        ]
    surrogate_path = save_module(SurrogateModule(classifier_path), tmp / "surrogate.ckpt")
    return [
        "--model.init_args.warmup_steps=2",
        f"--model.init_args.surrogate_checkpoint={surrogate_path}",
        "--model.init_args.num_masks=4",
    ]


def metrics_by_step(path: Path) -> dict[tuple[int, str], float]:
    rows = {}
    with open(path) as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if value and key not in ("epoch", "step"):
                    rows[(int(row["step"]), key)] = float(value)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage",
    [
        "classifier",
        "surrogate",
        "explainer",
        "saliency_guided",
        "visfis",
        "dfs_pretrain",
        "dfs_policy",
        "dfs_dime",
    ],
)
def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path, stage):
    extra = stage_args(stage, tmp_path)
    uninterrupted = start(tmp_path / "straight", stage, *extra)  # runs alongside the killed run
    killed = train(tmp_path / "killed", stage, *extra, kill=True)
    straight = finish(uninterrupted)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    mid = torch.load(tmp_path / "killed/ckpts/last.ckpt", weights_only=True)
    assert mid["global_step"] == KILL_AT_STEP - 1 and mid["epoch"] == 1  # mid-epoch, not at an epoch end
    # The loader's position is in the checkpoint: epoch 1, two batches handed out.
    assert mid["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    if stage == "explainer":
        assert mid["state_dict"]["net.null"].shape == (10,)  # the cached v(∅) travels with the checkpoint

    resumed = train(
        tmp_path / "killed", stage, *extra, "--ckpt_path=last", "--trainer.logger.init_args.version=resumed"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning when a loader restarts its epoch

    final_a = torch.load(tmp_path / "straight/ckpts/last.ckpt", weights_only=True)
    final_b = torch.load(tmp_path / "killed/ckpts/last.ckpt", weights_only=True)
    assert final_a["global_step"] == final_b["global_step"] == 12
    assert final_a["state_dict"].keys() == final_b["state_dict"].keys()
    for name, value in final_a["state_dict"].items():
        assert torch.equal(value, final_b["state_dict"][name]), f"{stage}: {name} differs after resume"
    for state_a, state_b in zip(
        final_a["optimizer_states"][0]["state"].values(), final_b["optimizer_states"][0]["state"].values()
    ):
        assert torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])

    metrics_a = metrics_by_step(tmp_path / "straight/logs/run/metrics.csv")
    metrics_b = metrics_by_step(tmp_path / "killed/logs/resumed/metrics.csv")
    after_kill = {key: value for key, value in metrics_a.items() if key[0] >= KILL_AT_STEP - 1}
    assert any(name.startswith("val/") for _, name in after_kill), "no validation metric after the kill"
    assert after_kill == {key: metrics_b[key] for key in after_kill if key in metrics_b}
    assert set(after_kill) <= set(metrics_b), sorted(set(after_kill) - set(metrics_b))


# ------------------------------------------------------------------------------------------- InputIBA's prior
INPUT_IBA_CONFIG = """
model: {checkpoint: classifier.ckpt}
data:
  class_path: lit_xai.data.ShapesDataModule
  init_args: {num_train: 120, num_val: 4, num_test: 4, batch_size: 60}
statistics: {num_samples: 120, min_samples: 100}
explainer:
  layer: features
  batch_size: 2     # 4 images: two chunks
  feature: {steps: 2, copies: 2}
  gan: {epochs: 3, samples_per_epoch: 16, batch_size: 8, critic_iter: 2, critic_channels: 4}  # 6 steps a chunk
  input: {steps: 2, copies: 2}
num_images: 4
save_every: 3
output_dir: out
"""
OUTPUTS = {"statistics.pt", "maps.pt", "prior.pt", "maps.png"}


def run_input_iba(kill: str | None = None) -> None:
    """Run in a subprocess: the InputIBA command, SIGKILLed (no clean-up runs) at ``kill``:

    - ``"gan:<n>"``: before the n-th GAN step of the run (steps of all chunks counted together);
    - ``"write:<n>"``: halfway through the n-th write of the GAN's state (its temporary file is left behind).
    """
    from lit_xai.algorithms.input_iba.__main__ import main
    from lit_xai.algorithms.input_iba.prior import GenerativePrior

    where, _, count = (kill or "none:0").partition(":")
    calls = [0]

    def due() -> bool:
        calls[0] += 1
        return calls[0] == int(count)

    if where == "gan":
        step = GenerativePrior.train_step

        def killing_step(self):
            if due():
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self)

        GenerativePrior.train_step = killing_step
    elif where == "write":
        save = torch.save

        def killing_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and "gan" in obj and due():
                f.write(b"half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return save(obj, f, *args, **kwargs)

        torch.save = killing_save
    main(["--config", "config.yaml"])


def start_input_iba(cwd: Path, kill: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(ROOT)]))
    command = [sys.executable, "-c", f"import test_reliability_resume as t; t.run_input_iba({kill!r})"]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def input_iba_folder(path: Path) -> Path:
    from lit_xai.algorithms.classifier import ClassifierModule

    path.mkdir(parents=True)
    torch.manual_seed(0)
    save_module(ClassifierModule("cnn", 4, {"in_chans": 3, "channels": [4, 8]}), path / "classifier.ckpt")
    (path / "config.yaml").write_text(INPUT_IBA_CONFIG)
    return path


@pytest.fixture(scope="module")
def input_iba_straight(tmp_path_factory) -> Path:
    folder = input_iba_folder(tmp_path_factory.mktemp("input_iba") / "straight")
    result = finish(start_input_iba(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "out"


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill, left",
    [
        # Mid-GAN of the second chunk: the first chunk is done, the second's GAN state is from step 3 (of 6).
        ("gan:11", {"chunk_000000.pt", "prior_000002.pt"}),
        # Inside the second write of the first chunk's GAN state: the state of step 3 stays, plus the temporary file.
        ("write:2", {"prior_000000.pt", "<temporary>"}),
    ],
)
def test_killed_input_iba_run_resumes_to_the_same_weights_and_maps(tmp_path, input_iba_straight, kill, left):
    folder = input_iba_folder(tmp_path / "killed")
    killed = finish(start_input_iba(folder, kill))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    progress = {
        p.name if not p.name.endswith(".tmp") else "<temporary>" for p in (folder / "out/resume").iterdir()
    }
    assert progress == left
    assert torch.load(next((folder / "out/resume").glob("prior_*.pt")), weights_only=True)["gan"]["step"] == 3

    resumed = finish(start_input_iba(folder))  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("maps.pt", "prior.pt"):  # the learned priors' weights and every map, bit for bit
        straight = torch.load(input_iba_straight / name, weights_only=True)
        again = torch.load(folder / "out" / name, weights_only=True)
        assert straight.keys() == again.keys()
        for key, value in straight.items():
            assert torch.equal(value, again[key]), f"{name}: {key} differs after the resume"
    # Nothing orphaned: the outputs only, no progress folder, no temporary file anywhere.
    assert {p.name for p in (folder / "out").iterdir()} == OUTPUTS
    assert not list(folder.rglob("*.tmp"))
