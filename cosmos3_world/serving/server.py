"""The action service: a websocket server speaking OpenPI's protocol (as openpi's `WebsocketPolicyServer`).

On connect the server sends one msgpack frame of metadata (what to send, what comes back, `example_observation`);
then each binary msgpack observation gets one msgpack reply: `actions` [chunk, D] in policy mode, `frames`
[chunk, H, W, 3] in world mode, `session_id` in a session, and `server_timing` (infer_ms, queue_ms, batch_size,
total_ms). A bad request gets a text frame with the reason (OpenPI's client raises RuntimeError with it) and the
connection stays open; no request can stop the server or fail another one. `GET /healthz` answers 200 (503 while
shutting down). With an API key, the handshake needs `Authorization: Api-Key <key>` (401 without, 403 wrong).
Shutdown (SIGTERM/SIGINT, or `shutdown()`): stop listening, answer the requests in flight, refuse new ones, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response

from ..engine.world import WorldModel
from .batcher import Batcher
from .protocol import (
    ENDPOINTS,
    MAX_SESSION_ID_CHARS,
    MODES,
    STATE_KEY,
    Request,
    RequestError,
    RequestParser,
    camera_key,
    packb,
    state_dim,
    unpackb,
)
from .runner import ModelRunner
from .sessions import SessionStore

log = logging.getLogger(__name__)

FALLBACK_EMBODIMENT = "pusht"  # the embedded world's, as the env's default (envs.world_env.DEFAULT_EMBODIMENT)
FALLBACK_CHUNK_SIZE = 4  # as the env's default
EXAMPLE_PROMPT = "push the T-shaped block onto the target"


@dataclass
class ServerConfig:
    """Where and how the service listens, batches and bounds its clients."""

    host: str = "0.0.0.0"
    port: int = 8000  # 0: any free port (see ActionServer.port)
    api_key: str | None = None  # required as `Authorization: Api-Key <key>` when set
    embodiment: str | None = None  # default embodiment (unset: the model's, else pusht)
    chunk_size: int | None = None  # actions per request (unset: the model's, else 4)
    image_size: tuple[int, int] = (64, 64)  # (H, W) of observation images (the embedded world's)
    max_batch: int = 16  # requests per forward (1: serial serving)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for batch mates
    max_message_bytes: int = 8 * 2**20  # larger requests get an error; over twice this the socket closes (1009)
    max_prompt_chars: int = 4000  # cheap guard before tokenizing; the model's token limit applies too
    max_connections: int = 256  # open connections at once; more are refused at the handshake (503)
    max_sessions: int = 256  # worlds kept between calls (least recently used dropped first)
    session_ttl_s: float = 600.0  # an idle session is forgotten after this
    shutdown_timeout_s: float = 30.0  # how long shutdown waits for requests in flight

    def __post_init__(self) -> None:
        h, w = self.image_size
        checks = [
            (1 <= self.max_batch, f"max_batch must be >= 1, got {self.max_batch}"),
            (1 <= self.max_connections, f"max_connections must be >= 1, got {self.max_connections}"),
            (0 <= self.max_wait_ms, f"max_wait_ms must be >= 0, got {self.max_wait_ms}"),
            (1024 <= self.max_message_bytes, f"max_message_bytes must be >= 1024, got {self.max_message_bytes}"),
            (h > 0 and w > 0, f"image_size must be positive, got {self.image_size}"),
            (0 <= self.port < 65536, f"port must be in [0, 65535], got {self.port}"),
            (self.api_key is None or bool(self.api_key), "api_key must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class ActionServer:
    """Serves one WorldModel to many controllers (see the module doc). `start()` it inside an event loop."""

    def __init__(self, model: WorldModel, config: ServerConfig | None = None, *, warmup: bool = True):
        self.model, self.config = model, config or ServerConfig()
        cfg = model.generator.config
        if not cfg.action_gen:
            raise ValueError("this model has no action head (action_gen=false): it cannot serve actions")
        self.embodiment = model.embodiments.get(
            self.config.embodiment or model.defaults.get("embodiment") or FALLBACK_EMBODIMENT
        )
        self.chunk_size = int(self.config.chunk_size or model.defaults.get("chunk_size") or FALLBACK_CHUNK_SIZE)
        if self.chunk_size < 1 or self.chunk_size % model.codec.temporal_factor:
            raise ValueError(f"chunk_size must be a positive multiple of the codec's temporal factor "
                             f"{model.codec.temporal_factor}, got {self.chunk_size}")  # fmt: skip
        allowed = [e.name for e in model.embodiments if e.action_dim <= cfg.action_dim
                   and e.domain_id < cfg.num_embodiment_domains]  # fmt: skip
        if self.embodiment.name not in allowed:
            raise ValueError(f"embodiment {self.embodiment.name!r} does not fit the model; it serves {allowed}")
        self.parser = RequestParser(model.embodiments, allowed, self.embodiment.name, self.chunk_size,
                                    (*self.config.image_size, 3), self.config.max_prompt_chars)  # fmt: skip
        self.sessions = SessionStore(self.config.max_sessions, self.config.session_ttl_s)
        self.runner = ModelRunner(model, self.sessions, self.chunk_size)
        self.example_observation = self._example()
        frame_shape = self._warmup() if warmup else (*self.config.image_size, 3)
        self.metadata = self._metadata(allowed, frame_shape)
        self._metadata_frame = packb(self.metadata)
        self.batcher: Batcher | None = None
        self._server: Server | None = None
        self._draining = False
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self.stats = {"requests": 0, "errors": 0}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen (on `config.host`/`port`; `port` tells the port actually bound) and start the batch worker."""
        self.batcher = Batcher(self.runner, self.config.max_batch, self.config.max_wait_ms / 1000)
        self._idle = asyncio.Event()
        self._idle.set()
        self._server = await serve(
            self._handler, self.config.host, self.config.port, process_request=self._process_request,
            compression=None, max_size=2 * self.config.max_message_bytes, max_queue=4,
        )  # fmt: skip
        log.info("serving on ws://%s:%d (embodiment %s, chunk %d, max batch %d)", self.config.host, self.port,
                 self.embodiment.name, self.chunk_size, self.config.max_batch)  # fmt: skip

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._server is not None, "start() the server first"
        return self._server.sockets[0].getsockname()[1]

    async def shutdown(self) -> None:
        """Stop listening, answer every request in flight (up to shutdown_timeout_s), refuse new ones, close."""
        if self._server is None or self._draining:
            return
        self._draining = True
        self._server.server.close()  # no new connections; open ones carry on for now
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.shutdown_timeout_s)
        except asyncio.TimeoutError:
            log.warning("shutdown: %d requests still in flight after %.0f s", self._inflight,
                        self.config.shutdown_timeout_s)  # fmt: skip
        self._server.close(close_connections=True, reason="server shutting down")
        await self._server.wait_closed()
        await asyncio.to_thread(self.batcher.close, 10.0)
        log.info("server closed after %d requests (%d errors)", self.stats["requests"], self.stats["errors"])

    # ------------------------------------------------------------------ handshake and connections
    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> Response | None:
        """`GET /healthz`, and the API key check: refused handshakes never reach the handler."""
        if request.path.split("?")[0] == "/healthz":
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE if self._draining else HTTPStatus.OK,
                                      "shutting down\n" if self._draining else "OK\n")  # fmt: skip
        if self._draining:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down\n")
        if len(self._server.connections) >= self.config.max_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        key = self.config.api_key
        if key is None:
            return None
        header = request.headers.get("Authorization")
        if header is None:
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "missing header Authorization: Api-Key <key>\n")
            response.headers["WWW-Authenticate"] = "Api-Key"
            return response
        scheme, _, given = header.partition(" ")
        if scheme != "Api-Key" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            return connection.respond(HTTPStatus.FORBIDDEN, "invalid API key\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        """One controller: the metadata frame, then one reply per request, in order."""
        try:
            await ws.send(self._metadata_frame)
            async for message in ws:
                if self._draining:
                    await ws.send("the server is shutting down: request refused")
                    await ws.close(1001, "server shutting down")
                    return
                self._inflight += 1
                self._idle.clear()
                try:
                    await ws.send(await self._answer(message))
                finally:
                    self._inflight -= 1
                    if self._inflight == 0:
                        self._idle.set()
        except ConnectionClosed:
            pass

    async def _answer(self, message: bytes | str) -> bytes | str:
        """The reply frame for one request: msgpack, or a text frame with the error."""
        received = time.perf_counter()
        self.stats["requests"] += 1
        try:
            if isinstance(message, str):
                raise RequestError("requests are binary msgpack frames, got a text frame")
            if len(message) > self.config.max_message_bytes:
                raise RequestError(f"request of {len(message)} bytes exceeds the limit of "
                                   f"{self.config.max_message_bytes} bytes")  # fmt: skip
            request = self.parser.parse(unpackb(message))
            answer = await self.batcher.submit(request)
            if isinstance(answer.result, BaseException):
                raise answer.result
            reply = dict(answer.result)
            reply["server_timing"] = {
                "infer_ms": 1000 * answer.infer_s, "queue_ms": 1000 * answer.queue_s, "batch_size": answer.batch_size,
                "total_ms": 1000 * (time.perf_counter() - received),
            }  # fmt: skip
            return packb(reply)
        except RequestError as e:
            self.stats["errors"] += 1
            log.info("bad request: %s", e)
            return f"bad request: {e}"
        except Exception as e:
            self.stats["errors"] += 1
            log.exception("request failed")
            return f"internal server error: {type(e).__name__}: {e}"

    # ------------------------------------------------------------------ metadata
    def _warmup(self) -> tuple[int, ...]:
        """Run the example in both modes (it must pass end to end); the frames' shape as the model returns them."""
        shape: tuple[int, ...] = ()
        for world in (False, True):
            result = self.runner.run([self.parser.parse(self._example(world=world))])[0][0]
            if isinstance(result, BaseException):
                raise RuntimeError(f"the server's own example observation fails: {result}") from result
            shape = tuple(result["frames"].shape[1:]) if world else shape
        return shape

    def _example(self, world: bool = False) -> dict[str, Any]:
        """An observation the server accepts as it is (policy mode; world mode with zero actions)."""
        h, w = self.config.image_size
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 128)], -1)
        obs: dict[str, Any] = {
            camera_key(self.embodiment): image.astype(np.uint8),
            STATE_KEY: np.zeros(state_dim(self.embodiment), np.float32),
            "prompt": EXAMPLE_PROMPT,
            "seed": 0,
        }
        if world:
            obs.update(mode="world", actions=np.zeros((self.chunk_size, self.embodiment.action_dim), np.float32))
        return obs

    def _metadata(self, allowed: list[str], frame_shape: tuple[int, ...]) -> dict[str, Any]:
        from .. import __version__

        emb, n, d = self.embodiment, self.chunk_size, self.embodiment.action_dim
        low = list(emb.action_low) if emb.normalized else [-1.0] * d
        high = list(emb.action_high) if emb.normalized else [1.0] * d
        units = (f"{emb.description} Raw units; low/high are the quantiles the model maps to [-1, 1]." if emb.normalized
                 else f"{emb.description} The model's action space, nominally [-1, 1].")  # fmt: skip
        image = {"shape": [*self.config.image_size, 3], "dtype": "uint8"}
        embodiments = {}
        for name in allowed:
            e = self.model.embodiments.get(name)
            embodiments[name] = {"action_dim": e.action_dim, "camera_key": camera_key(e), "state_dim": state_dim(e),
                                 "control_hz": e.control_hz, "description": e.description}  # fmt: skip
        limits = self.config
        return {
            "server": "cosmos3-world", "version": __version__, "protocol": "openpi-websocket (msgpack-numpy)",
            "model": (self.model.source or {}).get("path"),
            "embodiment": emb.name, "chunk_size": n, "action_horizon": n, "control_hz": emb.control_hz,
            "observation": {
                camera_key(emb): {**image, "required": "to start a world (no session, or endpoint reset)",
                                  "doc": "the camera the model sees, RGB"},
                STATE_KEY: {"shape": [state_dim(emb)], "dtype": "float32", "required": False,
                            "doc": "robot state in action units; checked, not used (the model acts from pixels)"},
                "prompt": {"dtype": "str", "required": False, "doc": "the instruction",
                           "max_chars": limits.max_prompt_chars, "max_tokens": self.model.max_prompt_tokens},
                "seed": {"dtype": "int", "required": False, "doc": "the world's noise: same request and seed, "
                         "same answer; default 0"},
                "mode": {"dtype": "str", "choices": list(MODES), "required": False, "doc": "default policy"},
                "actions": {"shape": [n, d], "dtype": "float32", "required": "in world mode",
                            "doc": "the actions to imagine the frames of"},
                "embodiment": {"dtype": "str", "choices": allowed, "required": False, "doc": f"default {emb.name}"},
                "endpoint": {"dtype": "str", "choices": list(ENDPOINTS), "required": False,
                             "doc": "reset: start the session's world from the image (as RoboArena)"},
                "session_id": {"dtype": "str", "max_chars": MAX_SESSION_ID_CHARS, "required": False,
                               "doc": "keep a world between calls; reset without one returns a new id"},
            },  # fmt: skip
            "action": {"shape": [n, d], "dtype": "float32", "units": units, "low": low, "high": high},
            "frames": {"shape": [n, *frame_shape], "dtype": "uint8"},
            "modes": {"policy": "observation -> actions [chunk, D] (the model's own policy)",
                      "world": "observation + actions -> frames [chunk, H, W, 3] (forward dynamics)"},
            "replies": {"policy": ["actions", "server_timing"], "world": ["frames", "server_timing"],
                        "reset": ["session_id", "frame", "embodiment", "chunk_size", "server_timing"]},
            "embodiments": embodiments,
            "example_observation": self.example_observation,
            "limits": {"max_message_bytes": limits.max_message_bytes, "max_batch": limits.max_batch,
                       "max_connections": limits.max_connections,
                       "max_wait_ms": limits.max_wait_ms, "max_sessions": limits.max_sessions,
                       "session_ttl_s": limits.session_ttl_s},
            "auth": "Authorization: Api-Key <key>" if limits.api_key else None,
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------- running
def run_server(model: WorldModel, config: ServerConfig | None = None, *, ready: Any = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (blocking). `ready(server)` is called once listening."""

    async def main() -> None:
        server = ActionServer(model, config)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(server)
        await stop.wait()
        log.info("signal received: shutting down")
        await server.shutdown()

    asyncio.run(main())


@contextlib.contextmanager
def serve_in_thread(model: WorldModel, config: ServerConfig | None = None, **kwargs: Any) -> Iterator[ActionServer]:
    """An ActionServer running on its own event loop in a background thread (tests, benches, notebooks);
    shut down gracefully on exit. kwargs go to ActionServer."""
    server = ActionServer(model, config, **kwargs)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as e:  # e.g. the port is taken
            failure.append(e)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="cosmos3-server", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(server.config.shutdown_timeout_s + 30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


__all__ = ["ActionServer", "Request", "ServerConfig", "run_server", "serve_in_thread"]
