"""Policies: each drives the single env and the vector env (and the push simulator where it acts from pixels)."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import pytest

import cosmos3_world  # noqa: F401  (registers the gym ids)
from cosmos3_world.envs import Cosmos3WorldEnv
from cosmos3_world.policies import (
    LeRobotPolicy,
    OpenPIClientPolicy,
    Policy,
    RandomPolicy,
    ReplayPolicy,
    ScriptedPolicy,
    WorldModelPolicy,
)
from cosmos3_world.sim import PushSimEnv, graded_policies

FAST = dict(num_steps=2, guidance_scale=1.0)


@pytest.fixture(scope="module")
def envs(tiny_bundle):
    """A single env and a vector env of 2 on the tiny model (Push-T starts from the simulator)."""
    single = Cosmos3WorldEnv(model=tiny_bundle, **FAST)
    vector = gym.make_vec("Cosmos3World-v0", num_envs=2, model=tiny_bundle, **FAST)
    yield single, vector
    single.close()
    vector.close()


def drive(env, policy: Policy, steps: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Run `policy` on `env` for a few steps with the task in the observation, as LeRobot's loop adds it."""
    vector = hasattr(env, "num_envs")
    policy.reset()
    obs, _ = env.reset(seed=seed)
    actions = []
    for _ in range(steps):
        obs["task"] = list(env.call("task_description")) if vector else env.unwrapped.task_description
        action = policy.act(obs)
        assert env.action_space.contains(np.asarray(action, np.float32)), f"{type(policy).__name__}: {action}"
        actions.append(action)
        obs, *_ = env.step(action)
    return actions


def test_random_policy_is_seeded_and_within_bounds(envs):
    single, vector = envs
    a = drive(single, RandomPolicy(single, seed=1))
    b = drive(single, RandomPolicy(single, seed=1))
    np.testing.assert_array_equal(a, b)
    assert drive(vector, RandomPolicy(vector, seed=1))[0].shape == (2, 4, 2)
    assert isinstance(RandomPolicy(single), Policy)


def test_replay_policy(envs, tmp_path):
    single, vector = envs
    recording = np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2)  # [T, dim]: 2 chunks of 4
    np.testing.assert_array_equal(drive(single, ReplayPolicy(recording, single))[1], recording[4:])
    np.save(tmp_path / "a.npy", recording)
    np.savez(tmp_path / "b.npz", actions=recording.reshape(2, 4, 2), other=np.zeros(3))
    assert drive(vector, ReplayPolicy(tmp_path / "a.npy", vector))[0].shape == (2, 4, 2)
    policy = ReplayPolicy(tmp_path / "b.npz", single)
    drive(single, policy)
    with pytest.raises(IndexError, match="on_end"):
        policy.act({"pixels": np.zeros((64, 64, 3), np.uint8)})
    looped = ReplayPolicy(recording, single, on_end="loop")
    obs = {"pixels": np.zeros((64, 64, 3), np.uint8)}
    np.testing.assert_array_equal([looped.act(obs) for _ in range(3)][2], recording[:4])
    with pytest.raises(ValueError, match="chunks"):
        ReplayPolicy(np.zeros((5, 2)), single)


def test_scripted_policies(envs):
    single, vector = envs
    drive(single, ScriptedPolicy(lambda obs: np.tile(obs["agent_pos"], (4, 1))))
    actions = drive(vector, ScriptedPolicy(lambda obs: np.tile(obs["agent_pos"], (4, 1))))
    assert actions[0].shape == (2, 4, 2)
    # The simulator's graded scripted policies follow the protocol: they drive both envs from pixels unchanged.
    for env in envs:
        drive(env, graded_policies(chunk_size=4)["expert"])


def test_world_model_policy_in_the_env_worlds(envs):
    single, vector = envs
    actions = drive(single, WorldModelPolicy(single))
    assert actions[0].shape == (4, 2)
    assert drive(vector, WorldModelPolicy(vector))[0].shape == (2, 4, 2)
    with pytest.raises(ValueError, match="predict_actions"):
        WorldModelPolicy(PushSimEnv())


def test_world_model_policy_from_observations(envs):
    single, vector = envs
    policy = WorldModelPolicy(model=single.model, action_space=single.action_space)
    assert drive(single, policy)[0].shape == (4, 2)
    assert drive(vector, policy)[0].shape == (2, 4, 2)
    drive(PushSimEnv(chunk_size=4), policy)  # it acts from pixels alone: it drives the push simulator too


class ToyLeRobotPolicy:
    """LeRobot's policy interface without lerobot: select_action / predict_action_chunk / reset (torch in, out)."""

    def __init__(self, horizon: int = 8):
        import torch

        self.torch, self.horizon, self.resets, self.batches = torch, horizon, 0, []

    def reset(self) -> None:
        self.resets += 1

    def predict_action_chunk(self, batch):
        self.batches.append(batch)
        state = batch["observation.state"]  # [B, 2]
        return self.torch.tanh(state)[:, None].repeat(1, self.horizon, 1)

    def select_action(self, batch):
        return self.predict_action_chunk(batch)[:, 0]


