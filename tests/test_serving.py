"""The action service over loopback, with OpenPI's own client (`openpi_client.WebsocketClientPolicy`) as the client:
round trips in both modes, the metadata's example, sessions, every class of bad request, auth, /healthz, 16
concurrent clients answered exactly as one by one, and SIGTERM shutdown of a `cosmos3-world serve` process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings

import msgpack
import numpy as np
import pytest

pytest.importorskip("openpi_client")
pytest.importorskip("websockets")

from openpi_client.websocket_client_policy import WebsocketClientPolicy  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from cosmos3_world.engine.sampler import SamplerConfig  # noqa: E402
from cosmos3_world.engine.world import WorldModel  # noqa: E402
from cosmos3_world.serving import ServerConfig, serve_in_thread  # noqa: E402
from cosmos3_world.serving.sessions import SessionStore  # noqa: E402

FAST = SamplerConfig(num_steps=2, guidance_scale=1.0)
MAX_MESSAGE = 64 * 1024  # small, so oversized requests are cheap to build
# Batched and one-by-one answers: each world draws its noise from its own seed, so they differ at most by float
# rounding of the batched matmuls (measured on CPU: bit-identical). The tolerance the tests and README state:
ACTION_ATOL = 1e-5
FRAME_ATOL = 1  # uint8 levels


@pytest.fixture(scope="module")
def model(tiny_bundle):
    wm = WorldModel.from_pretrained(tiny_bundle, sampler=FAST)
    wm.max_prompt_tokens = 400  # the example's prompt is 139 tokens; a prompt of a few hundred words is too long
    return wm


@pytest.fixture(scope="module")
def server(model):
    config = ServerConfig(host="127.0.0.1", port=0, max_wait_ms=30.0, max_message_bytes=MAX_MESSAGE)
    with serve_in_thread(model, config) as s:
        yield s


def connect(port: int, api_key: str | None = None) -> WebsocketClientPolicy:
    with warnings.catch_warnings():  # openpi-client 0.1.2 calls websockets' connect() outside a `with`
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return WebsocketClientPolicy("127.0.0.1", port, api_key=api_key)


def direct(model, obs: dict, steps: int = 1) -> list:
    """What the engine itself answers for `obs` (policy or world mode), chunk after chunk."""
    world = model.reset(
        np.array(obs["observation/image"]), obs.get("prompt", ""), "pusht", seed=obs.get("seed", 0), chunk_size=4
    )
    if obs.get("mode") == "world":
        return [world.step(obs["actions"]).frames for _ in range(steps)]
    return [world.predict().actions for _ in range(steps)]


def request(i: int, world: bool = False) -> dict:
    """A distinct request: its own image, prompt and seed (and actions in world mode)."""
    rng = np.random.default_rng(i)
    obs = {"observation/image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
           "observation/state": rng.uniform(-1, 1, 2).astype(np.float32), "prompt": f"push the block {i} times",
           "seed": 1000 + i}  # fmt: skip
    if world:
        obs.update(mode="world", actions=rng.uniform(-1, 1, (4, 2)).astype(np.float32))
    return obs


def test_round_trip_in_both_modes_and_the_metadata_example(server, model):
    client = connect(server.port)
    meta = client.get_server_metadata()
    assert meta["embodiment"] == "pusht" and meta["chunk_size"] == 4 and set(meta["modes"]) == {"policy", "world"}
    assert meta["observation"]["observation/image"] == {**meta["observation"]["observation/image"],
                                                        "shape": [64, 64, 3], "dtype": "uint8"}  # fmt: skip
    assert meta["action"]["shape"] == [4, 2] and "units" in meta["action"] and meta["frames"]["shape"] == [4, 64, 64, 3]
    example = meta["example_observation"]
    reply = client.infer(example)  # accepted exactly as sent
    assert reply["actions"].shape == (4, 2) and reply["actions"].dtype == np.float32
    assert set(reply["server_timing"]) == {"infer_ms", "queue_ms", "batch_size", "total_ms"}
    np.testing.assert_allclose(reply["actions"], direct(model, example)[0], atol=ACTION_ATOL)
    world = {**example, "mode": "world", "actions": np.full((4, 2), 0.5, np.float32)}
    frames = client.infer(world)["frames"]
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - direct(model, world)[0]).max() <= FRAME_ATOL
    # The same request with the same seed: the same answer; another seed: another one.
    np.testing.assert_array_equal(client.infer(example)["actions"], reply["actions"])
    assert not np.allclose(client.infer({**example, "seed": 7})["actions"], reply["actions"])


def test_the_openpi_client_policy_drives_the_env_through_the_server(server, tiny_bundle):
    """`cosmos3-world eval --policy openpi:HOST:PORT` against `cosmos3-world serve`: the keys match."""
    from cosmos3_world.envs import Cosmos3WorldEnv
    from cosmos3_world.policies import OpenPIClientPolicy

    env = Cosmos3WorldEnv(model=tiny_bundle, num_steps=2, guidance_scale=1.0)
    policy = OpenPIClientPolicy(env, "127.0.0.1", server.port)
    obs, _ = env.reset(seed=0)
    action = policy.act({**obs, "task": env.unwrapped.task_description})
    assert action.shape == env.action_space.shape and policy.last_server_timing["batch_size"] == 1
    env.step(action)
    policy.close()
    env.close()


def test_sessions_keep_a_world_between_calls(server, model):
    client = connect(server.port)
    example = client.get_server_metadata()["example_observation"]
    reset = client.infer({**example, "endpoint": "reset", "seed": 3})
    sid = reset["session_id"]
    assert reset["frame"].shape == (64, 64, 3) and reset["chunk_size"] == 4
    got = [client.infer({"session_id": sid})["actions"] for _ in range(2)]
    want = direct(model, {**example, "seed": 3}, steps=2)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ACTION_ATOL)
    assert client.infer({"session_id": sid, "mode": "world", "actions": np.zeros((4, 2))})["frames"].shape[0] == 4
    named = client.infer({**example, "endpoint": "reset", "session_id": "robot-7"})
    assert named["session_id"] == "robot-7" and "actions" in client.infer({"session_id": "robot-7"})
    with pytest.raises(RuntimeError, match="unknown or expired session"):
        client.infer({"session_id": "nobody"})
    with pytest.raises(RuntimeError, match=r"actions must have shape \[4, 2\]"):
        client.infer({"session_id": sid, "mode": "world", "actions": np.zeros((4, 3))})
    with pytest.raises(RuntimeError, match="imagines its own frames"):
        client.infer({**example, "session_id": sid})


def test_sessions_are_bounded_and_expire():
    now = [0.0]
    store = SessionStore(max_sessions=2, ttl_s=10.0, clock=lambda: now[0])
    store.put("a", 1)
    store.put("b", 2)
    store.get("a")  # a is now the most recently used
    store.put("c", 3)  # full: b, the least recently used, goes
    assert len(store) == 2 and store.get("a") == 1 and store.get("c") == 3
    with pytest.raises(ValueError, match="unknown or expired"):
        store.get("b")
    now[0] = 11.0
    assert len(store) == 0


def test_a_session_joins_each_batch_once_and_a_failed_batch_is_retried_one_by_one(model):
    import asyncio
    from types import SimpleNamespace

    from cosmos3_world.serving.batcher import Batcher
    from cosmos3_world.serving.runner import ModelRunner

    seen: list[list[str]] = []

    class Recorder:
        def run(self, requests):
            seen.append([r.session_id for r in requests])
            return [{"ok": r.session_id} for r in requests], 0.0

    batcher = Batcher(Recorder(), max_batch=8, max_wait_s=0.2)

    async def burst():
        reqs = [SimpleNamespace(session_id=s) for s in ("a", "a", "b", None)]
        return await asyncio.gather(*(batcher.submit(r) for r in reqs))

    answers = asyncio.run(burst())
    batcher.close()
    assert [a.result["ok"] for a in answers] == ["a", "a", "b", None]
    assert seen == [["a", "b", None], ["a"]]  # the second "a" waited for the next batch

    runner = ModelRunner(model, SessionStore(), chunk_size=4)
    requests = [SimpleNamespace(mode="policy", session_id=None) for _ in range(3)]

    def forward(items):  # fails whenever item 1 is in the batch
        if any(i == 1 for i, _ in items):
            raise RuntimeError("boom")
        return [SimpleNamespace(actions=np.full((4, 2), i, np.float32)) for i, _ in items]

    results: list = [None] * 3
    runner._batched([(i, None) for i in range(3)], forward, results, requests)
    assert (
        isinstance(results[1], RuntimeError) and results[0]["actions"][0, 0] == 0 and results[2]["actions"][0, 0] == 2
    )


def _raw(client: WebsocketClientPolicy, frame: bytes | str) -> bytes | str:
    """Send a frame the client's packer could not make; the server's reply frame."""
    client._ws.send(frame)
    return client._ws.recv()


def _ndarray(dtype: str, shape: list[int], data: bytes) -> dict:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def test_every_bad_request_gets_its_own_error_and_the_server_goes_on(server, model):
    client = connect(server.port)
    example = client.get_server_metadata()["example_observation"]
    image = example["observation/image"]
    bad = {
        "missing 'observation/image'": {"prompt": "x"},
        r"must be uint8 \[64, 64, 3\], got uint8 \[32, 32, 3\]": {**example, "observation/image": image[:32, :32]},
        r"must be uint8 \[64, 64, 3\], got float32": {**example, "observation/image": image.astype(np.float32)},
        "must be a numpy array": {**example, "observation/image": image.tolist()},
        r"observation/state must have shape \[2\]": {**example, "observation/state": np.zeros(3, np.float32)},
        "observation/state must be a float array": {**example, "observation/state": np.array([True, False])},
        "NaN or inf": {**example, "mode": "world", "actions": np.full((4, 2), np.nan, np.float32)},
        r"actions must have shape \[4, 2\]": {**example, "mode": "world", "actions": np.zeros((3, 2), np.float32)},
        "world mode needs 'actions'": {**example, "mode": "world"},
        "sent in world mode only": {**example, "actions": np.zeros((4, 2), np.float32)},
        "unknown embodiment 'rocket'": {**example, "embodiment": "rocket"},
        "unknown mode 'dream'": {**example, "mode": "dream"},
        "unknown endpoint 'launch'": {**example, "endpoint": "launch"},
        "prompt must be a str": {**example, "prompt": 3},
        "characters long, more than the limit": {**example, "prompt": "x" * 5000},
        "tokens long, more than the maximum": {**example, "prompt": "push " * 400},  # found by the model
        "seed must be an int": {**example, "seed": -1},
        "session_id must be a str": {**example, "session_id": 5},
    }
    for message, obs in bad.items():
        with pytest.raises(RuntimeError, match=message):
            client.infer(obs)
    raw = {
        "malformed msgpack": b"\xc1\x00garbage",
        "must be a msgpack map": msgpack.packb([1, 2, 3]),
        "text frame": "hello",
        "dtype object are not accepted": msgpack.packb({"observation/image": _ndarray("|O", [1], b"\0" * 8)}),
        "does not match its shape": msgpack.packb({"observation/image": _ndarray("|u1", [64, 64, 3], b"\0" * 10)}),
        "unknown array dtype": msgpack.packb({"observation/image": _ndarray("nonsense", [1], b"\0")}),
        "exceeds the limit": msgpack.packb({"observation/image": _ndarray("|u1", [MAX_MESSAGE], b"\0" * MAX_MESSAGE)}),
    }
    for message, frame in raw.items():
        reply = _raw(client, frame)
        assert isinstance(reply, str) and re.search(message, reply), (message, reply)
    # The same connection still gets exact answers.
    np.testing.assert_allclose(client.infer(example)["actions"], direct(model, example)[0], atol=ACTION_ATOL)
    # Over twice the limit the socket itself refuses the frame (1009); only that connection closes.
    huge = connect(server.port)
    huge._ws.send(b"\0" * (2 * MAX_MESSAGE + 1))
    with pytest.raises(ConnectionClosed) as closed:
        huge._ws.recv()
    assert closed.value.rcvd.code == 1009
    assert client.infer(example)["actions"].shape == (4, 2)
    assert server.stats["errors"] >= len(bad) + len(raw)


def test_auth_healthz_and_the_connection_limit(model):
    config = ServerConfig(host="127.0.0.1", port=0, api_key="s3cret")
    with serve_in_thread(model, config, warmup=False) as s:
        health = urllib.request.urlopen(f"http://127.0.0.1:{s.port}/healthz", timeout=10)
        assert health.status == 200 and health.read() == b"OK\n"
        for key, status in ((None, 401), ("wrong", 403)):
            with pytest.raises(InvalidStatus) as refused:
                connect(s.port, api_key=key)
            assert refused.value.response.status_code == status
        client = connect(s.port, api_key="s3cret")
        assert client.infer(client.get_server_metadata()["example_observation"])["actions"].shape == (4, 2)
    with serve_in_thread(model, ServerConfig(host="127.0.0.1", port=0, max_connections=1), warmup=False) as s:
        first = connect(s.port)
        with pytest.raises(InvalidStatus) as refused:
            connect(s.port)  # connections are bounded too
        assert refused.value.response.status_code == 503
        first._ws.close()


def test_16_concurrent_clients_get_exactly_their_own_answers(server, model):
    n = 16
    requests = [request(i, world=i % 4 == 3) for i in range(n)]  # 12 policy and 4 world requests, all distinct
    bad = {**request(99), "prompt": "push " * 400}  # fails in the worker, in the same batch window as the others
    clients = [connect(server.port) for _ in range(n + 1)]
    replies: list = [None] * (n + 1)
    barrier = threading.Barrier(n + 1)

    def call(i: int) -> None:
        barrier.wait()
        try:
            replies[i] = clients[i].infer(requests[i] if i < n else bad)
        except RuntimeError as e:
            replies[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(replies[n], RuntimeError) and "tokens long" in str(replies[n])
    assert max(r["server_timing"]["batch_size"] for r in replies[:n]) > 1  # they were batched
    one_by_one = connect(server.port)
    for i in range(n):
        alone = one_by_one.infer(requests[i])
        assert alone["server_timing"]["batch_size"] == 1
        if "frames" in alone:
            assert np.abs(replies[i]["frames"].astype(int) - alone["frames"]).max() <= FRAME_ATOL
        else:
            np.testing.assert_allclose(replies[i]["actions"], alone["actions"], atol=ACTION_ATOL)
    actions = [r["actions"] for r in replies[:n] if "actions" in r]
    assert len({a.tobytes() for a in actions}) == len(actions)  # each client got its own, not a neighbour's


def test_sigterm_answers_in_flight_requests_and_refuses_new_ones(tiny_bundle):
    cmd = [sys.executable, "-m", "cosmos3_world.cli", "serve", "--model", str(tiny_bundle), "--host", "127.0.0.1",
           "--port", "0", "--steps", "2", "--guidance", "1", "--max-wait-ms", "1500"]  # fmt: skip
    env = {**os.environ, "COSMOS3_WORLD_API_KEY": "k"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = None
        for line in proc.stdout:
            found = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None, proc.stderr.read()
        busy, idle = connect(port, "k"), connect(port, "k")
        example = busy.get_server_metadata()["example_observation"]
        answer: dict = {}
        flight = threading.Thread(target=lambda: answer.update(busy.infer(example)))
        flight.start()
        time.sleep(0.5)  # the request waits in its 1.5 s batch window: in flight
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises((RuntimeError, ConnectionClosed), match="shutting down|1001"):
            idle.infer(example)  # a new request during the drain is refused
        with pytest.raises((ConnectionError, InvalidStatus, OSError)):
            connect(port, "k")  # so is a new connection
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        flight.join(30)
        assert answer["actions"].shape == (4, 2)  # the request in flight was answered
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
