"""The ground-truth push simulator: physics, rendering, pixel detector, gym env, scripted policies, data recorder.

Light on purpose (numpy, OpenCV, Gymnasium, tqdm; never torch): the world-model env reuses ``push_spaces``,
``PixelSuccessDetector`` and the policies, and a data-collection job needs nothing else.
"""

from .dataset import DEFAULT_MIX, FORMAT_VERSION, Episode, collect, iter_episodes, load_episode, load_index
from .detect import COLOUR_THRESHOLD, Detection, PixelSuccessDetector, PushDetector, detect
from .env import ENTRY_POINT, ENV_ID, PushSimEnv, default_max_episode_steps, push_spaces, validate_action
from .policies import ExpertPushPolicy, PushPolicy, RandomPushPolicy, graded_policies
from .push import (
    CONTROL_FPS,
    GOAL_COLOURS,
    MAX_CONTROL_STEPS,
    TASK_GOALS,
    TASKS,
    PushConfig,
    PushSim,
    PushState,
    goal_score,
    is_success,
    render_state,
    sample_state,
    task_index,
)

__all__ = [
    "COLOUR_THRESHOLD",
    "CONTROL_FPS",
    "DEFAULT_MIX",
    "ENTRY_POINT",
    "ENV_ID",
    "Episode",
    "ExpertPushPolicy",
    "FORMAT_VERSION",
    "GOAL_COLOURS",
    "MAX_CONTROL_STEPS",
    "PixelSuccessDetector",
    "PushConfig",
    "PushDetector",
    "PushPolicy",
    "PushSim",
    "PushSimEnv",
    "PushState",
    "RandomPushPolicy",
    "TASKS",
    "TASK_GOALS",
    "Detection",
    "collect",
    "default_max_episode_steps",
    "detect",
    "goal_score",
    "graded_policies",
    "is_success",
    "iter_episodes",
    "load_episode",
    "load_index",
    "push_spaces",
    "render_state",
    "sample_state",
    "task_index",
    "validate_action",
]