def test_lerobot_adapter(envs):
    single, vector = envs
    toy = ToyLeRobotPolicy()
    drive(single, LeRobotPolicy(toy, single))
    batch = toy.batches[-1]
    assert batch["observation.image"].shape == (1, 3, 64, 64) and batch["observation.state"].shape == (1, 2)
    assert batch["task"] == [single.task_description] and toy.resets == 1
    drive(vector, LeRobotPolicy(toy, vector))
    assert toy.batches[-1]["observation.image"].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="predicts 2 actions"):
        LeRobotPolicy(ToyLeRobotPolicy(horizon=2), single).act(single.reset(seed=0)[0])
    from cosmos3_world.policies import lerobot_batch

    cams = lerobot_batch({"pixels": {"top": np.zeros((2, 8, 8, 3), np.uint8)}, "task": ["a", "b"]})
    assert set(cams) == {"observation.images.top", "task"} and cams["task"] == ["a", "b"]


# ---------------------------------------------------------------------------------------------- OpenPI
@contextmanager
def openpi_server(horizon: int = 10, dim: int = 2, fail_on: str | None = None):
    """A tiny policy server on loopback speaking OpenPI's websocket protocol (as openpi's WebsocketPolicyServer):
    a msgpack metadata frame on connect, one msgpack reply (actions [H, D], server_timing) per observation, a
    text traceback and close 1011 on error, GET /healthz -> 200."""
    from websockets.sync.server import serve

    try:  # OpenPI's own wire format when openpi-client is installed; ours (the same bytes) otherwise
        from openpi_client import msgpack_numpy
    except ImportError:
        from cosmos3_world.policies import openpi as msgpack_numpy

    seen: dict = {"requests": [], "headers": []}

    def health(connection, request):
        if request.path == "/healthz":
            return connection.respond(200, "OK\n")
        seen["headers"].append(request.headers.get("Authorization"))
        return None

    def handler(ws):
        ws.send(msgpack_numpy.packb({"policy": "toy", "action_horizon": horizon}))
        for message in ws:
            obs = msgpack_numpy.unpackb(message)
            seen["requests"].append(obs)
            if fail_on is not None and obs.get("prompt") == fail_on:
                ws.send("Traceback (most recent call last):\n  ValueError: toy failure")
                ws.close(1011, "Internal server error")
                return
            state = np.asarray(obs["observation/state"], np.float32)
            actions = np.tile(np.clip(state, -1, 1), (horizon, 1))[:, :dim]
            ws.send(msgpack_numpy.packb({"actions": actions, "server_timing": {"infer_ms": 1.0}}))

    with serve(handler, "127.0.0.1", 0, process_request=health, compression=None, max_size=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1], seen
        finally:
            server.shutdown()
            thread.join(5)


def test_our_wire_format_is_openpis():
    msgpack_numpy = pytest.importorskip("openpi_client.msgpack_numpy")
    from cosmos3_world.policies.openpi import packb, unpackb

    obs = {"observation/image": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "prompt": "x", "n": np.float32(2)}
    assert packb(obs) == msgpack_numpy.packb(obs)
    back = unpackb(msgpack_numpy.packb(obs))
    np.testing.assert_array_equal(back["observation/image"], obs["observation/image"])
    with pytest.raises(ValueError, match="dtype"):
        packb({"bad": np.array([object()])})


@pytest.mark.parametrize("client", ["openpi", "builtin"])
def test_openpi_client_policy(envs, client):
    if client == "openpi":
        pytest.importorskip("openpi_client")
    import urllib.request

    single, vector = envs
    with openpi_server() as (port, seen):
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        policy = OpenPIClientPolicy(single, "127.0.0.1", port, api_key="secret", client=client)
        if client == "openpi":
            from openpi_client.websocket_client_policy import WebsocketClientPolicy

            assert isinstance(policy.client, WebsocketClientPolicy)
        assert policy.metadata == {"policy": "toy", "action_horizon": 10}
        assert seen["headers"][-1] == "Api-Key secret"
        actions = drive(single, policy)
        request = seen["requests"][-1]
        assert request["observation/image"].shape == (64, 64, 3) and request["observation/image"].dtype == np.uint8
        assert request["prompt"] == single.task_description and request["observation/state"].dtype == np.float32
        assert actions[0].shape == (4, 2) and policy.last_server_timing == {"infer_ms": 1.0}
        vector_policy = OpenPIClientPolicy(vector, f"ws://127.0.0.1:{port}", None, client=client)
        assert drive(vector, vector_policy)[0].shape == (2, 4, 2)
        policy.close()
    with openpi_server(fail_on="boom") as (port, _):
        policy = OpenPIClientPolicy(single, "127.0.0.1", port, client=client)
        obs, _ = single.reset(seed=0)
        with pytest.raises(RuntimeError, match="toy failure"):
            policy.act({**obs, "task": "boom"})
    with openpi_server(horizon=2) as (port, _):
        with pytest.raises(RuntimeError, match="at least"):
            OpenPIClientPolicy(single, "127.0.0.1", port, client=client).act({**obs, "task": "x"})
