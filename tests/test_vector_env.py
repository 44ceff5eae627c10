"""The native vector env: make_vec, autoreset modes, equality with single envs, batching, LeRobot's eval loop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import cosmos3_world  # noqa: F401  (registers the gym ids)
from cosmos3_world.envs import Cosmos3WorldEnv, Cosmos3WorldVectorEnv
from cosmos3_world.policies import LeRobotPolicy
from cosmos3_world.testing.tiny import demo_image

FAST = dict(num_steps=2, guidance_scale=1.0)


@pytest.fixture
def make_vec(tiny_bundle):
    made = []

    def _make(num_envs: int = 2, **kwargs) -> Cosmos3WorldVectorEnv:
        env = gym.make_vec("Cosmos3World-v0", num_envs=num_envs, model=tiny_bundle, **FAST, **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()


def _actions(env, value: float = 0.3) -> np.ndarray:
    return np.full(env.action_space.shape, value, np.float32)


def test_make_vec_returns_the_native_env(make_vec):
    env = make_vec(3)
    assert isinstance(env, Cosmos3WorldVectorEnv) and not isinstance(env, (gym.vector.SyncVectorEnv,))
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert env.action_space.shape == (3, 4, 2) and env.single_action_space.shape == (4, 2)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs["pixels"].shape == (3, 64, 64, 3)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and reward.shape == terminated.shape == truncated.shape == (3,)
    assert info["frames"].shape == (3, 4, 64, 64, 3) and info["timings"]["model_s"].shape == (3,)


def test_one_batched_step_for_all_worlds(make_vec, monkeypatch):
    env = make_vec(3)
    env.reset(seed=0)
    model_cls = type(env.model)
    real_step, calls = model_cls.step, []

    def counting_step(self, worlds, actions):
        calls.append(len(worlds))
        return real_step(self, worlds, actions)

    monkeypatch.setattr(model_cls, "step", counting_step)
    env.step(_actions(env))
    env.step(_actions(env))
    assert calls == [3, 3]  # one WorldModel.step (one forward per denoising step) for the 3 worlds


def test_next_step_autoreset(make_vec):
    env = make_vec(2, max_episode_steps=2)
    env.reset(seed=0)
    env.step(_actions(env))
    _, _, terminated, truncated, _ = env.step(_actions(env))
    assert truncated.all() and not terminated.any()
    obs, reward, terminated, truncated, info = env.step(_actions(env))  # the reset step
    assert (reward == 0).all() and not (terminated | truncated).any()
    assert (info["elapsed_steps"] == 0).all() and info["start_frames"].shape == (2, 1, 64, 64, 3)
    np.testing.assert_array_equal(obs["pixels"], info["start_frames"][:, 0])
    _, _, _, _, info = env.step(_actions(env))
    assert (info["elapsed_steps"] == 1).all()


def test_same_step_autoreset(make_vec):
    env = make_vec(2, max_episode_steps=2, autoreset_mode=AutoresetMode.SAME_STEP)
    assert env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    env.reset(seed=0)
    env.step(_actions(env))
    obs, _, _, truncated, info = env.step(_actions(env))
    assert truncated.all() and info["_final_obs"].all() and info["_final_info"].all()
    final_frames = info["final_info"]["frames"]  # [2, 4, H, W, 3]: the last chunk
    np.testing.assert_array_equal(info["final_obs"][0]["pixels"], final_frames[0, -1])
    assert isinstance(info["final_info"]["is_success"], np.ndarray)  # LeRobot reads final_info["is_success"]
    assert (info["elapsed_steps"] == 0).all()  # obs and info are already the next episode's
    np.testing.assert_array_equal(obs["pixels"], info["start_frames"][:, 0])


class FirstWorldSucceeds:
    """A batched judge: world 0 succeeds, the others never do."""

    def __call__(self, frames, task):
        raise AssertionError("the vector env calls batch()")

    def batch(self, frames_list, tasks):
        return [i == 0 for i in range(len(frames_list))]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_autoreset_of_some_worlds_only(make_vec, mode):
    env = make_vec(2, autoreset_mode=mode, success=FirstWorldSucceeds())
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(_actions(env))
    assert terminated.tolist() == [True, False] and reward.tolist() == [1.0, 0.0]
    if mode == AutoresetMode.SAME_STEP:
        assert info["_final_info"].tolist() == [True, False] and info["_start_frames"].tolist() == [True, False]
        assert info["_frames"].tolist() == [False, True]
    _, _, _, _, info = env.step(_actions(env))  # NEXT_STEP: world 0 resets; SAME_STEP: succeeds again, resets
    assert info["elapsed_steps"].tolist() == [0, 2] and [w.num_chunks for w in env.worlds] == [0, 2]
    if mode == AutoresetMode.SAME_STEP:
        assert info["final_info"]["elapsed_steps"][0] == 1


def test_disabled_autoreset_and_reset_mask(make_vec):
    env = make_vec(3, max_episode_steps=1, autoreset_mode="Disabled")
    assert env.metadata["autoreset_mode"] is AutoresetMode.DISABLED
    env.reset(seed=0)
    obs, _, _, truncated, _ = env.step(_actions(env))
    assert truncated.all()
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(_actions(env))
    before = [w.num_chunks for w in env.worlds]
    mask = np.array([True, False, True])
    new_obs, info = env.reset(seed=10, options={"reset_mask": mask})
    assert info["_start_frames"].tolist() == [True, False, True]
    np.testing.assert_array_equal(new_obs["pixels"][1], obs["pixels"][1])  # untouched
    assert [w.num_chunks for w in env.worlds] == [0, before[1], 0]
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.zeros(3, bool)})


def test_vector_env_equals_single_envs(make_vec, tiny_bundle):
    n, seed = 3, 11
    vec = make_vec(n)
    obs, _ = vec.reset(seed=seed)
    singles = [Cosmos3WorldEnv(model=tiny_bundle, **FAST) for _ in range(n)]
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    for i in range(n):
        np.testing.assert_array_equal(obs["pixels"][i], single_obs[i]["pixels"])
        assert vec.envs[i].task == singles[i].task
    rng = np.random.default_rng(0)
    for _ in range(2):
        actions = rng.uniform(-1, 1, vec.action_space.shape).astype(np.float32)
        _, _, _, _, info = vec.step(actions)
        for i, env in enumerate(singles):
            _, _, _, _, single_info = env.step(actions[i])
            diff = np.abs(info["frames"][i].astype(int) - single_info["frames"].astype(int))
            assert diff.max() <= 3, f"world {i} differs from its single env by {diff.max()} uint8 levels"


def test_per_world_keywords(make_vec):
    images = [demo_image(seed=i) for i in range(2)]
    env = make_vec(2, embodiment=["bridge_orig_lerobot", "droid_lerobot"], image=images, instruction=["open", "close"])
    obs, _ = env.reset(seed=0)
    assert env.call("task_description") == ("open", "close")
    assert [w.embodiment.name for w in env.worlds] == ["bridge_orig_lerobot", "droid_lerobot"]
    np.testing.assert_array_equal(obs["pixels"], np.stack(images))
    env.reset(options={"instruction": ["a", "b"]})
    assert env.get_attr("task") == ("a", "b")
    with pytest.raises(ValueError, match="action space"):
        make_vec(2, embodiment=["pusht", "droid_lerobot"], image=images)
    with pytest.raises(ValueError, match="num_envs"):
        make_vec(2, instruction=["a", "b", "c"], image=demo_image())
    with pytest.raises(ValueError, match="autoreset_mode"):
        make_vec(2, autoreset_mode="sometimes")


def test_several_cameras_in_the_vector_env(make_vec):
    from cosmos3_world.policies import lerobot_batch

    views = [{"top": demo_image(seed=i), "wrist": demo_image(seed=10 + i)} for i in range(2)]
    env = make_vec(2, embodiment="bridge_orig_lerobot", image=views, cameras=["top", "wrist"])
    obs, _ = env.reset(seed=0)
    assert obs["pixels"]["wrist"].shape == (2, 64, 64, 3) and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs["pixels"]["wrist"][1], views[1]["wrist"])
    batch = lerobot_batch(obs)
    assert batch["observation.images.top"].shape == (2, 3, 64, 64)
    first = obs["pixels"]["top"].copy()
    env.step(np.zeros(env.action_space.shape, np.float32))
    np.testing.assert_array_equal(obs["pixels"]["top"], first)  # returned observations are not overwritten


def test_per_world_reset_options(make_vec):
    from cosmos3_world.sim import TASKS

    env = make_vec(2)
    env.reset(seed=0, options={"task": [0, 2]})
    assert env.call("task") == (TASKS[0], TASKS[2])
    env.reset(seed=0, options={"task": 1})
    assert env.call("task") == (TASKS[1], TASKS[1])


def test_rejected_actions_leave_the_vector_env_usable(make_vec):
    env, ref = make_vec(2), make_vec(2)
    env.reset(seed=4)
    ref.reset(seed=4)
    bad = _actions(env)
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"actions\[1\]"):
        env.step(bad)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((3, 4, 2), np.float32))
    with pytest.raises(ValueError):
        env.step(np.zeros((2, 4, 3), np.float32))
    _, _, _, _, info = env.step(_actions(env))
    _, _, _, _, ref_info = ref.step(_actions(ref))
    np.testing.assert_array_equal(info["frames"], ref_info["frames"])  # nothing moved on the rejected calls
    assert [w.num_chunks for w in env.worlds] == [1, 1]


def test_batched_success_hook(make_vec):
    class BatchJudge:
        def __init__(self):
            self.batches = []

        def __call__(self, frames, task):
            raise AssertionError("the vector env should call batch()")

        def batch(self, frames_list, tasks):
            self.batches.append(len(frames_list))
            return [i == 0 for i in range(len(frames_list))]

    judge = BatchJudge()
    env = make_vec(3, success=judge)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(_actions(env))
    assert judge.batches == [3] and reward.tolist() == [1.0, 0.0, 0.0] and terminated.tolist() == [True, False, False]
    assert info["is_success"].tolist() == [True, False, False]


def test_call_get_attr_set_attr_render(make_vec):
    env = make_vec(2, render_mode="rgb_array", max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    assert env.call("_max_episode_steps") == (5, 5)
    assert all(isinstance(t, str) for t in env.call("task_description"))
    frames = env.render()
    assert len(frames) == 2 and np.array_equal(frames[1], obs["pixels"][1])
    assert np.array_equal(env.envs[0].render(), obs["pixels"][0]) and np.array_equal(env.call("render")[0], frames[0])
    env.set_attr("label", ["a", "b"])
    assert env.get_attr("label") == ("a", "b")
    env.set_attr("label", "same")
    assert env.get_attr("label") == ("same", "same")
    with pytest.raises(ValueError):
        env.set_attr("label", ["a"])
    assert env.unwrapped.metadata["render_fps"] == pytest.approx(2.5)  # 10 Hz, 4 actions per step


def test_vector_policy_mode_is_one_batched_predict(make_vec, monkeypatch):
    env = make_vec(3)
    env.reset(seed=0)
    model_cls = type(env.model)
    real_predict, calls = model_cls.predict, []
    monkeypatch.setattr(
        model_cls, "predict", lambda self, worlds: calls.append(len(worlds)) or real_predict(self, worlds)
    )
    actions = env.unwrapped.predict_actions()
    assert calls == [3] and actions.shape == (3, 4, 2) and env.action_space.contains(actions)
    _, _, _, _, info = env.step(actions)
    assert info["_predicted_actions"].all() and info["predicted_actions"].shape == (3, 4, 2)


class ToyLeRobotPolicy(torch.nn.Module):
    """A minimal LeRobot PreTrainedPolicy: select_action / predict_action_chunk / reset, with an action queue."""

    name = "toy"

    def __init__(self, action_dim: int = 2, horizon: int = 4):
        super().__init__()
        self.head = torch.nn.Linear(2, action_dim)
        self.horizon = horizon
        self.config = type("Config", (), {"input_features": {"observation.image": None, "observation.state": None}})
        self.seen: list[dict] = []
        self.reset()

    def reset(self) -> None:
        self._queue: list[torch.Tensor] = []

    def predict_action_chunk(self, batch: dict) -> torch.Tensor:
        self.seen.append(batch)
        image, state = batch["observation.image"], batch["observation.state"]
        assert image.dtype == torch.float32 and image.shape[1:] == (3, 64, 64) and 0 <= image.min() <= image.max() <= 1
        assert isinstance(batch["task"], list) and len(batch["task"]) == image.shape[0]
        action = torch.tanh(self.head(state))  # [B, D]
        return action[:, None].repeat(1, self.horizon, 1)  # [B, H, D]

    def select_action(self, batch: dict) -> torch.Tensor:
        if not self._queue:
            self._queue = list(self.predict_action_chunk(batch).unbind(1))
        return self._queue.pop(0)


def _lerobot_rollout(env, policy: torch.nn.Module, seeds: list[int]) -> dict:
    """The calls LeRobot 0.4.4's `lerobot_eval.rollout` / `eval_policy` make on a vector env, in its order."""
    from cosmos3_world.policies.lerobot import lerobot_batch

    assert isinstance(policy, torch.nn.Module)
    policy.reset()
    observation, info = env.reset(seed=seeds)
    frames = [np.stack([env.envs[i].render() for i in range(env.num_envs)])]  # render_frame
    done = np.array([False] * env.num_envs)
    max_steps = env.call("_max_episode_steps")[0]
    assert hasattr(env.envs[0], "task_description") and hasattr(env.envs[0], "task")  # check_env_attributes
    assert all(type(e) is type(env.envs[0]) for e in env.envs)
    step, successes = 0, []
    while not np.all(done) and step < max_steps:
        batch = lerobot_batch(observation)  # preprocess_observation
        task = env.call("task_description")  # add_envs_task
        assert isinstance(task, tuple) and all(isinstance(t, str) for t in task)
        batch["task"] = list(task)
        with torch.inference_mode():
            action = policy.select_action(batch)
        action_numpy = action.to("cpu").numpy()
        assert action_numpy.ndim == 2, "Action dimensions should be (batch, action_dim)"
        observation, reward, terminated, truncated, info = env.step(action_numpy)
        frames.append(np.stack(env.call("render")))
        if "final_info" in info:
            final_info = info["final_info"]
            assert isinstance(final_info, dict)
            successes.append(final_info["is_success"].tolist())
        else:
            successes.append([False] * env.num_envs)
        done = terminated | truncated | done
        if step + 1 == max_steps:
            done = np.ones_like(done, dtype=bool)
        step += 1
    return {
        "steps": step,
        "successes": successes,
        "frames": np.stack(frames),
        "fps": env.unwrapped.metadata["render_fps"],
    }


def test_lerobot_eval_loop_drives_it_unchanged(make_vec):
    env = make_vec(
        2, chunk_size=1, max_episode_steps=3, autoreset_mode=AutoresetMode.SAME_STEP, render_mode="rgb_array",
        success=lambda frames, task: False,
    )  # fmt: skip
    policy = ToyLeRobotPolicy()
    out = _lerobot_rollout(env, policy, seeds=[0, 1])
    assert out["steps"] == 3 and out["successes"][-1] == [False, False]
    assert out["frames"].shape == (4, 2, 64, 64, 3) and out["fps"] == pytest.approx(10.0)
    # The adapter builds the same batch, so a LeRobot policy also runs through this library's protocol.
    adapter = LeRobotPolicy(ToyLeRobotPolicy(), env)
    obs, _ = env.reset(seed=0)
    obs["task"] = list(env.call("task_description"))
    assert adapter.act(obs).shape == (2, 2)
