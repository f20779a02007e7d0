"""The training engine (Accelerate, optionally DeepSpeed): configs and recipes, optimizer groups and
schedules, the trainer. Imported on demand: ``import stts`` stays torch-only."""

from .config import RECIPES, TrainConfig, apply_settings, load_config, recipe_for, save_config
from .optim import Schedule, param_groups
from .trainer import Trainer, TrainError, TrainResult, find_resume_point, train

__all__ = [
    "RECIPES",
    "Schedule",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "Trainer",
    "apply_settings",
    "find_resume_point",
    "load_config",
    "param_groups",
    "recipe_for",
    "save_config",
    "train",
]
