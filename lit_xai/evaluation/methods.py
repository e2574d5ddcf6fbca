"""The models and methods of an evaluation: the scoring surrogate, learned explainers and baselines.

As in ViT Shapley's evaluation (Covert, Kim & Lee, ICLR 2023), every explanation is scored through the *surrogate*
and its masker, a model trained to tolerate missing players, so removing players does not create
out-of-distribution inputs. Perturbation baselines (leave-one-out, RISE, KernelSHAP) query the same surrogate game;
gradient and attention baselines explain the surrogate network on full inputs, or the original classifier when
one is given. Each method is wrapped as a :class:`Method` with one call, ``explain(x, target) -> (B, d)``, and the
networks whose forward passes make up its cost.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.algorithms.vit_shapley.removal import build_players, build_stage_masker
from lit_xai.attribution import ATTRIBUTIONS, PerturbationAttribution, RandomAttribution, build_attribution
from lit_xai.attribution.captum_adapter import CaptumAttribution, captum_class
from lit_xai.checkpoint_identity import load_stage
from lit_xai.evaluation.config import accepted_options, base_method
from lit_xai.masking import Masker
from lit_xai.models import ClassifierSpec, backbone_from_checkpoint, load_classifier_spec
from lit_xai.models.external import import_factory
from lit_xai.players import as_player_values

__all__ = [
    "Scorer",
    "Method",
    "load_explainers",
    "load_scorer",
    "load_classifier",
    "build_methods",
    "count_forward_rows",
]


@dataclass
class Scorer:
    """The model that scores explanations.

    Attributes:
        model: the surrogate network (frozen, eval mode).
        masker: how it sees missing players (``masker(model, x, keep) -> logits``).
        link: the scale of its game (the explainers' link; ``"softmax"`` probabilities by default), used for the
            ground-truth Shapley values.
        notes: remarks for the report (e.g. an explainer trained for another surrogate).
    """

    model: nn.Module
    masker: Masker
    link: str = "softmax"
    notes: tuple[str, ...] = ()

    @property
    def players(self):
        return self.masker.players


@dataclass
class Method:
    """One explanation method under evaluation.

    Attributes:
        name: its row in the report.
        kind: ``"explainer"`` (learned, amortized), ``"baseline"``, ``"own"`` (the user's, by import path) or
            ``"captum"`` (a captum class).
        explain: ``explain(x, target) -> (B, d)`` per-player attributions for ``target``.
        networks: the networks whose forward passes make up the method's cost (counted per image).
        generator: a random generator the method draws from across calls; reseeded per batch so that results do
            not depend on how the images are split over processes.
        model_based: whether it explains a network directly (gradients, attention) rather than the surrogate game.
        amortized: a learned explainer's ``AmortizedShapley`` network (explainer, surrogate copy and cached
            ``v(∅)``), for device placement and the comparison with KernelSHAP.
    """

    name: str
    kind: str
    explain: Callable[[Tensor, Tensor], Tensor]
    networks: tuple[nn.Module, ...]
    generator: torch.Generator | None = None
    model_based: bool = False
    amortized: nn.Module | None = None


def _frozen(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def load_explainers(paths: Mapping[str, str]) -> dict[str, ExplainerModule]:
    """Load ``ExplainerModule`` checkpoints (weights only), frozen and in eval mode."""
    explainers = {}
    for name, path in paths.items():
        module = load_stage(
            ExplainerModule, path, name=f"explainer {name!r}: {path}",
            hint="train one with configs/<dataset>/explainer.yaml",
        )  # fmt: skip
        explainers[name] = _frozen(module)
    return explainers


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def load_scorer(
    surrogate_checkpoint: str | None,
    explainers: Mapping[str, ExplainerModule],
    model: ClassifierSpec | None = None,
) -> Scorer:
    """The scoring surrogate: from ``surrogate_checkpoint``, or the classifier ``model`` through its own removal,
    else the surrogate stored in the first explainer.

    Every explainer must use the same players; one trained for a different surrogate is flagged in the notes.
    """
    link = next(iter(explainers.values())).net.link_name if explainers else "softmax"
    notes = []
    if model is not None:
        network = load_classifier_spec(model)
        players = build_players(network, model.patch_size, model.image_size, model.num_features)
        masker = build_stage_masker(network, players, model.masker, model.masker_kwargs)
        surrogate_checkpoint = "the given model"
        notes.append(
            f"Explanations are scored through the given model with {type(masker).__name__}; it was not trained with "
            f"players missing, so removal shows it inputs unlike its training data (a surrogate trained with "
            f"configs/<dataset>/surrogate.yaml scores more faithfully)."
        )
        model = network
    elif surrogate_checkpoint is not None:
        surrogate = load_stage(
            SurrogateModule, surrogate_checkpoint, name=f"surrogate_checkpoint: {surrogate_checkpoint}",
            hint="train one with configs/<dataset>/surrogate.yaml",
        )  # fmt: skip
        model, masker = _frozen(surrogate.model), surrogate.masker
    else:
        first_name, first = next(iter(explainers.items()))
        model, masker = first.net.surrogate, first.net.masker
        surrogate_checkpoint = f"the surrogate of {first_name}"
    for name, explainer in explainers.items():
        if explainer.net.num_players != masker.num_players:
            raise ValueError(
                f"explainer {name!r} has {explainer.net.num_players} players but the surrogate has "
                f"{masker.num_players}; evaluate explainers of the same surrogate together"
            )
        if explainer.net.link_name != link:
            notes.append(
                f"{name} estimates Shapley values on the {explainer.net.link_name} scale, not {link}."
            )
        if explainer.net.surrogate is not model and not _same_weights(explainer.net.surrogate, model):
            message = (
                f"{name} was trained for a different surrogate than {surrogate_checkpoint}; it is scored "
                f"through the given surrogate anyway"
            )
            warnings.warn(message, stacklevel=2)
            notes.append(message + ".")
    return Scorer(_frozen(model), masker, link=link, notes=tuple(notes))


def load_classifier(path: str) -> nn.Module:
    """A classifier network from its ``ClassifierModule`` checkpoint, frozen and in eval mode."""
    model, _ = backbone_from_checkpoint(path)
    return _frozen(model)


def _explainer_method(name: str, module: ExplainerModule) -> Method:
    net = module.net
    return Method(name, "explainer", net.attribute, (net.explainer, net.surrogate), amortized=net)


def build_methods(
    scorer: Scorer,
    explainers: Mapping[str, ExplainerModule],
    baselines: Sequence[str],
    baseline_kwargs: Mapping[str, Mapping] | None = None,
    classifier: nn.Module | None = None,
    seed: int = 0,
    own_methods: Mapping[str, str] | None = None,
    captum_methods: Mapping[str, Mapping] | None = None,
) -> list[Method]:
    """The explainers followed by the baselines, each ready to call.

    Perturbation baselines query the surrogate through its masker; the others explain ``classifier`` when given,
    else the surrogate network. Baselines that take a ``seed`` get ``seed`` unless their options set one.
    """
    baseline_kwargs = baseline_kwargs or {}
    methods = [_explainer_method(name, module) for name, module in explainers.items()]
    for name in baselines:
        kwargs = dict(baseline_kwargs.get(name, {}))
        cls = ATTRIBUTIONS[base_method(name)]
        if "seed" in accepted_options(cls):
            kwargs.setdefault("seed", seed)
        model_based = not issubclass(cls, (PerturbationAttribution, RandomAttribution))
        model = classifier if model_based and classifier is not None else scorer.model
        try:
            baseline = build_attribution(
                base_method(name), model, scorer.players, masker=scorer.masker, **kwargs
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"baseline {name!r} cannot be built for this model: {err}") from err
        generator = getattr(baseline, "generator", None)
        methods.append(
            Method(
                name,
                "baseline",
                baseline.attribute,
                (model, *getattr(baseline, "networks", ())),  # a learned explainer's own network counts too
                generator=generator if isinstance(generator, torch.Generator) else None,
                model_based=model_based,
            )
        )
    model = classifier if classifier is not None else scorer.model
    methods += [own_method(name, path, model, scorer.players) for name, path in (own_methods or {}).items()]
    for name, spec in (captum_methods or {}).items():
        methods.append(captum_method(name, spec, scorer, classifier, seed))
    return methods


def captum_method(
    name: str, spec: Mapping, scorer: Scorer, classifier: nn.Module | None = None, seed: int = 0
) -> Method:
    """A captum attribution class (``spec``: ``class`` and its options), through
    :class:`~lit_xai.attribution.captum_adapter.CaptumAttribution`: perturbation methods play the scorer's game, gradient
    methods explain ``classifier`` when given, else the scorer's network (as the gradient baselines do)."""
    options = {key: value for key, value in spec.items() if key != "class"}
    options.setdefault("seed", seed)
    _, kind = captum_class(spec["class"])
    model = classifier if kind == "gradient" and classifier is not None else scorer.model
    try:
        method = CaptumAttribution(model, scorer.players, spec["class"], masker=scorer.masker, **options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"captum method {name!r} cannot be built for this model: {err}") from err
    return Method(
        name, "captum", method.attribute, (model,), generator=method.generator, model_based=kind == "gradient"
    )


def own_method(name: str, path: str, model: nn.Module, players) -> Method:
    """A method of the user's own, ``function(model, x, target)`` imported from ``"package.module:function"``.

    Its output may be per-player values ``(B, d)`` or a map in the input's layout, summed onto the players
    (``players.pool``), so a pixel-level method written for any library is scored like the built-in ones.
    """
    function = import_factory(path, f"own_methods.{name}")

    def explain(x: Tensor, target: Tensor) -> Tensor:
        with torch.enable_grad():
            values = function(model, x, target)
        return as_player_values(values, x, players, f"own method {name!r}")

    return Method(name, "own", explain, (model,), model_based=True)


def _first_layer(network: nn.Module) -> nn.Module:
    """The first leaf module holding parameters: every forward pass of the network runs it once per input row."""
    for module in network.modules():
        if not list(module.children()) and any(True for _ in module.parameters(recurse=False)):
            return module
    return network


@contextlib.contextmanager
def count_forward_rows(networks: Sequence[nn.Module]) -> Iterator[list[int]]:
    """Count the input rows that pass through ``networks`` inside the block (``counter[0]``).

    The count is taken at each network's first parametrised layer (a ViT's patch embedding, a CNN's stem, an MLP's
    first linear layer), which every route through the network runs, including maskers that call a ViT's parts
    directly (token dropping) and batched calls that mix many masked copies of an image.
    """
    counter = [0]

    def hook(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor):
            counter[0] += args[0].shape[0]

    layers = {id(layer): layer for layer in (_first_layer(n) for n in networks)}
    handles = [layer.register_forward_pre_hook(hook) for layer in layers.values()]
    try:
        yield counter
    finally:
        for handle in handles:
            handle.remove()
