"""agdrl: advantage-guided diffusion world models for model-based reinforcement learning."""

from agdrl.buffer import ReplayBuffer, SegmentBatch, TransitionBatch
from agdrl.config import DenoiserConfig, DiffusionConfig, EnsembleConfig
from agdrl.diffusion.samplers import Sampler, StepState
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.ensemble import ProbabilisticEnsemble
from agdrl.envs import UnsupportedSpaceError, make_env
from agdrl.segments import Segment

__version__ = "0.1.0"
__all__ = [
    "DenoiserConfig",
    "DiffusionConfig",
    "DiffusionWorldModel",
    "EnsembleConfig",
    "ProbabilisticEnsemble",
    "ReplayBuffer",
    "Sampler",
    "Segment",
    "SegmentBatch",
    "StepState",
    "TransitionBatch",
    "UnsupportedSpaceError",
    "make_env",
]
