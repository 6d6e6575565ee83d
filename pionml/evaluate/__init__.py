"""Evaluation reports: from run folders to ``RUN/eval/`` (design.md section 11).

- :mod:`pionml.evaluate.report`: evaluate run folders (metrics.json, predictions.csv, plots),
  ``pionml predict``'s CSV, the comparison of several runs.
- :mod:`pionml.evaluate.cli`: ``pionml evaluate``, ``pionml predict`` and ``pionml combine``.

The numbers come from :mod:`pionml.metrics`, the figures from :mod:`pionml.figures`, the bdt
reference from :mod:`pionml.reference`, the combination from :mod:`pionml.pipelines`.
"""
