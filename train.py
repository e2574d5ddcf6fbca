"""Train any lit_xai stage: ``python train.py fit --config configs/digits/classifier.yaml``.

See ``python train.py fit --help`` and ``--print_config``; configs live in ``configs/<dataset>/<stage>.yaml``.
"""

from lit_xai.cli import main, user_errors_exit

if __name__ == "__main__":
    with user_errors_exit():  # a user error is one line and exit status 1, not a traceback
        main()
