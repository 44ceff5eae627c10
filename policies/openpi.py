"""A policy served over OpenPI's websocket protocol, through the real `openpi-client` (`WebsocketClientPolicy`).

Protocol (OpenPI's `WebsocketPolicyServer`): on connect the server sends one msgpack frame of metadata;
then every msgpack observation dict gets one msgpack reply with `actions` [H, D] (and `server_timing`);
arrays travel as msgpack-numpy. A text reply is the server's traceback: the client raises RuntimeError.

The observation sent for one env (override with `to_request`): `observation/image` uint8 [H, W, 3]
(several cameras: `observation/<camera>`), `observation/state` float32 (from agent_pos), `prompt` (the
task). A vector env's batch is sent one env at a time (OpenPI's servers serve single observations); the
first chunk_size rows of `actions` are executed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import batch_size, single_action_space, split_obs


def openpi_request(obs: dict[str, Any]) -> dict[str, Any]:
    """One env's observation as an OpenPI request dict."""
    request: dict[str, Any] = {}
    pixels = obs["pixels"]
    if isinstance(pixels, dict):
        for cam, img in pixels.items():
            request[f"observation/{cam}"] = np.ascontiguousarray(img, dtype=np.uint8)
    else:
        request["observation/image"] = np.ascontiguousarray(pixels, dtype=np.uint8)
    if "agent_pos" in obs:
        request["observation/state"] = np.asarray(obs["agent_pos"], np.float32)
    if obs.get("task") is not None:
        request["prompt"] = str(obs["task"])
    return request


class OpenPIClientPolicy:
    """Actions from a remote policy server speaking OpenPI's websocket protocol (see the module doc).

    host/port (or a ws:// URI as host), api_key (sent as `Authorization: Api-Key <key>`); `client` takes an
    already connected `openpi_client` policy instead. Connecting waits for the server's metadata frame.
    """

    def __init__(
        self,
        env_or_space: Any,
        host: str = "localhost",
        port: int | None = 8000,
        *,
        api_key: str | None = None,
        to_request: Callable[[dict[str, Any]], dict[str, Any]] = openpi_request,
        action_key: str = "actions",
        client: Any = None,
    ):
        self.space = single_action_space(env_or_space)
        self.chunk_size = 1 if len(self.space.shape) == 1 else self.space.shape[0]
        self.dim = self.space.shape[-1]
        self.to_request, self.action_key = to_request, action_key
        if client is None:
            from openpi_client.websocket_client_policy import WebsocketClientPolicy

            with warnings.catch_warnings():  # openpi-client 0.1.2 calls websockets' connect() outside a `with`
                warnings.filterwarnings("ignore", "connect\\(\\) must be used as a context manager", DeprecationWarning)
                client = WebsocketClientPolicy(host, port, api_key=api_key)
        self.client = client
        self.last_server_timing: dict[str, Any] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """What the server sent on connect."""
        return self.client.get_server_metadata()

    def reset(self) -> None:
        """OpenPI's protocol has no reset message; the client's own reset is a no-op hook."""
        self.client.reset()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        n = batch_size(obs)
        singles = [obs] if n is None else split_obs(obs, n)
        out = [self._act_one(o) for o in singles]
        return out[0] if n is None else np.stack(out)

    def _act_one(self, obs: dict[str, Any]) -> np.ndarray:
        reply = self.client.infer(self.to_request(obs))
        if self.action_key not in reply:
            raise RuntimeError(f"the policy server replied without {self.action_key!r}: keys {sorted(reply)}")
        actions = np.asarray(reply[self.action_key], np.float32)
        actions = actions[None] if actions.ndim == 1 else actions
        if actions.ndim != 2 or actions.shape[1] < self.dim or actions.shape[0] < self.chunk_size:
            raise RuntimeError(f"the policy server sent actions of shape {actions.shape}; the env needs at least "
                               f"[{self.chunk_size}, {self.dim}]")  # fmt: skip
        self.last_server_timing = reply.get("server_timing")
        return actions[: self.chunk_size, : self.dim].reshape(self.space.shape).copy()

    def close(self) -> None:
        """Close the websocket (safe to call repeatedly)."""
        ws = getattr(self.client, "_ws", None)
        if ws is not None:
            ws.close()
