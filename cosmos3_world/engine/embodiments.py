"""Embodiments: which action domain a robot belongs to, and how its raw actions become model inputs.

The domain id selects the model's per-domain action projection and the raw width says how many
of the model's ``action_dim`` channels the robot uses (the rest are zero). Both are facts of the
trained model (diffusers reference pipeline tables); a wrong pair silently produces garbage.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from .prompts import VIEW_POINT_FRAMING

# Rows of the published checkpoint's per-domain action tables (`num_embodiment_domains`).
NUM_EMBODIMENT_DOMAINS = 32

# Fps the reference pipeline assumes when none is given; used where a dataset's rate is not known.
DEFAULT_CONTROL_HZ = 24.0

# Domains the model knows whose raw width depends on the dataset, so they cannot be built in.
_WIDTH_DEPENDENT_DOMAINS = {"libero": 5}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Embodiment:
    """One robot/action domain: its model domain id, raw action width, control rate and camera view.

    ``action_low``/``action_high`` are optional per-dimension quantiles (e.g. q01/q99) that map raw
    actions to [-1, 1]; without them raw actions reach the model unchanged, as in the reference.
    """

    name: str
    domain_id: int
    action_dim: int
    control_hz: float = DEFAULT_CONTROL_HZ
    view_point: str = "ego_view"
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    description: str = ""
    image_position: bool = False  # the first two raw dims are a target (x, y) in the camera image, [-1, 1] over the
    # frame, x to the right, y down (Push-T): such actions can carry `rotary_action_features`

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Embodiment name must be a non-empty str, got {self.name!r}.")
        where = f"Embodiment {self.name!r}"
        if not _is_int(self.domain_id) or not 0 <= self.domain_id < NUM_EMBODIMENT_DOMAINS:
            raise ValueError(
                f"{where}: domain_id must be an int in [0, {NUM_EMBODIMENT_DOMAINS - 1}], got {self.domain_id!r}."
            )
        if not _is_int(self.action_dim) or self.action_dim < 1:
            raise ValueError(f"{where}: action_dim must be a positive int, got {self.action_dim!r}.")
        if not _is_real(self.control_hz) or not math.isfinite(self.control_hz) or self.control_hz <= 0:
            raise ValueError(f"{where}: control_hz must be a finite number > 0, got {self.control_hz!r}.")
        if self.view_point not in VIEW_POINT_FRAMING:
            raise ValueError(
                f"{where}: view_point must be one of {sorted(VIEW_POINT_FRAMING)}, got {self.view_point!r}."
            )
        if not isinstance(self.description, str):
            raise ValueError(f"{where}: description must be a str, got {type(self.description).__name__}.")
        if self.image_position and (self.action_dim < 2 or self.action_low is not None):
            raise ValueError(
                f"{where}: image_position needs >= 2 action dims in image coordinates, no action_low/high."
            )
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError(f"{where}: give both action_low and action_high, or neither.")
        if self.action_low is not None:
            low = self._stat_tuple("action_low", self.action_low)
            high = self._stat_tuple("action_high", self.action_high)
            bad = [i for i, (lo, hi) in enumerate(zip(low, high, strict=True)) if hi < lo]
            if bad:
                raise ValueError(f"{where}: action_high < action_low in dimensions {bad}.")
            object.__setattr__(self, "action_low", low)
            object.__setattr__(self, "action_high", high)
        object.__setattr__(self, "domain_id", int(self.domain_id))
        object.__setattr__(self, "action_dim", int(self.action_dim))
        object.__setattr__(self, "control_hz", float(self.control_hz))

    def _stat_tuple(self, field_name: str, values: Any) -> tuple[float, ...]:
        """Validate one normalisation statistic and return it as a tuple of floats."""
        where = f"Embodiment {self.name!r}: {field_name}"
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"{where} must be a sequence of {self.action_dim} floats, got {values!r}.")
        values = tuple(values)
        if len(values) != self.action_dim or not all(_is_real(v) for v in values):
            raise ValueError(f"{where} must be a sequence of {self.action_dim} floats, got {values!r}.")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{where} must be finite, got {values!r}.")
        return tuple(float(v) for v in values)

    @property
    def normalized(self) -> bool:
        """Whether raw actions are mapped to [-1, 1] with ``action_low``/``action_high``."""
        return self.action_low is not None


class UnknownEmbodimentError(KeyError, ValueError):
    """An embodiment name that is not registered (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:
        return str(self.args[0])


class EmbodimentRegistry:
    """Embodiments by name. Registering a name twice needs ``overwrite=True`` unless the definition is identical."""

    def __init__(self, embodiments: Iterable[Embodiment] = ()) -> None:
        self._by_name: dict[str, Embodiment] = {}
        for embodiment in embodiments:
            self.register(embodiment)

    def register(self, embodiment: Embodiment, overwrite: bool = False) -> Embodiment:
        """Add ``embodiment`` under its name and return it."""
        if not isinstance(embodiment, Embodiment):
            raise TypeError(f"expected an Embodiment, got {type(embodiment).__name__}.")
        existing = self._by_name.get(embodiment.name)
        if existing is not None and existing != embodiment and not overwrite:
            raise ValueError(
                f"embodiment {embodiment.name!r} is already registered as {existing}; "
                "pass overwrite=True to replace it."
            )
        self._by_name[embodiment.name] = embodiment
        return embodiment

    def get(self, name: str) -> Embodiment:
        """The embodiment called ``name``; an unknown name raises UnknownEmbodimentError listing the known ones."""
        embodiment = self._by_name.get(name) if isinstance(name, str) else None
        if embodiment is not None:
            return embodiment
        if isinstance(name, str) and name in _WIDTH_DEPENDENT_DOMAINS:
            raise UnknownEmbodimentError(
                f"embodiment {name!r} (domain {_WIDTH_DEPENDENT_DOMAINS[name]}) has no fixed action width; register "
                f"it with your dataset's width first, e.g. register_embodiment(name={name!r}, "
                f"domain_id={_WIDTH_DEPENDENT_DOMAINS[name]}, action_dim=<width>)."
            )
        raise UnknownEmbodimentError(f"unknown embodiment {name!r}; known embodiments: {list(self.names())}.")

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._by_name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Embodiment]:
        return iter([self._by_name[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._by_name)


def _builtin(name: str, domain_id: int, action_dim: int, description: str, **kwargs: Any) -> Embodiment:
    return Embodiment(name=name, domain_id=domain_id, action_dim=action_dim, description=description, **kwargs)


# Widths compose a 9-D pose (xyz + first two rotation-matrix columns), a 1-D gripper, and 15-D
# fingertips (5 x xyz). Control rates are the datasets' published rates where known, else the default;
# view points are the datasets' primary cameras where known, else the reference default "ego_view".
_ARM = "9-D end-effector pose + 1-D gripper"
DEFAULT_EMBODIMENTS = EmbodimentRegistry(
    [
        _builtin("av", 1, 9, "Autonomous vehicle: 9-D ego pose."),
        _builtin("camera_pose", 2, 9, "Moving camera: 9-D camera pose."),
        _builtin("hand_pose", 3, 57, "Egocentric two hands: 9-D ego + 2 x (9-D wrist + 15-D fingertips)."),
        _builtin("pusht", 4, 2, "Push-T: 2-D planar target position.", control_hz=10.0, image_position=True),
        _builtin("umi", 6, 10, f"UMI hand-held gripper: {_ARM}.", view_point="wrist_view"),
        _builtin(
            "bridge_orig_lerobot",
            7,
            10,
            f"BridgeData V2 WidowX arm: {_ARM}.",
            control_hz=5.0,
            view_point="third_person_view",
        ),
        _builtin("droid_lerobot", 8, 10, f"DROID Franka arm: {_ARM}.", control_hz=15.0, view_point="third_person_view"),
        _builtin("robomind-franka", 8, 10, f"RoboMIND Franka arm: {_ARM}."),
        _builtin("galbot", 9, 30, "Galbot humanoid: stacked 9-D pose blocks and grippers."),
        _builtin("robomind-franka-dual", 12, 20, f"RoboMIND dual Franka arms: 2 x ({_ARM})."),
        _builtin("robomind-ur", 13, 10, f"RoboMIND UR arm: {_ARM}."),
        _builtin("agibotworld", 15, 29, f"AgiBot World humanoid: 9-D ego + 2 x ({_ARM})."),
        _builtin("agibot_gear_gripper", 15, 29, f"AgiBot gear-gripper humanoid: 9-D ego + 2 x ({_ARM})."),
        _builtin("agibot_gear_gripper_ext", 15, 29, f"AgiBot gear-gripper humanoid: 9-D ego + 2 x ({_ARM})."),
        _builtin("fractal", 20, 10, f"Google RT-1 robot (fractal): {_ARM}.", control_hz=3.0),
    ]
)


def register_embodiment(
    embodiment: Embodiment | None = None, /, *, overwrite: bool = False, **embodiment_fields: Any
) -> Embodiment:
    """Register an Embodiment (or one built from keyword fields) in DEFAULT_EMBODIMENTS and return it."""
    if (embodiment is None) == (not embodiment_fields):
        raise TypeError("pass either an Embodiment or its fields as keywords (name=..., domain_id=..., ...).")
    if embodiment is None:
        known = {f.name for f in fields(Embodiment)}
        unknown = sorted(set(embodiment_fields) - known)
        if unknown:
            raise TypeError(f"unknown Embodiment fields {unknown}; expected some of {sorted(known)}.")
        embodiment = Embodiment(**embodiment_fields)
    return DEFAULT_EMBODIMENTS.register(embodiment, overwrite=overwrite)


def get_embodiment(name_or_embodiment: str | Embodiment) -> Embodiment:
    """An Embodiment passes through; a name is looked up in DEFAULT_EMBODIMENTS."""
    if isinstance(name_or_embodiment, Embodiment):
        return name_or_embodiment
    if not isinstance(name_or_embodiment, str):
        raise TypeError(f"expected an embodiment name or Embodiment, got {type(name_or_embodiment).__name__}.")
    return DEFAULT_EMBODIMENTS.get(name_or_embodiment)


def prepare_actions(
    actions: Any,
    embodiment: str | Embodiment,
    action_dim: int,
    chunk_size: int | None = None,
    fourier_octaves: int = 0,
) -> torch.Tensor:
    """Validate raw actions ``[T, raw_width]``, normalise them if the embodiment has stats, zero-pad to ``action_dim``
    (with ``fourier_octaves`` > 0, write their Fourier features into the padding: see `action_features`).

    Returns a new float32 tensor ``[T, action_dim]`` (on the input's device for tensors, else CPU).
    """
    emb = get_embodiment(embodiment)
    if not _is_int(action_dim) or action_dim < 1:
        raise ValueError(f"action_dim must be a positive int, got {action_dim!r}.")
    if emb.action_dim > action_dim:
        raise ValueError(
            f"embodiment {emb.name!r} has {emb.action_dim} action dimensions, more than the model's "
            f"action_dim={action_dim}."
        )
    if chunk_size is not None and (not _is_int(chunk_size) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")

    x = _as_float_matrix(actions, "actions")
    expected_rows = "T" if chunk_size is None else str(chunk_size)
    if x.shape[1] != emb.action_dim or x.shape[0] < 1 or (chunk_size is not None and x.shape[0] != chunk_size):
        raise ValueError(
            f"actions must have shape [{expected_rows}, {emb.action_dim}] for embodiment {emb.name!r}, "
            f"got {tuple(x.shape)}."
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("actions must be finite; found NaN or inf values.")
    if emb.normalized:
        low, high = _stats(emb, x.device)
        span = high - low
        safe_span = torch.where(span > 0, span, torch.ones_like(span))
        x = torch.where(span > 0, (2 * (x - low) / safe_span - 1).clamp(-1.0, 1.0), torch.zeros_like(x))
    return action_features(
        torch.nn.functional.pad(x, (0, action_dim - emb.action_dim)), emb.action_dim, fourier_octaves
    )


def fourier_width(width: int, octaves: int) -> int:
    """Columns a `width`-D action fills with its Fourier features (`action_features`): the raw columns, then sin and
    cos of each at `octaves` octaves; rotary features (`rotary_action_features`) start after them."""
    return width * (1 + 2 * octaves)


def action_features(actions: torch.Tensor, width: int, octaves: int) -> torch.Tensor:
    """Model-space actions [T, D] whose first `width` columns hold the action -> a copy with sin, cos(2^j pi a) of
    those columns (j < octaves) in the columns after them, zeros beyond; octaves 0: `actions` itself (no copy).

    Fourier features of a coordinate (Tancik et al. 2020) let a small model draw at the position an action names,
    which a linear embedding of the raw coordinate makes hard. Only clean (conditioning) rows carry them; the rows a
    sampler denoises keep zeros there, and a generated action is featurised again before it conditions a later chunk.
    """
    if not _is_int(octaves) or octaves < 0:
        raise ValueError(f"fourier_octaves must be a non-negative int, got {octaves!r}.")
    need = fourier_width(width, octaves)
    if need > actions.shape[1]:
        raise ValueError(
            f"fourier_octaves={octaves} needs {need} action columns for a {width}-D action, the model has "
            f"action_dim={actions.shape[1]}."
        )
    if not octaves:
        return actions
    out = actions.clone()
    a = actions[:, :width]
    freqs = math.pi * 2.0 ** torch.arange(octaves, dtype=a.dtype, device=a.device)  # [K]
    phase = (a[:, None, :] * freqs[None, :, None]).flatten(1)  # [T, K * width]: octave-major
    out[:, width:need] = torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)
    out[:, need:] = 0
    return out


def target_token_coordinates(actions: torch.Tensor, grid: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row [T], column [T]) coordinates, in tokens, of the targets (x, y) in [-1, 1] of an `image_position`
    embodiment's model-space actions [T, >= 2], on a grid of (rows, columns) tokens: token (i, j) covers
    [i - 0.5, i + 0.5] x [j - 0.5, j + 0.5] around its centre, as the vision grid's spatial positions."""
    x, y = actions[:, 0], actions[:, 1]
    return (y + 1) / 2 * grid[0] - 0.5, (x + 1) / 2 * grid[1] - 0.5


def action_token_positions(
    actions: torch.Tensor, noisy: Sequence[int], grid: tuple[float, float]
) -> tuple[tuple[float, float], ...]:
    """Spatial positions (row, column) of the action tokens of an `image_position` embodiment: each clean action's
    token sits on the token its target lies in (a fraction of a token apart), so attention reaches it from there
    the way it reaches the same place in a context frame. Rows being generated (`noisy`) stay at (0, 0)."""
    row, col = target_token_coordinates(actions.float(), grid)
    skip = set(noisy)
    return tuple((0.0, 0.0) if i in skip else (float(r), float(c)) for i, (r, c) in enumerate(zip(row, col)))


def rotary_action_features(
    actions: torch.Tensor, start: int, inv_freq: torch.Tensor, axis: torch.Tensor, grid: tuple[float, float]
) -> torch.Tensor:
    """Model-space actions [T, D] of an `image_position` embodiment -> a copy whose columns from `start` hold cos,
    then sin, of the rotary phase each spatial slot gives the token the target lies in; zeros beyond.

    `inv_freq` [S] and `axis` [S] (1 = h, 2 = w) are the generator's spatial rotary slots, `grid` its (rows, columns)
    of tokens per frame. Action tokens sit at spatial position 0, so a key built linearly from these columns meets
    the query of the target's token in phase: attention can find where an action points, which a translation-
    equivariant model cannot read from the coordinate itself.
    """
    s = len(inv_freq)
    need = start + 2 * s
    if need > actions.shape[1]:
        raise ValueError(f"rotary action features need {need} action columns, the model has {actions.shape[1]}.")
    row, col = target_token_coordinates(actions, grid)
    coord = torch.where(axis.to(actions.device)[None] == 1, row[:, None], col[:, None])  # [T, S]
    phase = coord * inv_freq.to(actions.device, actions.dtype)[None]
    out = actions.clone()
    out[:, start : start + s] = torch.cos(phase)
    out[:, start + s : need] = torch.sin(phase)
    out[:, need:] = 0
    return out


def featurize_actions(
    actions: torch.Tensor,
    embodiment: str | Embodiment,
    octaves: int = 0,
    rotary: tuple[torch.Tensor, torch.Tensor, tuple[float, float]] | None = None,
) -> torch.Tensor:
    """Clean model-space actions [T, D] featurised as a model trained with them expects: Fourier features of the raw
    columns (`octaves`), then, for `image_position` embodiments with `rotary` = (inv_freq, axis, grid), the target
    token's rotary phases (`rotary_action_features`)."""
    emb = get_embodiment(embodiment)
    out = action_features(actions, emb.action_dim, octaves)
    if rotary is not None and emb.image_position:
        out = rotary_action_features(out, fourier_width(emb.action_dim, octaves), *rotary)
    return out


def unnormalize_actions(actions: Any, embodiment: str | Embodiment) -> np.ndarray:
    """Model-space actions ``[T, >=raw_width]`` -> raw actions ``[T, raw_width]`` (float32), inverting prepare_actions.

    Values outside [-1, 1] map linearly beyond the quantiles; dimensions with ``low == high`` return ``low``.
    """
    emb = get_embodiment(embodiment)
    x = _as_float_matrix(actions, "actions")
    if x.shape[1] < emb.action_dim:
        raise ValueError(
            f"actions must have at least {emb.action_dim} columns for embodiment {emb.name!r}, got {tuple(x.shape)}."
        )
    x = x[:, : emb.action_dim]
    if emb.normalized:
        low, high = _stats(emb, x.device)
        x = low + (x + 1) / 2 * (high - low)
    return x.contiguous().cpu().numpy()


def _as_float_matrix(values: Any, name: str) -> torch.Tensor:
    """A rank-2 float32 tensor holding a copy of ``values`` (real floating or integer dtype only)."""
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise ValueError(f"{name} must have a real floating or integer dtype, got {values.dtype}.")
        tensor = values.detach().to(torch.float32, copy=True)
    else:
        try:
            array = np.asarray(values)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} must be a [T, D] array of numbers: {exc}") from exc
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{name} must have a real floating or integer dtype, got {array.dtype}.")
        tensor = torch.from_numpy(array.astype(np.float32))
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a rank-2 [T, D] array, got shape {tuple(tensor.shape)}.")
    return tensor


def _stats(emb: Embodiment, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    low = torch.tensor(emb.action_low, dtype=torch.float32, device=device)
    high = torch.tensor(emb.action_high, dtype=torch.float32, device=device)
    return low, high
