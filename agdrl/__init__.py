"""agdrl: advantage-guided diffusion world models for model-based reinforcement learning."""

from agdrl.buffer import ReplayBuffer, SegmentBatch, TransitionBatch
from agdrl.callbacks import Callback
from agdrl.config import (
    ActorCriticConfig,
    DenoiserConfig,
    DiffusionConfig,
    EnsembleConfig,
    ImaginationConfig,
    TrainConfig,
)
from agdrl.diffusion.samplers import Sampler, StepState
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.ensemble import ProbabilisticEnsemble
from agdrl.envs import UnsupportedSpaceError, make_env
from agdrl.presets import PRESETS
from agdrl.segments import Segment
from agdrl.trainer import AGDMBRL
from agdrl.world_models import WORLD_MODELS, DiffusionWorld, EnsembleWorld, WorldModel

__version__ = "0.1.0"
__all__ = [
    "AGDMBRL",
    "PRESETS",
    "WORLD_MODELS",
    "ActorCriticConfig",
    "Callback",
    "DenoiserConfig",
    "DiffusionConfig",
    "DiffusionWorld",
    "DiffusionWorldModel",
    "EnsembleConfig",
    "EnsembleWorld",
    "ImaginationConfig",
    "ProbabilisticEnsemble",
    "ReplayBuffer",
    "Sampler",
    "Segment",
    "SegmentBatch",
    "StepState",
    "TrainConfig",
    "TransitionBatch",
    "UnsupportedSpaceError",
    "WorldModel",
    "make_env",
]
