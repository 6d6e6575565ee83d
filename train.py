#!/usr/bin/env python
"""Train a model: ``python train.py --task classify --model cnn`` (the same as ``pionml train``)."""

import sys

from pionml.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
