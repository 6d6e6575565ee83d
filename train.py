#!/usr/bin/env python
"""Train a model: ``python train.py --task classify --model cnn`` (the same as ``pionml train``);
then ``python train.py combine --classifier RUN --pi0 RUN --charged RUN`` (``pionml combine``)."""

import sys

from pionml.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
