"""Learned components, one folder per algorithm: a pure ``torch_model.py`` and a thin ``lightning_model.py``."""
