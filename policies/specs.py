"""Policies named by a string, as the CLI and the manifest name them, so a run can be made again elsewhere.

random              uniform within the action bounds (seeded per wave)
model               the world model's own policy mode, in the env's worlds
sim:NAME            a scripted push policy of graded skill (cosmos3_world.sim.graded_policies: expert, ...)
replay:FILE         actions from a .npy / .npz file, held at the end
openpi:HOST:PORT    a policy served over OpenPI's websocket protocol
module.path:attr    a Policy object; a class or a `make_*` function, called with the env to make one;
                    or any other function obs -> actions (wrapped in ScriptedPolicy)
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import single_action_space

KINDS = ("random", "model", "sim:NAME", "replay:FILE", "openpi:HOST:PORT", "module.path:attr")


def make_policy(spec: str, env: Any, seed: int = 0) -> Any:
    """The policy `spec` names, built for `env` (single or vector)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"policy must be one of {list(KINDS)}, got {spec!r}")
    kind, _, rest = spec.partition(":")
    if spec == "random":
        from .simple import RandomPolicy

        return RandomPolicy(env, seed=seed)
    if spec == "model":
        from .world_model import WorldModelPolicy

        return WorldModelPolicy(env)
    if kind == "sim" and rest:
        from cosmos3_world.sim import graded_policies

        space = single_action_space(env)
        chunk = 1 if len(space.shape) == 1 else space.shape[0]
        table = graded_policies(chunk_size=chunk, seed=seed)
        if rest not in table:
            raise ValueError(f"policy {spec!r}: unknown scripted push policy; known: {sorted(table)}")
        return table[rest]
    if kind == "replay" and rest:
        from .simple import ReplayPolicy

        try:
            return ReplayPolicy(rest, env, on_end="hold")
        except FileNotFoundError:
            raise ValueError(f"policy {spec!r}: no actions file {rest}") from None
    if kind == "openpi" and rest:
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"policy {spec!r}: expected openpi:HOST:PORT")
        return _openpi(spec, env, host, int(port))
    if kind and rest and all(part.isidentifier() for part in kind.split(".")):
        return _from_module(spec, kind, rest, env)
    raise ValueError(f"policy must be one of {list(KINDS)}, got {spec!r}")


def _openpi(spec: str, env: Any, host: str, port: int) -> Any:
    import socket

    from .openpi import OpenPIClientPolicy

    try:  # the client retries forever when nothing listens: check first, and fail with a clear message
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise ValueError(f"policy {spec!r}: no OpenPI server reachable at {host}:{port} ({e})") from None
    return OpenPIClientPolicy(env, host, port)


def _from_module(spec: str, module: str, attr: str, env: Any) -> Any:
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"policy {spec!r}: cannot import {attr} from {module} ({e})") from None
    if not isinstance(obj, type) and callable(getattr(obj, "act", None)):
        return obj
    if isinstance(obj, type) or (callable(obj) and attr.startswith("make_")):
        made = obj(env)
        if not callable(getattr(made, "act", None)):
            raise ValueError(f"policy {spec!r}: {module}:{attr}(env) made {type(made).__name__}, which has no act()")
        return made
    if callable(obj):
        from .simple import ScriptedPolicy

        return ScriptedPolicy(obj)
    raise ValueError(f"policy {spec!r}: {module}:{attr} is neither a policy, a factory of one, nor a function")
