"""Policies that drive Cosmos3World envs (and the push simulator): the protocol, built-ins and adapters.

Protocol: `reset()`, `act(obs) -> actions` for one env (the action-space shape) or a vector env's batch
([N, *action shape]). Heavy dependencies (torch, openpi-client) load when a policy that needs them is built.
"""

from .base import Policy, batch_size, single_action_space, split_obs
from .lerobot import LeRobotPolicy, lerobot_batch
from .openpi import OpenPIClientPolicy, openpi_request
from .simple import RandomPolicy, ReplayPolicy, ScriptedPolicy
from .world_model import WorldModelPolicy

__all__ = [
    "LeRobotPolicy",
    "OpenPIClientPolicy",
    "Policy",
    "RandomPolicy",
    "ReplayPolicy",
    "ScriptedPolicy",
    "WorldModelPolicy",
    "batch_size",
    "lerobot_batch",
    "openpi_request",
    "single_action_space",
    "split_obs",
]
