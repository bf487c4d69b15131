"""Typed, frozen configuration dataclasses. The CLI is generated from these (tyro).

Presets tie the numbers to the papers' defaults (DESIGN §2.2): ``reference`` is the PolyGRAD /
AGD-MBRL world model (residual MLP 1024 × 6, 128 steps, cosine schedule, x̂_0 prediction, batch
256, lr 3e-4, EMA 0.99); ``default`` is a smaller model that trains in minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import tyro


class ConfigError(Exception):
    """A configuration value that cannot work, raised when the config is built. (Not a
    ValueError on purpose: tyro would catch that and print a multi-line box instead of letting
    the CLI print one line.)"""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def require_finite(cfg: object) -> None:
    """Every float field of the dataclass ``cfg`` is a finite number (an inf or NaN scale, rate
    or bound would pass the other checks and fail, or do nothing, much later)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name} must be a finite number, got {value}")


SEED_LIMIT = 2**32
"""Seeds are below this: numpy's legacy seeding and Stable-Baselines3 take no larger one."""


def require_seed(cfg: object, name: str = "seed") -> None:
    value = getattr(cfg, name)
    require(0 <= value < SEED_LIMIT, f"{name} must be in [0, 2**32), got {value}")


MAX_LAYERS = 256
"""The most layers (blocks, levels) a network may stack: the reference has 6, and a typo's ten
million would take minutes to build before the size check (agdrl.devices) could refuse it."""


def require_layers(cfg: object, name: str) -> None:
    value = getattr(cfg, name)
    require(0 < value <= MAX_LAYERS, f"{name} must be in [1, {MAX_LAYERS}], got {value}")


