"""LeRobot policies (`select_action` / `predict_action_chunk`) driving Cosmos3World envs.

The env's observation becomes LeRobot's batch exactly as LeRobot's own eval loop builds it
(`lerobot.envs.utils.preprocess_observation` + `add_envs_task`): pixels [B, H, W, 3] uint8 -> float32
[B, 3, H, W] in [0, 1] under `observation.image` (a dict of cameras -> `observation.images.<camera>`),
`agent_pos` -> `observation.state` float32 [B, D], and `task` -> a list of B instructions. When the
policy's `config.input_features` names a single image key, a single camera is fed under that key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import batch_size, single_action_space, tasks_of


def lerobot_batch(obs: dict[str, Any], device: Any = "cpu", image_key: str = "observation.image") -> dict[str, Any]:
    """An env observation (single or batched) as a LeRobot policy batch (always with a batch dimension)."""
    import torch

    n = batch_size(obs)
    batch: dict[str, Any] = {}
    pixels = obs["pixels"]
    cameras = pixels if isinstance(pixels, dict) else {None: pixels}
    for cam, img in cameras.items():
        t = torch.from_numpy(np.ascontiguousarray(img))
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dtype != torch.uint8:
            raise ValueError(f"pixels must be uint8, got {t.dtype}")
        key = image_key if cam is None else f"observation.images.{cam}"
        batch[key] = t.permute(0, 3, 1, 2).contiguous().to(device=device, dtype=torch.float32) / 255.0
    if "agent_pos" in obs:
        state = torch.from_numpy(np.asarray(obs["agent_pos"], np.float32))
        batch["observation.state"] = (state.unsqueeze(0) if state.dim() == 1 else state).to(device)
    tasks = tasks_of(obs, n or 1) if obs.get("task") is not None else None
    batch["task"] = tasks if tasks is not None else [""] * (n or 1)  # LeRobot: "" when the env has no task
    return batch


class LeRobotPolicy:
    """Adapter: a LeRobot `PreTrainedPolicy` (or anything with `select_action`, `reset` and optionally
    `predict_action_chunk`) as a policy of this library's protocol.

    With chunk_size 1 it calls `select_action` (LeRobot queues its own chunk); with larger env chunks it calls
    `predict_action_chunk` and executes its first `chunk_size` actions (`select_action` chunk_size times if
    the policy has no `predict_action_chunk`).
    """

    def __init__(self, policy: Any, env_or_space: Any, device: Any = None):
        if not callable(getattr(policy, "select_action", None)):
            raise ValueError("policy must have select_action(batch) (LeRobot's PreTrainedPolicy interface)")
        self.policy = policy
        self.space = single_action_space(env_or_space)
        self.chunk_size = 1 if len(self.space.shape) == 1 else self.space.shape[0]
        self.device = device if device is not None else _policy_device(policy)
        self.image_key = _single_image_key(policy) or "observation.image"

    def reset(self) -> None:
        """Clear the policy's action queue (LeRobot calls policy.reset() at every episode start)."""
        if callable(getattr(self.policy, "reset", None)):
            self.policy.reset()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        import torch

        n = batch_size(obs)
        batch = lerobot_batch(obs, self.device, self.image_key)
        with torch.inference_mode():
            if self.chunk_size == 1:
                actions = self.policy.select_action(batch)[:, None]  # [B, 1, D]
            elif callable(getattr(self.policy, "predict_action_chunk", None)):
                actions = self.policy.predict_action_chunk(batch)  # [B, H, D]
                if actions.shape[1] < self.chunk_size:
                    raise ValueError(f"the policy predicts {actions.shape[1]} actions a chunk, the env steps "
                                     f"{self.chunk_size}")  # fmt: skip
                actions = actions[:, : self.chunk_size]
            else:
                actions = torch.stack([self.policy.select_action(batch) for _ in range(self.chunk_size)], dim=1)
        out = actions.detach().to("cpu", torch.float32).numpy()  # [B, chunk, D]
        out = out.reshape(out.shape[0], *self.space.shape)
        return out[0] if n is None else out


def _policy_device(policy: Any) -> Any:
    try:
        return next(policy.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return "cpu"


def _single_image_key(policy: Any) -> str | None:
    """The policy's only visual input key from `config.input_features` (LeRobot's feature spec), if any."""
    features = getattr(getattr(policy, "config", None), "input_features", None) or {}
    keys = [k for k, f in features.items() if "image" in k or str(getattr(f, "type", "")).endswith("VISUAL")]
    return keys[0] if len(keys) == 1 else None
