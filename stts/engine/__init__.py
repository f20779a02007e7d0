"""The training engine (Accelerate, optionally DeepSpeed): configs and recipes, optimizer groups and
schedules, the trainer. Imported on demand: ``import stts`` stays torch-only."""

from .config import RECIPES, ConfigError, TrainConfig, apply_settings, load_config, recipe_for, save_config
from .optim import Schedule, param_groups
from .trainer import Trainer, TrainError, TrainResult, TrainRun, find_resume_point, train, train_step

__all__ = [
    "RECIPES",
    "ConfigError",
    "Schedule",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainRun",
    "Trainer",
    "apply_settings",
    "find_resume_point",
    "load_config",
    "param_groups",
    "recipe_for",
    "save_config",
    "train",
    "train_step",
]
