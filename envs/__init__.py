"""Gymnasium environments backed by the Cosmos3 world model: `Cosmos3World-v0` and its native vector env.

`import cosmos3_world` registers the ids; this package loads torch and the engine on first use (gym.make).
"""

from .models import DEFAULT_MODEL_CACHE, ModelCache, cache_dir, default_model_path, embedded_world_path
from .success import Judge, Judgement, SuccessHook
from .tasks import PushSimTasks, Task, TaskList, TaskSource
from .vector_env import Cosmos3WorldVectorEnv, WorldView
from .world_env import ENTRY_POINT, ENV_ID, VECTOR_ENTRY_POINT, Cosmos3WorldEnv, Timings

__all__ = [
    "DEFAULT_MODEL_CACHE",
    "ENTRY_POINT",
    "ENV_ID",
    "VECTOR_ENTRY_POINT",
    "Cosmos3WorldEnv",
    "Cosmos3WorldVectorEnv",
    "Judge",
    "Judgement",
    "ModelCache",
    "PushSimTasks",
    "SuccessHook",
    "Task",
    "TaskList",
    "TaskSource",
    "Timings",
    "WorldView",
    "cache_dir",
    "default_model_path",
    "embedded_world_path",
]
