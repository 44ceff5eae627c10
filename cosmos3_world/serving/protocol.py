"""The wire protocol: OpenPI's websocket conventions, Cosmos3's modes, and strict validation of every request.

Frames are msgpack with numpy arrays as `{__ndarray__, data, dtype, shape}` maps (OpenPI's msgpack-numpy format).
Decoding here never unpickles and never builds object, void or complex arrays, and checks that each array's
bytes match its shape, so a hostile frame can only ever produce a `RequestError`.

A request is one observation dict (keys below; unknown keys are ignored, as OpenPI servers do):

  observation/image        uint8 [H, W, 3]   the camera the model sees (`observation/wrist_image` for
                                             wrist-camera embodiments, e.g. umi); needed to start a world
  observation/state        float [state_dim] the robot state (Push-T: the commanded position); checked, not used:
                                             the model acts from pixels
  prompt                   str               the instruction
  seed                     int               the world's noise: same request + same seed -> same answer
  mode                     "policy" | "world"  policy (default): the next action chunk; world: frames after `actions`
  actions                  float [chunk, D]  world mode: the actions to imagine the frames of
  embodiment               str               default: the server's
  endpoint                 "infer" | "reset" reset (as RoboArena): start a session's world from the image
  session_id               str               keep a world between calls (reset starts it; infer advances it)

A session's world is started by `endpoint: "reset"` from its image, prompt, seed and embodiment; each later
request with its `session_id` advances it one chunk (policy or world mode) from its own imagined frames, so
those requests carry no image (and their prompt and seed are the reset's).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ..engine.embodiments import Embodiment, EmbodimentRegistry

IMAGE_KEY = "observation/image"
WRIST_IMAGE_KEY = "observation/wrist_image"
STATE_KEY = "observation/state"
MODES = ("policy", "world")
ENDPOINTS = ("infer", "reset")
MAX_SESSION_ID_CHARS = 128
_ARRAY_KINDS = "biuf"  # bool, signed/unsigned ints, floats: the only array dtypes a request may carry


class RequestError(ValueError):
    """A bad request: its message goes back to that client alone, as a text frame."""


# ---------------------------------------------------------------------------------------------- msgpack-numpy
def _pack_default(obj: Any) -> Any:
    """msgpack hook: numpy arrays and scalars in OpenPI's msgpack-numpy layout."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"cannot send arrays of dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        obj = np.ascontiguousarray(obj)
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def packb(obj: Any) -> bytes:
    """One msgpack frame, arrays in msgpack-numpy layout (what `openpi_client.msgpack_numpy.unpackb` reads)."""
    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def _safe_dtype(spec: Any) -> np.dtype:
    try:
        dtype = np.dtype(spec.decode() if isinstance(spec, bytes) else spec)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise RequestError(f"unknown array dtype {spec!r}") from None
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise RequestError(f"arrays of dtype {dtype} are not accepted (only bool, int, uint and float arrays)")
    return dtype


