"""The action service for robot controllers: OpenPI's websocket protocol over a Cosmos3 world model, with dynamic
batching (`cosmos3-world serve`). See `server.py` for the protocol and `protocol.py` for the request keys."""

from .protocol import RequestError, packb, unpackb
from .server import ActionServer, ServerConfig, run_server, serve_in_thread

__all__ = ["ActionServer", "RequestError", "ServerConfig", "packb", "run_server", "serve_in_thread", "unpackb"]
