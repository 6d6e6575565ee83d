"""Trained runs (design.md section 9): the folder layout, the run's config.toml, the model card,
safe loading and the one way from a folder to numbers, ``Run.load(folder).predict(data)``."""

from pionml.runs.config import CONFIG_FILE, RUN_FORMAT, read_config, run_config, write_config
from pionml.runs.folder import (CARD_FILE, CHECKPOINT_FILE, CURVE_FILE, DATA_FILE, EVAL_DIR,
                                MODEL_FILE, NORMALISATION_FILE, TASK_FILE, WEIGHTS_FILE, Run,
                                load_state, load_tensors, read_json, save_tensors, write_json)

__all__ = ["CARD_FILE", "CHECKPOINT_FILE", "CONFIG_FILE", "CURVE_FILE", "DATA_FILE", "EVAL_DIR",
           "MODEL_FILE", "NORMALISATION_FILE", "RUN_FORMAT", "TASK_FILE", "WEIGHTS_FILE", "Run",
           "load_state", "load_tensors", "read_config", "read_json", "run_config",
           "save_tensors", "write_config", "write_json"]
