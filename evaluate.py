"""Compare explanations of a model: ``python evaluate.py --config configs/eval/digits.yaml``.

Learned explainers and baselines are run over the test split and scored by removal metrics through the surrogate,
localisation and error against ground-truth Shapley values; the table, results.json and figures go to
``output_dir``. See ``python evaluate.py --help`` and ``--print_config``.
"""

from lit_xai.cli import use_offline_wandb
from lit_xai.evaluation import main

if __name__ == "__main__":
    use_offline_wandb()
    main()
