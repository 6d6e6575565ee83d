"""Evaluation: metrics (numpy), report files (metrics.json, predictions.csv), plots, the command.

- :mod:`pionml.evaluate.metrics`: ROC, rejection, AUC, binned tables (design.md section 8).
- :mod:`pionml.evaluate.plots`: plot functions, ``ax`` in, artists out.
- :mod:`pionml.evaluate.report`: evaluate run folders and write ``RUN/eval/``.
- :mod:`pionml.evaluate.cli`: ``pionml evaluate``.
"""
