"""captum's attribution methods called as ours are: ``attribute(x, target) -> (B, d)``, one value per player.

captum (Kokhlikyan et al., "Captum: A unified and generic model interpretability library for PyTorch", 2020) is an
optional extra (``pip install "lit_xai[captum]"``). Its classes come in two kinds, and each is run so that its values
mean what ours mean:

- **perturbation methods** (``FeatureAblation``, ``Occlusion``, ``ShapleyValueSampling``, ``ShapleyValues``,
  ``KernelShap``, ``Lime``) remove features. Here captum's input is the players' keep-mask, all ones, laid out as
  the players are (the patch grid ``(B, gh, gw)``, or ``(B, d)`` columns), and its baseline is zero ("missing"); the
  forward function runs our masker, ``link(masker(model, x, keep))``. For baseline filling this is exactly captum
  run on pixels with the players as ``feature_mask`` and the fill as ``baselines`` (a test checks it); it also
  holds for maskers that have no fill (token dropping, attention masking), so a captum method plays the very game
  our perturbation baselines and metrics play. Sizes are in players: ``Occlusion``'s
  ``sliding_window_shapes: [1, 1]`` is one patch. LIME's default similarity, a cosine kernel on the keep-masks, is
  the interpretable-space kernel of the original LIME for images.
- **gradient methods** (``IntegratedGradients``, ``Saliency``, ``InputXGradient``, ``DeepLift``, ``GradientShap``,
  ...) explain the network's logits on the image; their pixel map is summed onto the players (channels too), as our
  own pixel methods' maps are. Where the method takes ``baselines``, they default to the masker's fill (baseline
  filling), else captum's zeros.

Layer and neuron methods (they need a layer), ``NoiseTunnel`` and ``FeaturePermutation`` (it shuffles features
across the batch, which has no removal meaning) are not adapted.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lit_xai.masking import BaselineFill
    >>> from lit_xai.players import FeatureGroups
    >>> players = FeatureGroups(3)
    >>> model = nn.Linear(3, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    >>> ablation = CaptumAttribution(model, players, "FeatureAblation", masker=BaselineFill(players), link="logits")
    >>> ablation.attribute(torch.ones(1, 3), target=0).tolist()  # a linear model's leave-one-out: w * (x - 0)
    [[1.0, 2.0, 3.0]]
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import Attribution, resolve_target
from lit_xai.attribution.gradients import gradient_mode
from lit_xai.attribution.perturbation import check_masker
from lit_xai.links import get_link
from lit_xai.masking import BaselineFill
from lit_xai.players import Players, as_player_values

__all__ = ["CaptumAttribution", "captum_class", "split_captum_options"]

INSTALL = 'pip install "lit_xai[captum]"'

# Arguments of captum's `attribute` that the adapter supplies (or that would change what it returns).
_SUPPLIED = {"inputs", "target", "additional_forward_args", "return_convergence_delta", "return_input_shape"}
# Options that captum classes accept as lists in YAML but need as tuples.
_TUPLES = {"sliding_window_shapes", "strides"}


def captum_class(name: str) -> tuple[type, str]:
    """The captum class ``captum.attr.<name>`` and its kind, ``"perturbation"`` or ``"gradient"``.

    Raises:
        ImportError: captum is not installed (the message names the extra).
        ValueError: not a captum attribution class, or one the adapter cannot run (with the reason).
    """
    try:
        import captum.attr as attr
    except ImportError as err:
        raise ImportError(f"captum methods need captum, an optional extra: {INSTALL}") from err
    cls = getattr(attr, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, attr.Attribution)):
        choices = [
            n
            for n in attr.__all__
            if isinstance(getattr(attr, n), type)
            and issubclass(getattr(attr, n), (attr.GradientAttribution, attr.PerturbationAttribution))
            and not n.startswith(("Layer", "Neuron"))
        ]
        raise ValueError(f"{name!r} is not a captum attribution class; choose from {', '.join(choices)}")
    if issubclass(cls, (attr.LayerAttribution, attr.NeuronAttribution)):
        raise ValueError(f"{name}: layer and neuron methods need a layer and are not adapted")
    if issubclass(cls, attr.FeaturePermutation):
        raise ValueError(f"{name} shuffles features across the batch, which has no removal meaning here")
    required = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[2:]  # after self, forward_func
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ValueError(f"{name} needs {', '.join(required)} to be built, which the adapter cannot supply")
    if issubclass(cls, attr.PerturbationAttribution):
        return cls, "perturbation"
    if issubclass(cls, attr.GradientAttribution):
        return cls, "gradient"
    raise ValueError(f"{name} is neither a gradient nor a perturbation method of captum; it is not adapted")


def _named_parameters(function: Callable, skip: int) -> list[str]:
    params = list(inspect.signature(function).parameters.values())[skip:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def split_captum_options(name: str, options: Mapping[str, Any]) -> tuple[type, str, dict, dict]:
    """Check ``options`` for the captum class ``name`` and split them by where they go.

    ``link`` and ``seed`` are the adapter's; every other option goes to the class's constructor or to its
    ``attribute``, by name.

    Returns:
        ``(cls, kind, constructor_options, attribute_options)``.

    Raises:
        ImportError, ValueError: see :func:`captum_class`; unknown options, options the adapter supplies.
    """
    cls, kind = captum_class(name)
    constructor = _named_parameters(cls.__init__, skip=2)
    attribute = [p for p in _named_parameters(cls.attribute, skip=1) if p not in _SUPPLIED]
    if kind == "perturbation":
        attribute.remove("baselines")  # missing is what the masker makes it
    build, call = {}, {}
    for key, value in options.items():
        value = tuple(value) if key in _TUPLES and isinstance(value, list) else value
        if key in attribute:
            call[key] = value
        elif key in constructor:
            build[key] = value
        elif key == "baselines":
            raise ValueError(
                f"{name}: baselines are set by the masker for perturbation methods (a player is missing as the masker "
                f"makes it); change the masker's fill instead"
            )
        else:
            raise ValueError(
                f"{name}: unknown option {key!r}; it accepts {', '.join(sorted({*constructor, *attribute}))} "
                f"(and link, seed)"
            )
    return cls, kind, build, call


class CaptumAttribution(Attribution):
    """A captum attribution class run on our players (see the module docstring for how each kind is run).

    Args:
        model: the network to explain; ``model(x)`` returns logits ``(B, C)``.
        players: the players of the input.
        method: the name of a class of ``captum.attr`` (e.g. ``"IntegratedGradients"``).
        masker: how players go missing (required for perturbation methods; a baseline fill also gives gradient
            methods their default ``baselines``).
        link: the scale of a perturbation method's game: ``"softmax"`` (default, as our perturbation baselines),
            ``"logits"``, ... Gradient methods explain the logits (captum's convention and our gradient baselines').
        seed: seeds captum's random draws (sampling methods draw from torch's global generator) from
            :attr:`generator`, without changing the caller's random state; ``None`` leaves them unseeded.
        **options: options of the class's constructor or of its ``attribute`` (``n_steps``, ``n_samples``,
            ``perturbations_per_eval``, ``sliding_window_shapes``, ...).
    """

    name = "captum"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        method: str,
        masker: Callable | None = None,
        link: str | None = None,
        seed: int | None = 0,
        **options: Any,
    ) -> None:
        super().__init__(model, players)
        cls, self.kind, build, self.options = split_captum_options(method, options)
        self.method = method
        if self.kind == "perturbation":
            self.masker = check_masker(masker, players, method)
            self.link = get_link("softmax" if link is None else link)
            self.captum = cls(self._game, **build)
        else:
            if link not in (None, "logits"):
                raise ValueError(
                    f"{method} explains the logits; link={link!r} applies to perturbation methods only"
                )
            self.masker = masker
            self.captum = cls(model, **build)
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def __repr__(self) -> str:
        return f"CaptumAttribution({self.method}, players={self.players!r})"

    def _game(self, keep: Tensor, x: Tensor) -> Tensor:
        """captum's forward function for perturbation methods: the linked outputs with players kept by ``keep``."""
        return self.link(self.masker(self.model, x, keep.flatten(1)))

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        x = x.detach()
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            if self.generator is not None:
                seed = int(torch.randint(2**62, (1,), generator=self.generator))
                torch.random.default_generator.manual_seed(seed)
                if x.device.type == "cuda":
                    with torch.cuda.device(x.device):
                        torch.cuda.manual_seed(seed)
            if self.kind == "perturbation":
                return self._perturbation(x, target)
            return self._gradient(x, target)

    def _perturbation(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        batch, d = x.shape[0], self.players.num_players
        shape = getattr(self.players, "grid_size", (d,))
        keep = torch.ones(batch, *shape, device=x.device, dtype=x.dtype)
        with torch.no_grad():
            if target is None:
                target = resolve_target(None, batch, self._game(keep, x))
            target = resolve_target(target, batch)
            with warnings.catch_warnings():
                # Lime and KernelShap fit one model per image by design; captum warns when given several.
                warnings.filterwarnings("ignore", message=".*multiple inputs for Lime", category=UserWarning)
                values = self.captum.attribute(
                    keep, target=target, additional_forward_args=(x,), baselines=0.0, **self.options
                )
        return values.reshape(batch, d)

    def _gradient(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        options = dict(self.options)
        takes_baselines = "baselines" in _named_parameters(self.captum.attribute, skip=0)
        if takes_baselines and "baselines" not in options and isinstance(self.masker, BaselineFill):
            options["baselines"] = self.masker.baseline(x).expand_as(x).contiguous()
        with gradient_mode():
            if target is None:
                with torch.no_grad():
                    target = resolve_target(None, x.shape[0], self.model(x))
            values = self.captum.attribute(x, target=resolve_target(target, x.shape[0]), **options)
        return as_player_values(values, x, self.players, f"captum {self.method}")
