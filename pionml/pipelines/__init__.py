"""Pipelines that put several trained runs together.

- :mod:`pionml.pipelines.combine`: classify, then regress (``pionml combine``): route the
  clusters of a mixed sample to a pi0 or a pi+- regressor by a classifier's score.
"""