def _unpack_hook(obj: dict) -> Any:
    """msgpack hook: a msgpack-numpy map -> a read-only numpy array viewing the frame; anything odd -> RequestError."""
    if b"__ndarray__" in obj:
        dtype = _safe_dtype(obj.get(b"dtype"))
        shape, data = obj.get(b"shape"), obj.get(b"data")
        if not isinstance(shape, (list, tuple)) or not all(_is_int(s) and s >= 0 for s in shape) or len(shape) > 8:
            raise RequestError(f"bad array shape {shape!r}")
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
            raise RequestError(f"array data does not match its shape {tuple(shape)} and dtype {dtype}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        value = _safe_dtype(obj.get(b"dtype")).type(obj.get(b"data"))
        return value
    return obj


def unpackb(message: bytes) -> Any:
    """Decode one request frame; malformed msgpack, ext types or unsafe arrays raise RequestError."""
    try:
        return msgpack.unpackb(message, object_hook=_unpack_hook, raw=False, strict_map_key=True)
    except RequestError:
        raise
    except Exception as e:  # msgpack raises many types (ExtraData, FormatError, StackError, ValueError, ...)
        raise RequestError(f"malformed msgpack frame ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Request:
    """One validated request; `image` and `actions` are float32/uint8 copies owned by the request."""

    endpoint: str
    mode: str
    embodiment: Embodiment
    prompt: str
    seed: int
    session_id: str | None = None
    image: np.ndarray | None = None  # uint8 [H, W, 3]
    actions: np.ndarray | None = None  # float32 [chunk, D] (world mode)


def camera_key(emb: Embodiment) -> str:
    """The observation key of the camera the model sees for `emb` (OpenPI's names)."""
    return WRIST_IMAGE_KEY if emb.view_point == "wrist_view" else IMAGE_KEY


def state_dim(emb: Embodiment) -> int:
    """Width of `observation/state`: the robot state in the action's units (Push-T: the commanded 2-D position)."""
    return emb.action_dim


class RequestParser:
    """Checks a decoded observation dict completely (types, shapes, dtypes, limits) before it may join a batch."""

    def __init__(
        self,
        embodiments: EmbodimentRegistry,
        allowed: list[str],
        default_embodiment: str,
        chunk_size: int,
        image_shape: tuple[int, int, int],
        max_prompt_chars: int,
    ):
        self.embodiments, self.allowed = embodiments, list(allowed)
        self.default = embodiments.get(default_embodiment)
        self.chunk_size, self.image_shape, self.max_prompt_chars = chunk_size, tuple(image_shape), max_prompt_chars

    def parse(self, obs: Any) -> Request:
        """The Request `obs` describes, or RequestError naming the first problem."""
        if not isinstance(obs, dict):
            raise RequestError(f"a request must be a msgpack map (an observation dict), got {type(obs).__name__}")
        endpoint = self._choice(obs, "endpoint", ENDPOINTS)
        session_id = obs.get("session_id")
        if session_id is not None and (
            not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_SESSION_ID_CHARS
        ):
            raise RequestError(f"session_id must be a str of 1 to {MAX_SESSION_ID_CHARS} characters")
        in_session = session_id is not None and endpoint == "infer"
        if in_session and "embodiment" in obs:
            raise RequestError("a session's embodiment is fixed at its reset; send embodiment with endpoint 'reset'")
        emb = self._embodiment(obs.get("embodiment"))
        mode = self._choice(obs, "mode", MODES)
        prompt = obs.get("prompt", "")
        if not isinstance(prompt, str):
            raise RequestError(f"prompt must be a str, got {type(prompt).__name__}")
        if len(prompt) > self.max_prompt_chars:
            raise RequestError(
                f"prompt is {len(prompt)} characters long, more than the limit of {self.max_prompt_chars}"
            )
        seed = obs.get("seed", 0)
        if not _is_int(seed) or not 0 <= int(seed) < 2**63:
            raise RequestError(f"seed must be an int in [0, 2**63), got {seed!r}")
        key = camera_key(emb)
        image = obs.get(key)
        if in_session:
            if image is not None:
                raise RequestError(f"a session's world imagines its own frames: send {key} with endpoint 'reset' only")
        elif image is None:
            raise RequestError(f"missing {key!r}: uint8 {list(self.image_shape)} (the camera the model sees)")
        else:
            image = self._image(key, image)
        if STATE_KEY in obs:
            self._floats(STATE_KEY, obs[STATE_KEY], (state_dim(emb),))
        actions = obs.get("actions")
        if mode == "world" and endpoint == "infer":
            if actions is None:
                raise RequestError(f"world mode needs 'actions': float [{self.chunk_size}, D]")
            # A session's embodiment is known only once its world is looked up: the runner checks the width then.
            width = None if in_session else emb.action_dim
            actions = self._floats("actions", actions, (self.chunk_size, width))
        elif actions is not None:
            raise RequestError("'actions' are sent in world mode only (mode: 'world'); policy mode predicts them")
        return Request(endpoint, mode, emb, prompt, int(seed), session_id, image, actions)

    def _choice(self, obs: dict, key: str, choices: tuple[str, ...]) -> str:
        value = obs.get(key, choices[0])
        if value not in choices:
            raise RequestError(f"unknown {key} {value!r}; expected one of {list(choices)}")
        return value

    def _embodiment(self, name: Any) -> Embodiment:
        if name is None:
            return self.default
        if not isinstance(name, str) or name not in self.allowed:
            raise RequestError(f"unknown embodiment {name!r}; this model serves {self.allowed}")
        return self.embodiments.get(name)

    def _image(self, key: str, value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise RequestError(f"{key} must be a numpy array (msgpack-numpy), got {type(value).__name__}")
        if value.dtype != np.uint8 or value.shape != self.image_shape:
            raise RequestError(f"{key} must be uint8 {list(self.image_shape)}, got {value.dtype} {list(value.shape)}")
        return value.copy()

    def _floats(self, key: str, value: Any, shape: tuple[int | None, ...]) -> np.ndarray:
        """A finite real array of `shape` (None: any length) as float32; lists of numbers are accepted too."""
        if isinstance(value, (list, tuple)):
            try:
                value = np.asarray(value)
            except (ValueError, TypeError):
                raise RequestError(f"{key} must be a numeric array") from None
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise RequestError(f"{key} must be a float array, got {kind}")
        want = ", ".join("D" if s is None else str(s) for s in shape)
        if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
            raise RequestError(f"{key} must have shape [{want}], got {list(value.shape)}")
        out = value.astype(np.float32)
        if not np.isfinite(out).all():
            raise RequestError(f"{key} holds NaN or inf values")
        return out


def check_actions(actions: np.ndarray, emb: Embodiment, chunk_size: int) -> None:
    """World-mode actions must be [chunk_size, emb.action_dim] (a session's width: once its world is known)."""
    if actions.shape != (chunk_size, emb.action_dim):
        raise RequestError(f"actions must have shape [{chunk_size}, {emb.action_dim}] for embodiment {emb.name!r}, "
                           f"got {list(actions.shape)}")  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
