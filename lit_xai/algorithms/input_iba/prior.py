"""InputIBA's generative-prior stage: a per-image Wasserstein GAN trained by a plain optimisation loop.

Zhang, Khakzar, Li, Farshad, Kim & Navab, *Fine-Grained Neural Network Explanation by Identifying Input
Features with Predictive Information*, NeurIPS 2021, Sec. 3.2: a Wasserstein GAN whose generator is a learnable
input mask (plus noise statistics) and whose critic separates the masked input's features from samples of the
feature bottleneck. The learned mask is the prior of the input bottleneck.

One :class:`GenerativePrior` trains the priors of a whole batch of images at once (see :mod:`.torch_model`): every
image has its own mask, noise statistics and critic, the losses are sums over images, and RMSprop and weight
clipping act element-wise, so each image follows the trajectory of a solo run. Defaults are the authors' settings
(RMSprop, critic lr 5e-5, clip 0.01, batch 32, 200 samples per epoch, 20 epochs, a generator step every 5th
critic step; generator learning rates 0.003 for the mask, 0.1 for the noise mean, 0.05 for its std).

The stage runs inside ``attribute()`` on one batch of images with fresh samples drawn every step, so it needs no
Trainer, data loader or logger: :meth:`GenerativePrior.fit` is the loop, and :meth:`GenerativePrior.training_state`
holds everything a killed run needs to continue bit for bit (weights, both optimisers, every image's random
stream and the step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.algorithms.input_iba.bottleneck import PerImageBottleneck, per_image_normal
from lit_xai.algorithms.input_iba.torch_model import BatchedCritic, MaskGenerator, feature_grid

__all__ = ["GANConfig", "GenerativePrior"]


@dataclass
class GANConfig:
    """Hyperparameters of the generative-prior stage (paper values as defaults).

    Attributes:
        epochs: passes over ``samples_per_epoch`` real samples.
        samples_per_epoch: real samples per epoch (the original's ``dataset_size``); fresh ones are drawn each step.
        batch_size: samples per critic step.
        critic_iter: a generator step after every ``critic_iter``-th critic step of an epoch.
        critic_lr: RMSprop learning rate of the critic.
        weight_clip: clip the critic's weights to ``[-weight_clip, weight_clip]`` (0 disables).
        gradient_penalty: weight of the WGAN-GP penalty (Gulrajani et al., 2017); 0 disables.
        mask_lr: RMSprop learning rate of the generator's mask logits.
        mean_lr: ... of the generator's noise mean.
        std_lr: ... of the generator's noise standard deviation.
        critic_channels: hidden channels of each critic.
        init_logit: the mask's logits start at the feature map rescaled to ``[-init_logit, init_logit]``.
    """

    epochs: int = 20
    samples_per_epoch: int = 200
    batch_size: int = 32
    critic_iter: int = 5
    critic_lr: float = 5e-5
    weight_clip: float = 0.01
    gradient_penalty: float = 0.0
    mask_lr: float = 0.003
    mean_lr: float = 0.1
    std_lr: float = 0.05
    critic_channels: int = 32
    init_logit: float = 4.0

    def __post_init__(self) -> None:
        for name in ("epochs", "samples_per_epoch", "batch_size", "critic_iter", "critic_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"gan.{name} must be >= 1, got {getattr(self, name)}")
        if self.weight_clip <= 0 and self.gradient_penalty <= 0:
            raise ValueError(
                "a Wasserstein critic needs weight_clip > 0 or gradient_penalty > 0; set one of them"
            )

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.samples_per_epoch // self.batch_size)

    @property
    def total_steps(self) -> int:
        """Critic steps of the whole stage."""
        return self.epochs * self.steps_per_epoch


class GenerativePrior(nn.Module):
    """Train the per-image generative priors of a batch of images.

    Args:
        model: the classifier (eval mode; frozen here). Not registered as a submodule, so its ``state_dict`` holds
            only the GAN and moving this module never moves the classifier.
        layer: the bottleneck layer (a submodule of ``model``).
        x: images ``(B, C, H, W)``.
        features: their clean activations at ``layer``, ``(B, *feature_shape)``.
        feature_bottleneck: the fitted feature bottleneck of these images: real samples are its output.
        init_mask: the generator's initial mask ``(B, H, W)`` in ``(0, 1)``.
        noise_mean: initial noise mean per input channel ``(C,)``.
        noise_std: initial noise std per input channel ``(C,)``.
        generators: one random generator per image (noise, critic initialisation, gradient-penalty mixing).
        config: :class:`GANConfig`.
        num_prefix_tokens: for ViT layers, the tokens to drop before the critic (``None``: inferred).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module,
        x: Tensor,
        features: Tensor,
        feature_bottleneck: PerImageBottleneck,
        init_mask: Tensor,
        noise_mean: Tensor,
        noise_std: Tensor,
        generators: Sequence[torch.Generator],
        config: GANConfig | None = None,
        num_prefix_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config or GANConfig()
        self._frozen = (model, layer)  # a tuple hides them from nn.Module registration
        self.generators = list(generators)
        self.num_prefix_tokens = num_prefix_tokens
        self.register_buffer("features", features.detach())
        self.feature_bottleneck = feature_bottleneck.requires_grad_(False)
        self.generator = MaskGenerator(x, init_mask, noise_mean, noise_std)
        grid = feature_grid(features[:1], num_prefix_tokens)
        self.critic = BatchedCritic(
            len(x), grid.shape[1], grid.shape[2:], self.config.critic_channels, generators=self.generators
        )
        cfg, gen = self.config, self.generator
        self.opt_generator = torch.optim.RMSprop(
            [
                {"params": [gen.mask_logit], "lr": cfg.mask_lr},
                {"params": [gen.noise_mean], "lr": cfg.mean_lr},
                {"params": [gen.noise_std], "lr": cfg.std_lr},
            ]
        )
        self.opt_critic = torch.optim.RMSprop(self.critic.parameters(), lr=cfg.critic_lr)
        self.step = 0  # critic steps taken
        self.history: list[dict[str, float]] = []

    def _grid(self, samples: Tensor) -> Tensor:
        b, n = samples.shape[:2]
        grid = feature_grid(samples.flatten(0, 1), self.num_prefix_tokens)
        return grid.view(b, n, *grid.shape[1:])

    def sample_real(self, n: int) -> Tensor:
        """``n`` samples per image of the feature bottleneck ``lambda_F R + (1 - lambda_F) eps``."""
        eps = per_image_normal(self.generators, (n, *self.features.shape[1:]), self.features.device)
        with torch.no_grad():
            z, _ = self.feature_bottleneck(self.features, eps)
        return self._grid(z.view(len(self.features), n, *self.features.shape[1:]))

    def sample_fake(self, gaussian: Tensor) -> Tensor:
        """The generator's features for input noise ``(B, N, C, H, W)``."""
        model, layer = self._frozen
        return self._grid(self.generator(model, layer, gaussian))

    def critic_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """``(sum over images of E D(fake) - E D(real) [+ penalty], per-image Wasserstein estimate)``."""
        estimate = self.critic(real).mean(1) - self.critic(fake).mean(1)
        loss = -estimate.sum()
        if self.config.gradient_penalty > 0:
            # Mixing weights from each image's own stream: seeded by the explainer's seed, and resumable.
            t = torch.stack(
                [torch.rand(real.shape[1], generator=g, device=real.device) for g in self.generators]
            ).view(real.shape[:2] + (1,) * (real.dim() - 2))
            mixed = (t * real + (1 - t) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
            penalty = ((grad.flatten(2).norm(dim=2) - 1) ** 2).mean(1)
            loss = loss + self.config.gradient_penalty * penalty.sum()
        return loss, estimate.detach()

    def train_step(self) -> dict[str, float]:
        """One critic step, followed by a generator step on every ``critic_iter``-th step of an epoch."""
        cfg = self.config
        x = self.generator.x
        real = self.sample_real(cfg.batch_size)
        gaussian = per_image_normal(self.generators, (cfg.batch_size, *x.shape[1:]), x.device)
        generator_step = (self.step % cfg.steps_per_epoch) % cfg.critic_iter == 0
        # The generator's parameters do not change during the critic step, so one pass through the classifier
        # serves both steps; the graph is only kept when a generator step follows.
        with torch.set_grad_enabled(generator_step):
            fake = self.sample_fake(gaussian)
        loss, estimate = self.critic_loss(real, fake.detach())
        self.opt_critic.zero_grad()
        loss.backward()
        self.opt_critic.step()
        if cfg.weight_clip > 0:
            self.critic.clip_(cfg.weight_clip)
        record = {"critic_loss": loss.item() / len(x), "wasserstein": estimate.mean().item()}
        if generator_step:
            self.critic.requires_grad_(False)  # the generator step needs no critic weight gradients
            generator_loss = -self.critic(fake).mean(1).sum()
            self.opt_generator.zero_grad()
            generator_loss.backward()
            self.opt_generator.step()
            self.critic.requires_grad_(True)
            record["generator_loss"] = generator_loss.item() / len(x)
        self.step += 1
        self.history.append(record)
        return record

    def fit(
        self, progress: bool = False, after_step: Callable[[GenerativePrior], None] | None = None
    ) -> GenerativePrior:
        """Run the remaining steps of ``epochs * steps_per_epoch`` (all of them, or the rest after a resume).

        Args:
            progress: show a progress bar with the Wasserstein estimate.
            after_step: called after every step (e.g. to save :meth:`training_state` for resuming).
        """
        steps: Any = range(self.step, self.config.total_steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(
                steps, desc="generative prior", leave=False, initial=self.step, total=self.config.total_steps
            )
        with torch.enable_grad():
            for _ in steps:
                record = self.train_step()
                if progress:
                    steps.set_postfix(wasserstein=f"{record['wasserstein']:.3g}")
                if after_step is not None:
                    after_step(self)
        return self

    def training_state(self) -> dict[str, Any]:
        """Everything to continue bit for bit: weights, both optimisers, each image's random stream, the step."""
        return {
            "weights": self.state_dict(),
            "opt_generator": self.opt_generator.state_dict(),
            "opt_critic": self.opt_critic.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "step": self.step,
            "history": list(self.history),
        }

    def load_training_state(self, state: dict[str, Any]) -> GenerativePrior:
        """Continue from a :meth:`training_state` written for the same images and settings."""
        if len(state["generators"]) != len(self.generators):
            raise ValueError(
                f"the saved prior state is for {len(state['generators'])} images, not {len(self.generators)}"
            )
        self.load_state_dict(state["weights"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)
        self.step, self.history = int(state["step"]), list(state["history"])
        return self

    def prior(self) -> Tensor:
        """The learned prior: the generator's mask ``(B, C, H, W)`` in ``[0, 1]``."""
        return self.generator.mask().detach()