def require_positive(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        require(value > 0, f"{name} must be positive, got {value}")


def require_non_negative(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        require(value >= 0, f"{name} must be non-negative, got {value}")


def require_fraction(cfg: object, name: str, closed: bool = True) -> None:
    """0 ≤ value ≤ 1 (``closed``) or 0 ≤ value < 1."""
    value = getattr(cfg, name)
    ok = 0 <= value <= 1 if closed else 0 <= value < 1
    require(ok, f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")


def require_choice(cfg: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    require(value in choices, f"unknown {name} {value!r}; choose {', '.join(choices)}")


DenoiserKind = Literal["mlp", "unet", "transformer"]
Prediction = Literal["x0", "eps"]
Schedule = Literal["cosine", "linear"]
SamplerKind = Literal["ddpm", "ddim", "heun", "dpm2m"]
TimestepSpacing = Literal["linspace", "trailing"]


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture of the network that predicts the clean segment (or the noise)."""

    kind: DenoiserKind = "mlp"
    """Residual MLP over the flattened segment, temporal 1-D U-Net, or a small transformer."""
    width: int = 512
    """Hidden width: MLP width, U-Net base channels, transformer model dimension."""
    depth: int = 4
    """Residual blocks (MLP), resolution levels (U-Net) or encoder layers (transformer)."""
    time_embed_dim: int = 128
    """Size of the sinusoidal diffusion-time embedding."""
    heads: int = 4
    """Attention heads (transformer only)."""

    def __post_init__(self):
        require_finite(self)
        require_choice(self, "kind", ("mlp", "unet", "transformer"))
        require_positive(self, "width", "time_embed_dim", "heads")
        require_layers(self, "depth")
        require(self.kind != "transformer" or (self.width % self.heads == 0
                                               and self.width % 2 == 0),
                f"transformer width {self.width} must be even and divide by heads {self.heads}")


@dataclass(frozen=True)
class DiffusionConfig:
    """The trajectory diffusion world model and how it is trained."""

    REMOVED_FIELDS: ClassVar[dict[str, object]] = {"layout": "polygrad",
                                                   "joint_action_pin_prob": None}
    """Fields that a saved config may still hold, with the value that means what agdrl does
    today (None: any value; the joint layout, which diffused the actions too, was removed)."""

    horizon: int = 10
    """Segment length H (states s_0 … s_{H-1})."""
    num_steps: int = 128
    """Training diffusion steps K."""
    schedule: Schedule = "cosine"
    """Noise schedule."""
    schedule_tau: float | None = None
    """Exponent of the cosine schedule; None: the task's reference value (0.1 for Hopper, 1
    elsewhere) when built for a task, 1 when no task is known."""
    prediction: Prediction = "x0"
    """What the denoiser predicts: the clean sample (reference) or the noise."""
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    """Denoiser architecture."""
    batch_size: int = 256
    """Segments per training step."""
    lr: float = 3e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""
    ema_decay: float = 0.99
    """Decay of the exponential moving average of the weights used for sampling."""
    pad_segments: bool = True
    """Sample segments that run past an episode's end, padded and masked out of the loss (so
    terminals, and the states they lead to, are seen at every position); False keeps only
    segments that fit in an episode, which never show the state after a terminal."""
    clip_max_step: int = 10
    """At step indices k ≤ this, clip the change |μ̃ − x_k| (DESIGN §2.3 step 5; −1: never)."""
    clip_value: float = 0.25
    """Bound of that clip."""
    x0_bound: float = 20.0
    """While sampling, clamp x̂_0 to ±this in normalized units (0: off); guards ε-prediction,
    whose x̂_0 divides by sqrt(alpha_bar) ≈ 0 at the noisiest steps."""
    advantage_conditioning: bool = False
    """Give the denoiser a scalar input, the segment's standardized advantage under the current
    critic, for classifier-free guidance (switched on by imagination guidance 'cfg')."""
    condition_dropout: float = 0.25
    """Fraction of training segments whose advantage label is dropped, so the same network
    also learns the unconditional model."""
    student_steps: int = 0
    """Distil the model, as it trains, into a student that samples in this many DDIM steps
    (1–4; 0: no student); imagination then samples with the student, and the imagination
    sampler settings are not used (agdrl.diffusion.distillation)."""
    student_teacher_steps: int = 8
    """Steps of the teacher's chain that the student learns to reproduce (a multiple of
    student_steps)."""
    student_teacher_sampler: Literal["ddim", "heun"] = "ddim"
    """Deterministic sampler of the teacher's chain."""
    student_update_every: int = 1
    """Distil one student step every this many world-model steps (a distillation step costs
    about m teacher calls plus a student step, m = student_teacher_steps / student_steps)."""

    def __post_init__(self):
        require_finite(self)
        require_choice(self, "schedule", ("cosine", "linear"))
        require_choice(self, "prediction", ("x0", "eps"))
        require(self.horizon >= 2, f"horizon must be at least 2, got {self.horizon}")
        require_positive(self, "num_steps", "batch_size", "lr", "clip_value")
        require(self.schedule_tau is None or self.schedule_tau > 0,
                f"schedule_tau must be positive, got {self.schedule_tau}")
        require_non_negative(self, "weight_decay", "grad_clip", "x0_bound")
        require(self.clip_max_step >= -1, f"clip_max_step must be ≥ -1, got "
                                          f"{self.clip_max_step}")
        require_fraction(self, "ema_decay", closed=False)
        require_fraction(self, "condition_dropout", closed=False)
        require_non_negative(self, "student_steps")
        require_positive(self, "student_update_every")
        if self.student_steps:
            require_choice(self, "student_teacher_sampler", ("ddim", "heun"))
            require(self.student_teacher_steps % self.student_steps == 0
                    and self.student_teacher_steps >= self.student_steps,
                    f"student_teacher_steps {self.student_teacher_steps} must be a multiple "
                    f"of student_steps {self.student_steps}")
            require(self.student_teacher_steps <= self.num_steps,
                    f"student_teacher_steps {self.student_teacher_steps} exceeds the "
                    f"{self.num_steps} training steps")
            require(not self.advantage_conditioning,
                    "a distilled student does not support advantage conditioning (cfg)")
            require(self.prediction == "x0", "a distilled student needs x0 prediction (with ε "
                                             "the noisiest step's x̂_0 target is unlearnable)")


@dataclass(frozen=True)
class EnsembleConfig:
    """Autoregressive probabilistic MLP ensemble (MBPO/PETS style)."""

    members: int = 7
    """Ensemble members trained on bootstrapped batches."""
    elites: int = 5
    """Members used for rollouts: those with the lowest mean-prediction error on the
    transitions given to ``select_elites`` (held-out data in the error-avalanche measurement;
    replayed transitions, which the members also train on, in the online loop)."""
    width: int = 200
    """Hidden width of each member."""
    depth: int = 4
    """Hidden layers of each member."""
    batch_size: int = 256
    """Transitions per member per training step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 5e-5
    """L2 penalty on the weights."""

    def __post_init__(self):
        require_finite(self)
        require_positive(self, "members", "width", "batch_size", "lr")
        require_layers(self, "depth")
        require(1 <= self.elites <= self.members,
                f"elites must be in [1, members={self.members}], got {self.elites}")
        require_non_negative(self, "weight_decay")


def config_from_dict(cls: type, raw: Any, where: str = "the config", prefix: str = ""):
    """Rebuild a (nested) frozen config dataclass from ``dataclasses.asdict`` output (JSON):
    nested configs are rebuilt by their field's type, lists become tuples, and a field the
    saved config lacks takes the class's ``FORMER_DEFAULTS`` entry if it has one, else its
    default. A field the class lists in ``MOVED_FIELDS`` is read from its new sub-config; one
    in ``REMOVED_FIELDS`` is dropped if it holds the value that means today's behaviour and
    refused otherwise (a run of a removed feature). Every value is checked against its field's
    type, and unknown fields are refused: a ConfigError names ``where`` (the file) and the
    field (``prefix`` + its name), so that a file edited by hand or damaged is never
    half-read."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a JSON "
                          f"object, got {_json_kind(raw)}")
    raw = _current_layout(cls, raw, where, prefix)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(prefix + k for k in unknown)}"
                          f" (a {cls.__name__} has {', '.join(names)})")
    hints = get_type_hints(cls, include_extras=True)
    former = getattr(cls, "FORMER_DEFAULTS", {})
    kwargs = {}
    for name in names:
        if name in raw:
            kwargs[name] = read_typed(raw[name], hints[name], where, prefix + name)
        elif name in former:  # written before the field existed
            kwargs[name] = former[name]
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {prefix}{err}") from err


