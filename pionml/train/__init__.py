"""Training: one trainer with hooks and stages for every task and model (design.md 7, 9), the
distributed helper, and the ``pionml train`` command.

Importing this package imports nothing heavy; :mod:`pionml.train.trainer` imports torch.
"""
