"""Trained runs (design.md section 9): the folder layout, the model card, safe loading and
the one way from a folder to numbers, ``Run.load(folder).predict(data)``."""

from pionml.runs.folder import (CARD_FILE, CHECKPOINT_FILE, CURVE_FILE, DATA_FILE, EVAL_DIR,
                                MODEL_FILE, NORMALISATION_FILE, TASK_FILE, WEIGHTS_FILE, Run,
                                load_state, load_tensors, read_json, save_tensors, write_json)

__all__ = ["CARD_FILE", "CHECKPOINT_FILE", "CURVE_FILE", "DATA_FILE", "EVAL_DIR", "MODEL_FILE",
           "NORMALISATION_FILE", "TASK_FILE", "WEIGHTS_FILE", "Run", "load_state",
           "load_tensors", "read_json", "save_tensors", "write_json"]
