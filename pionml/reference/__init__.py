"""Reference models fitted beside the run an evaluation reports on.

- :mod:`pionml.reference.bdt`: the ``bdt`` on the cluster moments, given as a run folder or
  trained on the fly (:func:`pionml.train.trainer.train_run`) on the run's own training rows.
"""
