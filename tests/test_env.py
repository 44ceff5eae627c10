"""Cosmos3World-v0 (single env): registration, keywords, spaces, determinism, actions, success, wrappers, memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import cosmos3_world  # noqa: F401  (registers the gym ids)
from cosmos3_world.envs import Cosmos3WorldEnv, ModelCache, Task, default_model_path
from cosmos3_world.envs import models as env_models
from cosmos3_world.sim import PushSimEnv, push_spaces
from cosmos3_world.testing.tiny import demo_image

FAST = dict(num_steps=2, guidance_scale=1.0)  # few denoising steps, no CFG: the machinery, fast


@pytest.fixture
def make(tiny_bundle):
    """Build a Cosmos3WorldEnv on the tiny bundle with a fast sampler; closes every env it made."""
    made = []

    def _make(**kwargs) -> Cosmos3WorldEnv:
        env = Cosmos3WorldEnv(**{"model": tiny_bundle, **FAST, **kwargs})
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()


def test_import_is_light_and_registers_ids():
    code = (
        "import sys, cosmos3_world, gymnasium as gym\n"
        "s = gym.spec('Cosmos3World-v0')\n"
        "assert s.entry_point == 'cosmos3_world.envs.world_env:Cosmos3WorldEnv', s.entry_point\n"
        "assert s.vector_entry_point == 'cosmos3_world.envs.vector_env:Cosmos3WorldVectorEnv'\n"
        "assert gym.spec('Cosmos3PushSim-v0').entry_point == 'cosmos3_world.sim.env:PushSimEnv'\n"
        "assert 'torch' not in sys.modules, 'import cosmos3_world must not import torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_model_is_built_once_and_cached(tmp_path, monkeypatch, tiny_bundle):
    monkeypatch.setenv("COSMOS3_WORLD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(env_models, "EMBEDDED_WORLD", tmp_path / "not_shipped")  # the stand-in, even once shipped
    builds = []

    def fake_build(directory, **kwargs):  # the same bundle the conftest built (tiny, seed 0), without rebuilding
        builds.append(kwargs)
        shutil.copytree(tiny_bundle, directory, dirs_exist_ok=True)
        return Path(directory)

    import cosmos3_world.testing.tiny as tiny

    monkeypatch.setattr(tiny, "build_tiny_bundle", fake_build)
    first = default_model_path()
    assert first.parent == tmp_path / "cache" and (first / "model_index.json").is_file()
    assert default_model_path() == first and len(builds) == 1  # cached on disk, not rebuilt
    env = gym.make("Cosmos3World-v0")  # no argument at all: the default model with its own settings
    env.reset(seed=0)
    assert env.observation_space.contains(env.step(env.action_space.sample())[0])
    other = gym.make("cosmos3_world:Cosmos3World-v0", **FAST).unwrapped.model
    assert env.unwrapped.model.generator is other.generator  # one copy of the weights
    assert len(builds) == 1
    # The shipped embedded world wins as soon as it is there.
    shipped = tmp_path / "embedded_world"
    shipped.mkdir()
    (shipped / "model_index.json").write_text("{}")
    monkeypatch.setattr(env_models, "EMBEDDED_WORLD", shipped)
    assert default_model_path() == shipped


def test_pusht_spaces_and_first_frame_match_the_simulator(make):
    env = make()  # pusht, no start image: starts come from the push simulator
    sim = PushSimEnv(chunk_size=4)
    obs_space, act_space = push_spaces(4, 64)
    assert env.observation_space == obs_space and env.action_space == act_space
    for seed in (0, 7):
        obs, info = env.reset(seed=seed)
        sim_obs, sim_info = sim.reset(seed=seed)
        np.testing.assert_array_equal(obs["pixels"], sim_obs["pixels"])
        np.testing.assert_array_equal(obs["agent_pos"], sim_obs["agent_pos"])
        assert info["task"] == sim_info["task"] == env.unwrapped.task_description
    assert make(chunk_size=1).action_space == push_spaces(1, 64)[1]  # per-step Box((2,)) for LeRobot
    obs, _ = env.reset(seed=1, options={"task": 2})
    assert env.unwrapped.task == sim.reset(seed=1, options={"task": 2})[1]["task"]
    action = np.full((4, 2), 0.25, np.float32)
    obs, *_ = env.step(action)
    np.testing.assert_array_equal(obs["agent_pos"], action[-1])  # the commanded position


def test_check_env(make):
    env = make(max_episode_steps=3, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    image_env = make(embodiment="bridge_orig_lerobot", image=demo_image(), instruction="pick up the block")
    check_env(image_env.unwrapped)
    assert image_env.action_space.shape == (4, 10) and "agent_pos" not in image_env.observation_space.spaces


BAD_KEYWORDS = [
    (dict(chunk_size=0), "chunk_size"),
    (dict(chunk_size="4"), "chunk_size"),
    (dict(history=0), "history"),
    (dict(out_of_bounds="wrap"), "out_of_bounds"),
    (dict(obs_latents="yes"), "obs_latents"),
    (dict(embodiment="no_such_robot"), "no_such_robot"),
    (dict(embodiment=3), "embodiment"),
    (dict(instruction=5), "instruction"),
    (dict(instruction="push the block somewhere"), "unknown task"),  # simulator starts need a goal colour
    (dict(image=np.zeros((64, 64), np.uint8)), "image"),
    (dict(image=np.zeros((62, 64, 3), np.uint8)), "spatial factor"),
    (dict(image=demo_image(), tasks=[]), "at most one"),
    (dict(tasks=[{"instruction": "x"}]), "exactly one of image or video"),
    (dict(embodiment="bridge_orig_lerobot"), "start frames"),
    (dict(num_steps=0), "num_steps"),
    (dict(guidance_scale="high"), "guidance_scale"),
    (dict(solver="rk4"), "solver"),
    (dict(sampler={"steps": 2}), "unknown fields"),
    (dict(success=3), "success"),
    (dict(success="vlm"), "success"),
    (dict(model=123), "model"),
    (dict(model_cache={}), "model_cache"),
    (dict(device="cpu"), "loaded WorldModel"),  # with model= a WorldModel (below)
]


@pytest.mark.parametrize("kwargs, message", BAD_KEYWORDS, ids=[m for _, m in BAD_KEYWORDS])
def test_bad_keywords_fail_at_make(tiny_bundle, kwargs, message):
    if "device" in kwargs:
        kwargs = {**kwargs, "model": ModelCache().get(tiny_bundle)}
    else:
        kwargs = {"model": tiny_bundle, **kwargs}
    with pytest.raises(ValueError, match=message):
        gym.make("Cosmos3World-v0", **kwargs)


@pytest.mark.parametrize("kwargs", [dict(max_episode_steps=-1), dict(render_mode="human")])
def test_bad_keywords_gym_make_takes_itself(tiny_bundle, kwargs):  # gym.make consumes these two
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Cosmos3WorldEnv(model=tiny_bundle, **kwargs)


def test_unknown_keyword_is_a_type_error(tiny_bundle):
    with pytest.raises(TypeError, match="num_step"):
        gym.make("Cosmos3World-v0", model=tiny_bundle, num_step=2)


def test_model_shared_between_envs(make, tiny_bundle):
    a, b = make(), make(num_steps=3)  # same weights; b samples differently through a view
    assert a.model.generator is b.model.generator and a.model.codec is b.model.codec
    assert a.model.sampler.config.num_steps == 2 and b.model.sampler.config.num_steps == 3
    c = make(model=a.model)  # a loaded WorldModel is used as is
    assert c.model is a.model


def test_bundle_defaults_are_honoured(make):
    import copy

    model = copy.copy(make().model)  # a view of the same weights with a bundle's defaults block
    model.defaults = {"chunk_size": 2, "history": 2, "tier": None}
    env = make(model=model)
    env.reset(seed=0)
    assert env.action_space.shape == (2, 2) and env.world.history == 2 and env.world.tier is None
    env = make(model=model, chunk_size=4, history=1)  # keywords win
    env.reset(seed=0)
    assert env.action_space.shape == (4, 2) and env.world.history == 1
    with pytest.raises(ValueError, match="tier"):
        make(tier="big")


def test_observation_is_the_frame_the_model_sees(make):
    env = make(embodiment="bridge_orig_lerobot", image=demo_image(480, 640), tier=256)  # the tier downscales
    assert env.observation_space["pixels"].shape == (240, 320, 3)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["start_frames"].shape == (1, 480, 640, 3)


def test_several_cameras(make):
    views = {"left": demo_image(seed=1), "right": demo_image(seed=2)}
    env = make(embodiment="bridge_orig_lerobot", image=views, cameras=["left", "right"])
    assert env.observation_space["pixels"]["right"].shape == (64, 64, 3)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["pixels"]["right"], views["right"])
    assert env.render() is None and env.observation_space.contains(env.step(env.action_space.sample())[0])
    obs, _ = env.reset(options={"image": {"left": views["right"], "right": views["left"]}})
    np.testing.assert_array_equal(obs["pixels"]["left"], views["right"])
    with pytest.raises(ValueError, match="cameras"):
        make(embodiment="bridge_orig_lerobot", image=views)
    with pytest.raises(ValueError, match="cameras"):
        make(cameras=["top"])  # the push simulator has one view


def _rollout(env, seed, steps=2):
    obs, _ = env.reset(seed=seed)
    frames = [obs["pixels"]]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        frames.append(info["frames"])
    return np.concatenate([frames[0][None], *frames[1:]])


def test_reset_with_a_seed_is_deterministic(make):
    env = make()
    first = _rollout(env, seed=5)
    np.testing.assert_array_equal(first, _rollout(env, seed=5))  # same env, reset again
    np.testing.assert_array_equal(first, _rollout(make(), seed=5))  # another env
    assert not np.array_equal(first, _rollout(env, seed=6))


def test_rejected_actions_leave_the_env_usable(make):
    env, ref = make(out_of_bounds="reject"), make()
    env.reset(seed=3)
    ref.reset(seed=3)
    env.step(np.zeros((4, 2), np.float32))
    ref.step(np.zeros((4, 2), np.float32))
    bad = [
        np.full((4, 2), np.nan, np.float32),
        np.array([[0, np.inf]] * 4, np.float32),
        np.zeros((3, 2), np.float32),
        np.zeros((4, 3), np.float32),
        np.full((4, 2), 1.5, np.float32),  # out of bounds, rejected in this mode
        "left",
        [[0, 0]] * 4 + [[0]],
    ]
    for action in bad:
        with pytest.raises(ValueError):
            env.step(action)
    good = np.full((4, 2), 0.5, np.float32)
    obs, _, _, _, info = env.step(good)
    ref_obs, _, _, _, ref_info = ref.step(good)
    np.testing.assert_array_equal(info["frames"], ref_info["frames"])  # as if the bad calls never happened
    assert info["elapsed_steps"] == ref_info["elapsed_steps"] == 2
    # Default: out-of-bounds values are clipped.
    _, _, _, _, info = ref.step(np.full((4, 2), 3.0, np.float32))
    np.testing.assert_array_equal(info["actions"], np.ones((4, 2), np.float32))
    with pytest.raises(RuntimeError, match="reset"):
        make().step(good)


def test_step_info_and_truncation(make):
    env = make(max_episode_steps=2, obs_latents=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs["latents"].shape == (48, 16, 16)
    assert info["start_frames"].shape == (1, 64, 64, 3)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert info["frames"].shape == (4, 64, 64, 3) and info["frames"].dtype == np.uint8
    np.testing.assert_array_equal(obs["pixels"], info["frames"][-1])
    assert set(info["timings"].as_dict()) == {"model_s", "judge_s", "step_s"} and "predicted_actions" not in info
    assert info["timings"].step_s >= info["timings"].model_s > 0
    assert (reward, terminated, truncated) == (0.0, False, False)
    *_, truncated, info = env.step(env.action_space.sample())
    assert truncated and info["elapsed_steps"] == 2


def test_reset_options(make):
    env = make(embodiment="bridge_orig_lerobot", image=demo_image(), instruction="stack the blocks")
    obs, info = env.reset(seed=0, options={"instruction": "open the drawer", "image": demo_image(seed=3)})
    assert env.unwrapped.task == info["task"] == "open the drawer"
    np.testing.assert_array_equal(obs["pixels"], demo_image(seed=3))
    env.reset(seed=0, options={"embodiment": "droid_lerobot"})  # same width and bounds
    assert env.unwrapped.world.embodiment.name == "droid_lerobot"
    env.reset(seed=0)  # options hold for one episode
    assert env.unwrapped.world.embodiment.name == "bridge_orig_lerobot"
    with pytest.raises(ValueError, match="action space"):
        env.reset(options={"embodiment": "pusht"})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"instructions": "x"})
    env.step(env.action_space.sample())  # still usable
    tasks = [
        Task("a", video=np.stack([demo_image(seed=1)] * 3)),
        {"instruction": "b", "video": np.stack([demo_image(seed=2)] * 3)},
    ]
    env = make(embodiment="bridge_orig_lerobot", tasks=tasks)
    seen = {env.reset(seed=s)[1]["task"] for s in range(8)}
    assert seen == {"a", "b"}
    assert env.reset(options={"task": "b"})[1]["task"] == "b"


class EveryOtherChunk:
    """A judge object: scores a float, only every 2nd chunk, batched when it can."""

    every = 2
    threshold = 0.5

    def __init__(self):
        self.calls = []

    def __call__(self, frames, task):
        self.calls.append((frames.shape, task))
        return 0.75


def test_success_hooks(make):
    env = make(success=lambda frames, task: bool(frames.shape == (4, 64, 64, 3)))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.action_space.sample())
    assert (reward, terminated, info["is_success"]) == (1.0, True, True)

    judge = EveryOtherChunk()
    env = make(success=judge)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == 0.0 and not judge.calls and "success_score" not in info  # not due
    _, reward, terminated, _, info = env.step(env.action_space.sample())
    assert (reward, terminated, info["success_score"]) == (0.75, True, 0.75) and judge.calls[0][0] == (4, 64, 64, 3)

    class AtEnd:
        at_end, episode_frames = True, True

        def __call__(self, frames, task):
            self.seen = frames.shape
            return False

    hook = AtEnd()
    env = make(success=hook, max_episode_steps=2)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert not hasattr(hook, "seen")
    env.step(env.action_space.sample())
    assert hook.seen == (9, 64, 64, 3)  # the start frame + 2 chunks

    env = make(success=lambda frames, task: "maybe")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="bool or a float"):
        env.step(env.action_space.sample())
    # "auto" on Push-T simulator starts is the pixel detector; none for image starts.
    from cosmos3_world.sim import PixelSuccessDetector

    assert isinstance(make().settings.judge.hook, PixelSuccessDetector)
    assert make(embodiment="bridge_orig_lerobot", image=demo_image()).settings.judge is None


def test_policy_mode_commits_the_imagined_chunk(make, monkeypatch):
    env = make()
    env.reset(seed=0)
    actions = env.unwrapped.predict_actions()
    assert actions.shape == (4, 2) and env.action_space.contains(actions)
    calls = []
    monkeypatch.setattr(type(env.model), "step", lambda self, *a, **k: calls.append(1) or [])
    _, _, _, _, info = env.step(actions)
    assert not calls and info["predicted_actions"].shape == (4, 2)  # no second denoising
    monkeypatch.undo()
    env.unwrapped.predict_actions()
    _, _, _, _, info = env.step(np.zeros((4, 2), np.float32))  # other actions: forward dynamics
    assert "predicted_actions" not in info


def test_record_video_writes_a_playable_mp4(make, tmp_path):
    pytest.importorskip("moviepy")
    import cv2

    env = make(render_mode="rgb_array", max_episode_steps=3)
    env = gym.wrappers.RecordVideo(env, str(tmp_path), disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    (video,) = tmp_path.glob("*.mp4")
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0 / 4)  # one frame per chunk of 4 at 10 Hz: real time
    cap.release()
    assert len(frames) == 1 + 3 and frames[0].shape == (64, 64, 3)  # the start frame + one per step


def test_render_modes(make):
    env = make(render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs["pixels"])
    env = make(render_mode="rgb_array_list")
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    frames = env.render()
    assert len(frames) == 5 and env.render() == []  # the start frame and the chunk's 4, then nothing new
    np.testing.assert_array_equal(np.stack(frames[1:]), info["frames"])
    assert make().render() is None


def test_record_episode_statistics(make):
    env = gym.wrappers.RecordEpisodeStatistics(make(max_episode_steps=2, success=lambda f, t: 0.25))
    env.reset(seed=0)
    env.step(env.action_space.sample())
    *_, truncated, info = env.step(env.action_space.sample())
    assert truncated and info["episode"]["l"] == 2 and info["episode"]["r"] == pytest.approx(0.5)


def test_memory_stays_flat_over_200_chunks(make):
    psutil = pytest.importorskip("psutil")
    # Small frames and one-action chunks keep 200 chunks cheap; the bookkeeping is the same as for larger ones.
    env = make(num_steps=1, embodiment="bridge_orig_lerobot", image=demo_image(32, 32), chunk_size=1)
    env.reset(seed=0)
    action = np.zeros(10, np.float32)
    proc = psutil.Process(os.getpid())
    rss = []
    for i in range(200):
        env.step(action)
        if i in (49, 199):
            rss.append(proc.memory_info().rss)
    world = env.unwrapped.world
    assert len(world.frames) <= 1 + world.history and len(world.past_actions) <= world.history
    assert env.unwrapped._slot.episode == [] and env.unwrapped._slot.render_list == []
    assert rss[1] - rss[0] < 32 * 2**20, f"RSS grew by {(rss[1] - rss[0]) / 2**20:.1f} MiB over 150 chunks"


def test_close_is_idempotent(make):
    env = make()
    env.reset(seed=0)
    env.close()
    env.close()
    with pytest.raises(RuntimeError):
        env.step(np.zeros((4, 2), np.float32))
    env.reset(seed=0)  # a closed env can start again
