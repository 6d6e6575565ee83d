"""The main job: ``python train.py --task classify --model cnn`` (the same as ``pionml train``).

Thin on purpose: every option is parsed and handled by the library (pionml.train.cli).
"""

import sys

from pionml.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
