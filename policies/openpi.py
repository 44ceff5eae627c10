"""A policy served over OpenPI's websocket protocol, through the real `openpi-client` (`WebsocketClientPolicy`).

openpi-client 0.1.2 pins numpy<2 (its code runs on numpy 2), so `pip install openpi-client` would downgrade
numpy under this project: install it with `pip install --no-deps openpi-client` (its other dependencies,
websockets and msgpack, come with the test extra). Without it, `client="auto"` falls back to
`WebsocketClient` below: the same protocol in a few lines of websockets + msgpack (same wire format).

Protocol (OpenPI's `WebsocketPolicyServer`): on connect the server sends one msgpack frame of metadata;
then every msgpack observation dict gets one msgpack reply with `actions` [H, D] (and `server_timing`);
arrays travel as msgpack-numpy. A text reply is the server's traceback: the client raises RuntimeError.

The observation sent for one env (override with `to_request`): `observation/image` uint8 [H, W, 3]
(several cameras: `observation/<camera>`), `observation/state` float32 (from agent_pos), `prompt` (the
task). A vector env's batch is sent one env at a time (OpenPI's servers serve single observations); the
first chunk_size rows of `actions` are executed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import batch_size, single_action_space, split_obs


def _pack_array(obj: Any) -> Any:
    """msgpack-numpy, as openpi_client.msgpack_numpy: arrays as {__ndarray__, data, dtype, shape}; no object dtypes."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"unsupported dtype for the OpenPI wire format: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_array(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    """Serialise a request/reply dict in OpenPI's wire format."""
    import msgpack

    return msgpack.packb(obj, default=_pack_array)


def unpackb(data: bytes) -> Any:
    """Deserialise OpenPI's wire format."""
    import msgpack

    return msgpack.unpackb(data, object_hook=_unpack_array)


@contextlib.contextmanager
def _quiet_connect():
    """Silence websockets>=16's warning about connect() used outside a `with` block (a long-lived client)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"connect\(\) must be used as a context manager", DeprecationWarning)
        yield


class WebsocketClient:
    """OpenPI's client protocol without openpi-client: connect (waiting for the metadata frame), `infer(obs)`."""

    def __init__(self, host: str = "localhost", port: int | None = None, api_key: str | None = None):
        from websockets.sync.client import connect

        uri = host if host.startswith("ws") else f"ws://{host}"
        uri += f":{port}" if port is not None else ""
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        with _quiet_connect():  # a long-lived connection, closed by close(), not a `with` block
            self._ws = connect(uri, compression=None, max_size=None, additional_headers=headers)
        self._metadata = unpackb(self._ws.recv())

    def get_server_metadata(self) -> dict[str, Any]:
        return self._metadata

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        self._ws.send(packb(obs))
        reply = self._ws.recv()
        if isinstance(reply, str):  # the server's traceback, as openpi-client reports it
            raise RuntimeError(f"Error in inference server:\n{reply}")
        return unpackb(reply)

    def reset(self) -> None:
        """OpenPI's protocol has no reset message."""


def connect_client(host: str, port: int | None, api_key: str | None, client: str = "auto") -> Any:
    """A connected client: openpi-client's `WebsocketClientPolicy` ("openpi"), ours ("builtin"), or the
    former when it is installed ("auto")."""
    if client not in ("auto", "openpi", "builtin"):
        raise ValueError(f"client must be 'auto', 'openpi', 'builtin' or a connected client, got {client!r}")
    if client != "builtin":
        try:
            from openpi_client.websocket_client_policy import WebsocketClientPolicy
        except ImportError:
            if client == "openpi":
                raise ImportError("openpi-client is not installed: pip install --no-deps openpi-client") from None
        else:
            with _quiet_connect():  # openpi-client 0.1.2 calls websockets' connect() outside a `with`
                return WebsocketClientPolicy(host, port, api_key=api_key)
    return WebsocketClient(host, port, api_key)


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

    host/port (or a ws:// URI as host), api_key (sent as `Authorization: Api-Key <key>`). client: "auto"
    (openpi-client's WebsocketClientPolicy when installed, else `WebsocketClient`), "openpi", "builtin", or an
    already connected client object (`infer`, `get_server_metadata`, `reset`). Connecting waits for the
    server's metadata frame.
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
        client: Any = "auto",
    ):
        self.space = single_action_space(env_or_space)
        self.chunk_size = 1 if len(self.space.shape) == 1 else self.space.shape[0]
        self.dim = self.space.shape[-1]
        self.to_request, self.action_key = to_request, action_key
        self.client = connect_client(host, port, api_key, client) if isinstance(client, str) else client
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
