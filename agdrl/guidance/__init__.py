"""Guidance of imagined segments during denoising (DESIGN §2.3, steps 3 and 4).

Where each part lives:

- :mod:`~agdrl.guidance.advantages`: advantage estimates A_t over a predicted segment
  (one-step TD, the paper's; GAE over the segment; Q − V).
- :mod:`~agdrl.guidance.objectives`: the objectives J that guidance raises: SAG
  J = Σ_t log σ(A_t), EAG J = Σ_t A_t, reward guidance J = Σ_t r_φ.
- :mod:`~agdrl.guidance.state`: state guidance, a denoising hook that moves the predicted
  states up ∇J with the paper's σ_k⁴ weights or a dose independent of the step grid.
- :mod:`~agdrl.guidance.actions`: the same step applied to the policy's noise, so the actions
  tilt toward the advantage-weighted policy and the denoiser predicts their states.
- :mod:`~agdrl.guidance.policy`: policy guidance (PolyGRAD): the imagined actions follow π.
- :mod:`~agdrl.guidance.resampling`: the theorem's target without a step, by resampling
  unguided segments with weights σ(A) or exp(A / β).
- :mod:`~agdrl.guidance.classifier_free`: advantage-conditioned classifier-free guidance.
"""

from agdrl.guidance.actions import ActionGuidance
from agdrl.guidance.advantages import (
    ActionValueFn,
    AdvantageEstimator,
    OneStepAdvantage,
    QMinusV,
    SegmentGAE,
    ValueFn,
)
from agdrl.guidance.classifier_free import ClassifierFreeGuidance, advantage_labels
from agdrl.guidance.objectives import ExponentialAdvantage, Objective, RewardSum, SigmoidAdvantage
from agdrl.guidance.policy import PinnedActions, PolicyGuidance
from agdrl.guidance.resampling import AdvantageResampling, SegmentAdvantage
from agdrl.guidance.state import StateGuidance, state_gradient

__all__ = [
    "ActionGuidance", "ActionValueFn", "AdvantageEstimator", "AdvantageResampling",
    "ClassifierFreeGuidance", "ExponentialAdvantage", "Objective", "OneStepAdvantage",
    "PinnedActions", "PolicyGuidance", "QMinusV", "RewardSum", "SegmentAdvantage",
    "SegmentGAE", "SigmoidAdvantage", "StateGuidance", "ValueFn", "advantage_labels",
    "state_gradient",
]
