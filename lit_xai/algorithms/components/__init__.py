"""What several algorithms share, so that no algorithm folder imports another (as anomalib's ``models/components``).

- :mod:`~lit_xai.algorithms.components.classifier`: ``ClassifierModule`` (the classifier stage and the base of
  every algorithm that adds a loss term to cross-entropy) and ``MaskedClassifierModule``;
- :mod:`~lit_xai.algorithms.components.training`: the warm-up cosine schedule, batch checks, ``eval_mode``;
- :mod:`~lit_xai.algorithms.components.exact_mean`: epoch means that are exact under DDP;
- :mod:`~lit_xai.algorithms.components.step_random`: per-step random generators a resumed run draws again;
- :mod:`~lit_xai.algorithms.components.saliency` and :mod:`~lit_xai.algorithms.components.losses`: the pieces
  saliency-guided training and VisFIS/RRR share.

Gradients with respect to the input live with the gradient baselines (:mod:`lit_xai.attribution.gradients`), the
players of an input or a model in :mod:`lit_xai.players`, and maskers (``RandomRangeFill`` included) in
:mod:`lit_xai.masking`.
"""
