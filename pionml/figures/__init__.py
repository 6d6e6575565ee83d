"""Figures: drawn from the numbers of :mod:`pionml.metrics`, saved by one writer.

- :mod:`pionml.figures.writer`: the style, resolution, experiment label and axis labels, and
  :func:`~pionml.figures.writer.save_figure` (atomic) through which every figure is written.
- :mod:`pionml.figures.plots`: plot functions, ``ax`` in, artists out.
- :mod:`pionml.figures.classification`, :mod:`pionml.figures.regression`,
  :mod:`pionml.figures.calibration`: the figures of each task (one run, several runs).
- :mod:`pionml.figures.combine`: the figures of ``pionml combine``.

matplotlib is imported inside the drawing functions, never at import time.
"""