def _current_layout(cls: type, raw: dict, where: str, prefix: str) -> dict:
    """``raw`` with the class's moved fields put into their sub-configs and its removed fields
    dropped (ConfigError for a removed field whose value agdrl no longer implements)."""
    raw = dict(raw)
    for name, into in getattr(cls, "MOVED_FIELDS", {}).items():
        if name in raw:
            raw[into] = {**raw.get(into, {}), name: raw.pop(name)}
    for name, kept in getattr(cls, "REMOVED_FIELDS", {}).items():
        if name in raw and kept is not None and raw[name] != kept:
            raise ConfigError(f"{where}: {prefix}{name} = {raw[name]!r} is from an earlier "
                              f"agdrl, which no longer has it (only {kept!r} remains)")
        raw.pop(name, None)
    return raw


def read_typed(value: Any, kind: Any, where: str, name: str) -> Any:
    """``value`` read from JSON as field ``name`` of type ``kind``: a config dataclass, a
    union, a Literal, a tuple, list or dict of such, bool, int, float, str or Path (other
    types pass unchecked). A ConfigError names ``where`` and ``name`` when it is not one."""
    while get_origin(kind) in (Annotated, Required, NotRequired):
        kind = get_args(kind)[0]
    if dataclasses.is_dataclass(kind):
        return config_from_dict(kind, value, where, f"{name}.")
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return read_typed(value, option, where, name)
            except ConfigError:
                pass
        return read_typed(value, options[-1], where, name)
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, int | float) and not isinstance(value, bool),
          str: isinstance(value, str), Path: isinstance(value, str)}
    if origin is Literal:
        if value in args:
            return value
        expected = f"one of {', '.join(repr(a) for a in args)}"
    elif origin in (tuple, list):
        if isinstance(value, list):
            items = [read_typed(v, args[0], where, f"{name}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        expected = f"a list of {_kind_name(args[0])}s"
    elif origin is dict or kind is dict:
        if isinstance(value, dict):
            return value if not args else {
                k: read_typed(v, args[1], where, f"{name}.{k}") for k, v in value.items()}
        expected = "an object"
    elif kind in ok:
        if ok[kind]:
            return float(value) if kind is float else Path(value) if kind is Path else value
        expected = f"{'an' if kind is int else 'a'} {_kind_name(kind)}"
    else:
        return value
    raise ConfigError(f"{where}: {name} must be {expected}, got {_json_kind(value)}")


def _kind_name(kind: Any) -> str:
    return {bool: "boolean (true or false)", int: "integer", float: "number", str: "string",
            Path: "path (a string)"}.get(kind, getattr(kind, "__name__", str(kind)))


def _json_kind(value: Any) -> str:
    """How a JSON value is named in an error: its JSON type and, when short, the value."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value),
                                                                       type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown}" if value is not None and len(shown) <= 40 else kind


def reference_denoiser() -> DenoiserConfig:
    """The reference residual MLP: width 1024, 6 blocks (≈ 6.7 M parameters on Hopper, H = 10)."""
    return DenoiserConfig(kind="mlp", width=1024, depth=6)


def task_schedule_tau(env_id: str) -> float:
    """The reference schedule exponent: 0.1 for Hopper, 1 elsewhere (an id may name the
    module that registers it: 'module:EnvId')."""
    return 0.1 if env_id.rpartition(":")[2].lower().startswith("hopper") else 1.0


def for_task(cfg: DiffusionConfig, env_id: str) -> DiffusionConfig:
    """Fill task-dependent defaults (the schedule exponent) that were left as None."""
    if cfg.schedule_tau is None:
        return dataclasses.replace(cfg, schedule_tau=task_schedule_tau(env_id))
    return cfg


@dataclass(frozen=True)
class ActorCriticConfig:
    """The on-policy actor-critic trained on imagined segments (DESIGN §2.4)."""

    hidden: int = 256
    """Hidden units per layer of the actor and of the critic."""
    layers: int = 2
    """Hidden layers of the actor and of the critic."""
    min_std: float = 0.1
    """Floor of the policy's std (pre-squash)."""
    init_std: float = 1.0
    """Policy std at initialization (pre-squash)."""
    gamma: float = 0.99
    """Discount."""
    lam: float = 0.9
    """GAE λ."""
    entropy_weight: float = 1e-5
    """Weight of the policy entropy bonus."""
    actor_lr: float = 3e-5
    """Actor learning rate (the largest step the line search may take)."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    grad_clip: float = 0.1
    """Gradient-norm clip for both networks (0 disables)."""
    target_ema: float = 0.995
    """Decay of the slow target critic used for bootstrapping."""
    normalize_advantages: bool = True
    """Standardize the advantages over the batch."""
    target_logp_change: float = 0.01
    """Line search: wanted mean |Δ log π(a|s)| of one actor update on its batch (0: off)."""
    linesearch_tolerance: float = 0.25
    """Line search: accepted relative deviation from that target."""
    actor_gradient: Literal["reinforce", "q"] = "reinforce"
    """The actor's gradient: REINFORCE on the standardized GAE advantages of the imagined
    actions (PolyGRAD's), or 'q', the reparameterized gradient of a learned Q(s, a) at fresh
    actions of π at the imagined states (the policy step of SAC and TD-MPC2; Q is regressed
    on the same λ-returns as V, and divided by its batch mean |Q| so that the entropy weight
    keeps its scale)."""

    def __post_init__(self):
        require_finite(self)
        require_positive(self, "hidden", "min_std", "actor_lr", "critic_lr",
                         "linesearch_tolerance")
        require_layers(self, "layers")
        require(self.init_std > self.min_std,
                f"need 0 < min_std < init_std, got {self.min_std}, {self.init_std}")
        require(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        require_fraction(self, "lam")
        require_fraction(self, "target_ema", closed=False)
        require_non_negative(self, "entropy_weight", "grad_clip", "target_logp_change")


@dataclass(frozen=True)
class ImaginationExperiments:
    """Alternatives to the default imagination that docs/learning.md and docs/guidance.md
    measure against it. None is needed to use agdrl; they are kept so that those measurements
    can be repeated and extended."""

    termination: Literal["model", "classifier"] = "model"
    """Where the imagined terminal flags come from: the diffusion model's own terminal channel
    (the papers'), or a classifier of real transitions (s, a, s') learned beside it
    (``agdrl.termination``; the channel can end segments from habit rather than from states:
    docs/results.md)."""
    reward: Literal["model", "regressor"] = "model"
    """Where the imagined rewards come from: the diffusion model's own reward channel (the
    papers'), or a regression r(s, a) of real transitions learned beside it
    (``agdrl.reward_model``; per transition, as MBPO's models predict rewards). State
    guidance then scores the relabelled segments."""
    guidance_max_step: int = -1
    """Guide only denoising steps with k ≤ this (−1: every step but the last)."""
    guide_states_first: bool = False
    """Apply the state guidance before the policy guidance at each denoising step, so that the
    step's actions are drawn at the guided states and respond to them (the world model
    re-predicts the states from the actions at the next call, so a state edit otherwise
    survives only through the noise). Default: policy guidance first (the reference's
    order)."""
    resample_actions: bool = False
    """'sample' policy guidance only: after the chain, draw the actions again at the final
    states with the chain's ε, so that they are exactly samples of π at the segment's own
    states. Without it they are drawn at the last call's predicted states, which the last
    step's clip moves (docs/results.md). The states were then generated under other actions,
    so it trades dynamics accuracy for on-policy actions; policy_relaxation and settle_steps
    get both."""

    guide_actions: bool = False
    """Advantage guidance through the actions: the state guidance's gradient moves the
    policy's noise ε ('sample' policy guidance), differentiated through the denoiser, instead
    of the predicted states, so the actions drift toward the advantage-weighted policy and the
    denoiser predicts the states that follow from them (``agdrl.guidance.ActionGuidance``;
    one more denoiser call and its backward pass per guided step)."""
    steered_fraction: float = 1.0
    """Share of the imagined rows (the first ones) that advantage guidance steers; below 1 the
    others are sampled unguided, the critic learns from every row and the actor only from the
    unguided ones, whose actions are samples of π: steered actions then shape the value the
    actor's advantages are measured against, not the policy directly."""

    def __post_init__(self):
        require_choice(self, "termination", ("model", "classifier"))
        require(0.0 < self.steered_fraction <= 1.0,
                f"steered_fraction must be in (0, 1], got {self.steered_fraction}")
        require_choice(self, "reward", ("model", "regressor"))
        require(not (self.guide_actions and self.guide_states_first),
                "guide_actions moves the actions after policy guidance has drawn them; it "
                "cannot also run before it (guide_states_first)")
        require(self.guidance_max_step >= -1, f"guidance_max_step must be ≥ -1, got "
                                              f"{self.guidance_max_step}")


@dataclass(frozen=True)
class ImaginationConfig:
    """How imagined segments are generated for the agent (DESIGN §2.3)."""

    FORMER_DEFAULTS: ClassVar[dict[str, object]] = {
        "policy_guidance": "pull", "policy_relaxation": 1.0, "settle_steps": 0}
    """What a saved config written before one of these fields existed meant by its absence
    (what agdrl did then), so that a resumed or reported older run keeps its behaviour."""
    MOVED_FIELDS: ClassVar[dict[str, str]] = {
        name: "experimental" for name in ("termination", "reward", "guidance_max_step",
                                          "guide_states_first", "resample_actions")}
    """Fields that a saved config may still hold here and that now live in the named
    sub-config."""

    batch_size: int = 512
    """Segments per imagination batch (reference: 512 for AGD, 1024 for PolyGRAD)."""
    segments: int = 1
    """Chained diffusion segments per imagined trajectory: each after the first starts from
    the previous one's last imagined state, so the agent learns from segments · (H − 1) + 1
    states (a longer imagination horizon from the same world model)."""
    sampler: SamplerKind = "ddpm"
    """Reverse-process sampler: ancestral DDPM, DDIM (η = 0), second-order Heun (two network
    calls per step) or DPM-Solver++(2M) (one)."""
    sampler_steps: int = 0
    """Denoising steps (0: all K training steps)."""
    sampler_spacing: TimestepSpacing = "linspace"
    """Which training indices a few-step sampler visits: 'linspace' ends its chain with a
    call at the nearly clean index 0, 'trailing' spends that call higher up (more accurate
    with few steps: benchmarks/sampling.py). Same grid for all K steps. A trailing grid of
    few steps may visit no index ≤ the model's clip_max_step, and then never clips."""
    guidance: Annotated[Literal["none", "sag", "eag", "reward", "cfg"],
                        tyro.conf.arg(aliases=("--guidance",))] = "sag"
    """Guidance on top of policy guidance: none (PolyGRAD), sigmoid or exponential advantage
    guidance on states (AGD), reward guidance (gradient of a learned reward model), or
    advantage-conditioned classifier-free guidance (trains the world model with advantage
    labels)."""
    advantage: Annotated[Literal["td", "gae", "qv"],
                         tyro.conf.arg(aliases=("--advantage",))] = "td"
    """Advantage estimator for SAG/EAG: one-step TD (the paper's), GAE over the segment, or
    Q − V with a learned Q."""
    guidance_scale: float = 4.0
    """Scale c of the state guidance (reference: 4 for SAG, 3–4 for EAG); with 'resample',
    of the standardized segment advantages z in the weights σ(c z) or exp(c z)."""
    guidance_mode: Literal["sigma4", "normalized", "total", "resample"] = "sigma4"
    """How the guidance acts: c σ_k⁴ ∇J on the predicted states at each denoising step (the
    paper's), c σ_k ∇J / rms(∇J) (schedule-independent size per step), c (ᾱ_{k'} − ᾱ_k)
    ∇J / rms(∇J) ('total': the steps' weights sum to about 1, so c is the whole movement
    whatever the number of steps; agdrl.guidance), or 'resample': no gradient;
    draw resample_candidates unguided segments per start and keep one with probability
    ∝ σ(c z) (sag) or exp(c z) (eag, reward), z the segment's advantage (reward: its reward
    sum) standardized among the start's candidates: the distribution the gradient forms aim
    at (agdrl.guidance.resampling)."""
    resample_candidates: int = 4
    """'resample' guidance: candidate segments drawn per start state (the imagination's cost
    grows by this factor)."""
    guide_last_state: bool = False
    """Also guide the segment's last state (the reference zeroes its gradient; for EAG that
    leaves only interior terms, which lower V: see agdrl.guidance.state_gradient)."""
    policy_guidance: Literal["sample", "pull"] = "sample"
    """How the imagined actions follow the policy: 'sample' makes them samples of π at the
    predicted states (ε fixed over the chain; exact at the states they are drawn at, under any
    sampler; see experimental.resample_actions), 'pull' is PolyGRAD's
    original (noise pulled toward π by a step δ tuned online; not samples of π under
    few-step or deterministic samplers, and the agent then fails to learn Reacher: see
    docs/guidance.md)."""
    policy_relaxation: float = 0.5
    """'sample' policy guidance: the fraction β of the way the imagined pre-squash actions move
    toward π's sample at each step's predicted states (1: replace them; with a settle step
    they are then π's samples at the final states). Below 1 it damps an alternation between
    two state-action solutions that a sharp policy can show, but leaves the final actions off
    the policy when the chain ends before they settle (docs/learning.md)."""
    settle_steps: int = 4
    """'sample' policy guidance: network calls at the clean index 0 after the chain, each
    followed by policy guidance, so that the states and the on-policy actions settle on each
    other (0: none; a distilled student settles with its teacher). Each costs one denoiser
    and one actor evaluation, without guidance gradients."""
    policy_delta: float = 0.005
    """Initial step δ of 'pull' policy guidance (tuned online toward unit RMS of the
    standardized actions)."""
    experimental: ImaginationExperiments = field(default_factory=ImaginationExperiments)
    """Measured alternatives to the default imagination (not needed to use agdrl)."""
    cfg_target: float = 1.0
    """Classifier-free guidance: the advantage asked for, in standard deviations of the
    training labels."""
    cfg_weight: float = 2.0
    """Classifier-free guidance weight w (1: conditional model alone, > 1: extrapolate)."""
    cuda_graph: bool = False
    """On a CUDA device: capture the guided chain in a CUDA graph per batch size and replay it,
    so that a small batch is not bound by kernel launches (agdrl.cuda_graph). Its noise then
    comes from the device's default generator (seeded by the run's seed, kept in checkpoints)
    instead of the run's CPU generator, so it draws other numbers than an uncaptured run;
    guidance time is not split from sampling. Needs policy_guidance 'sample' ('pull' adapts δ
    between chains)."""

    def __post_init__(self):
        require_finite(self)
        require_positive(self, "batch_size", "policy_delta", "segments")
        require_choice(self, "sampler", get_args(SamplerKind))
        require_choice(self, "sampler_spacing", get_args(TimestepSpacing))
        require_choice(self, "policy_guidance", ("sample", "pull"))
        require(not self.experimental.resample_actions or self.policy_guidance == "sample",
                "resample_actions draws the actions from π with the chain's ε: it needs "
                "policy_guidance 'sample'")
        require(not self.cuda_graph or self.policy_guidance == "sample",
                "cuda_graph needs policy_guidance 'sample': 'pull' adapts its step δ between "
                "chains, and a captured chain would keep the δ of its capture")
        require(0.0 < self.policy_relaxation <= 1.0,
                f"policy_relaxation must be in (0, 1], got {self.policy_relaxation}")
        require(self.settle_steps >= 0, f"settle_steps must be ≥ 0, got {self.settle_steps}")
        require_choice(self, "guidance", ("none", "sag", "eag", "reward", "cfg"))
        require_choice(self, "advantage", ("td", "gae", "qv"))
        require_choice(self, "guidance_mode", ("sigma4", "normalized", "total", "resample"))
        require_positive(self, "resample_candidates")
        require(self.guidance_mode != "resample" or self.guidance in ("sag", "eag", "reward"),
                f"guidance_mode 'resample' weights segments by the objective of guidance sag, "
                f"eag or reward, not {self.guidance!r}")
        require(not self.experimental.guide_actions
                or (self.guidance in ("sag", "eag", "reward") and self.guidance_mode != "resample"
                    and self.policy_guidance == "sample"),
                f"experimental.guide_actions moves the 'sample' policy guidance's actions up the "
                f"gradient of guidance sag, eag or reward (not {self.guidance!r} with mode "
                f"{self.guidance_mode!r} and policy guidance {self.policy_guidance!r})")
        require(self.experimental.steered_fraction == 1.0
                or (self.guidance in ("sag", "eag", "reward")
                    and self.guidance_mode != "resample"),
                f"experimental.steered_fraction splits the batch between the gradient guidance "
                f"of sag, eag or reward and none (not {self.guidance!r} with mode "
                f"{self.guidance_mode!r})")
        require(self.sampler_steps >= 0, f"sampler_steps must be ≥ 0 (0: all), got "
                                         f"{self.sampler_steps}")
        require_non_negative(self, "guidance_scale", "cfg_weight")


@dataclass(frozen=True)
class PlannerConfig:
    """Decision-time planning with the world model (:class:`agdrl.planning.Planner`): at each
    real step, candidate trajectories from the current state, scored by imagined return plus
    the critic's discounted value of the state they reach; the first action of the best (or
    the score-weighted mean) is taken."""

    candidates: int = 64
    """Candidate trajectories per iteration (N)."""
    horizon: int = 10
    """Actions per candidate (H); each is scored over these steps and bootstrapped with
    γ^H V(s_H)."""
    iterations: int = 1
    """1: the candidates follow the policy (policy guidance). More: MPPI-style refinement, each
    further iteration drawing open-loop action sequences from a Gaussian (in the policy's
    pre-squash space) fitted to the previous iteration's elites, weighted by their scores."""
    elites: int = 8
    """Best candidates a refinement's Gaussian and the 'mean' action are fitted to."""
    temperature: float = 0.5
    """Elite weights exp((G − max G) / (temperature · std G)): scores in units of their own
    spread, so the same temperature suits every task's reward scale."""
    select: Literal["best", "mean"] = "best"
    """Act with the first action of the best-scoring candidate, or the elites' weighted mean
    first action (MPPI)."""
    warm_start: bool = True
    """One candidate of the first iteration replays the previous step's chosen plan shifted by
    one step (its last action repeated); forgotten at an episode's start."""
    guided: bool = True
    """Policy-following candidates of the diffusion model also carry the run's advantage
    guidance (its imagination.guidance, except 'resample', whose selection the planner's
    replaces); False: policy guidance only."""
    chain: bool = True
    """Join the diffusion model's segments end to start when the horizon is longer than one
    segment; False: one segment per candidate, and the horizon must fit in it."""
    min_std: float = 0.05
    """Floor of a refinement Gaussian's standard deviation (pre-squash units)."""
    denoising_steps: int = 0
    """Diffusion world model: generate each candidate segment in this many DDIM steps on a
    trailing grid, then the imagination's settle steps (0: with the run's imagination
    sampler). One step is the fastest planner (docs/planning.md)."""

    def __post_init__(self):
        require_finite(self)
        require_positive(self, "candidates", "horizon", "iterations", "elites", "temperature",
                         "min_std")
        require_non_negative(self, "denoising_steps")
        require(self.elites <= self.candidates, f"elites ({self.elites}) must not exceed "
                                                f"candidates ({self.candidates})")
        require_choice(self, "select", ("best", "mean"))


@dataclass(frozen=True)
class TrainConfig:
    """AGD-MBRL online training."""

    env: str = "InvertedPendulum-v5"
    """Gymnasium task id (used when no env object is given)."""
    seed: int = 0
    """Seed of the environment, the networks and the sampling."""
    total_steps: int = 20_000
    """Real environment steps."""
    prefill_steps: int = 5_000
    """Random-action steps before learning starts."""
    pretrain_steps: int = 1_000
    """Diffusion gradient steps right after the prefill."""
    model_updates_per_step: int = 1
    """Diffusion gradient steps per environment step after the prefill."""
    agent_update_every: int = 4
    """Environment steps between actor-critic updates (each on one imagined batch)."""
    eval_every: int = 10_000
    """Environment steps between evaluations (0: only at the end)."""
    eval_episodes: int = 20
    """Episodes per evaluation, deterministic action."""
    world_model: Literal["diffusion", "ensemble"] = "diffusion"
    """Imagine with the trajectory diffusion model (AGD-MBRL, PolyGRAD and the other guidance
    rows) or with policy rollouts of the autoregressive ensemble (the classic-MBRL row)."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Diffusion world model (world_model='diffusion')."""
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    """Autoregressive ensemble (world_model='ensemble')."""
    ensemble_horizon: int = 10
    """Length of the ensemble's policy rollouts (the diffusion model's is diffusion.horizon)."""
    elite_every: int = 1_000
    """Ensemble: model steps between re-selections of the elites (on 2000 replayed
    transitions)."""
    agent: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """Actor-critic."""
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    """Imagined batches and their guidance."""
    checkpoint_every: int = 0
    """Environment steps between checkpoints in the run directory (0: only at the end)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept in the run directory."""
    video: bool = False
    """Record the first episode of every evaluation as an MP4 in the run directory (needs the
    'video' extra; headless rendering uses MUJOCO_GL=egl unless it is set)."""
    dream_every: int = 0
    """Environment steps between dreams (0: none): once the agent trains, a video of one
    imagined trajectory next to the simulator replaying its actions from the same start
    state, logged to TensorBoard (and W&B) and kept in the run directory's dreams/ (needs
    the 'video' extra; ``agdrl dream`` draws more, with other settings)."""
    wandb: bool = False
    """Mirror the logged scalars to Weights & Biases (needs the 'wandb' extra; WANDB_MODE=offline
    works without an account)."""
    wandb_project: str = "agdrl"
    """Weights & Biases project name."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """NaN or Inf in an observation, reward, loss, gradient or imagined segment: 'stop' saves
    the last good state as a checkpoint and raises; 'skip' drops that transition or batch
    (counted in train_metrics.csv as nonfinite_skipped) and goes on."""
    device: str = "cpu"
    """torch device."""
    check_env: bool = True
    """Run Gymnasium's env checker on an environment that is not one of Gymnasium's own
    before training (its complaints are shown; an API violation stops the run)."""
    act_with_planner: bool = False
    """After the prefill, act in the environment with the planner instead of sampling the
    policy (the planner's candidates follow the policy's stochastic samples)."""
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    """The planner, when act_with_planner (``agdrl eval --plan`` takes its own)."""

    def __post_init__(self):
        require_finite(self)
        require_seed(self)
        require_positive(self, "total_steps", "prefill_steps", "agent_update_every",
                         "eval_episodes", "keep_checkpoints")
        require_non_negative(self, "pretrain_steps", "model_updates_per_step", "eval_every",
                             "checkpoint_every", "dream_every")
        require_choice(self, "on_nonfinite", ("stop", "skip"))
        require_choice(self, "world_model", ("diffusion", "ensemble"))
        require(self.ensemble_horizon >= 2, f"ensemble_horizon must be at least 2, got "
                                            f"{self.ensemble_horizon}")
        require_positive(self, "elite_every")
        require(self.world_model == "diffusion" or self.imagination.guidance == "none",
                f"guidance {self.imagination.guidance!r} acts on the diffusion model's "
                "denoising; the ensemble row takes guidance 'none'")
        require(self.world_model == "diffusion" or (
                    self.imagination.experimental.termination,
                    self.imagination.experimental.reward) == ("model", "model"),
                "the termination classifier and the reward regressor relabel diffusion "
                "segments; the ensemble predicts termination and reward with its own heads")
        require(self.prefill_steps < self.total_steps,
                f"prefill_steps ({self.prefill_steps}) ≥ total_steps ({self.total_steps}): "
                "the agent would never train")
        require(not self.imagination.cuda_graph or (
                    self.world_model == "diffusion" and self.device.startswith("cuda")),
                "imagination.cuda_graph captures the diffusion model's chain on a CUDA device: "
                f"it needs world_model 'diffusion' and a 'cuda' device, got "
                f"{self.world_model!r} on {self.device!r}")
        require(self.imagination.sampler_steps <= self.diffusion.num_steps,
                f"imagination.sampler_steps ({self.imagination.sampler_steps}) exceeds the "
                f"world model's diffusion steps ({self.diffusion.num_steps})")
        require(self.diffusion.horizon > 2 or self.imagination.guidance not in
                ("sag", "eag", "reward") or self.imagination.guide_last_state,
                f"{self.imagination.guidance} guidance on segments of 2 states guides nothing "
                "(s_0 is pinned and the last state is left alone): set "
                "imagination.guide_last_state, or a longer diffusion.horizon")


def resolve_for_task(cfg: TrainConfig, env: str) -> TrainConfig:
    """The config a run on task ``env`` runs with and records: task-dependent defaults filled
    in (:func:`agdrl.config.for_task`), and the denoiser's advantage input switched on for
    classifier-free guidance."""
    diffusion = for_task(cfg.diffusion, env)
    if cfg.imagination.guidance == "cfg":  # the denoiser needs its advantage input
        diffusion = dataclasses.replace(diffusion, advantage_conditioning=True)
    return dataclasses.replace(cfg, env=env, diffusion=diffusion)
