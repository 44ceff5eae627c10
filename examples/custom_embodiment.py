"""Register your own robot: a domain id the model was trained with, the raw action width, and
quantile stats that map raw actions to [-1, 1]. Then roll out, and read the policy's actions back
in raw units."""

import tempfile

import numpy as np

from cosmos3_world import (
    DEFAULT_EMBODIMENTS,
    Embodiment,
    EmbodimentRegistry,
    SamplerConfig,
    WorldModel,
    build_tiny_bundle,
    demo_image,
)

# A Franka with a parallel gripper in the DROID action space (domain 8), with its own action ranges.
my_robot = Embodiment(
    name="my_franka",
    domain_id=8,
    action_dim=10,
    control_hz=15.0,
    view_point="third_person_view",
    action_low=(-0.05, -0.05, -0.05, -1, -1, -1, -1, -1, -1, 0.0),
    action_high=(0.05, 0.05, 0.05, 1, 1, 1, 1, 1, 1, 1.0),
)
registry = EmbodimentRegistry(DEFAULT_EMBODIMENTS)  # a copy: the built-ins plus ours
registry.register(my_robot)

wm = WorldModel.from_pretrained(
    build_tiny_bundle(tempfile.mkdtemp()), embodiments=registry, sampler=SamplerConfig(num_steps=4)
)
world = wm.reset(demo_image(), "wipe the table", "my_franka", seed=0, chunk_size=4)
step = world.step(np.tile([0.01, 0.0, 0.0, 1, 0, 0, 0, 1, 0, 1.0], (4, 1)))
plan = world.predict()  # policy mode: imagined frames and actions, in the robot's raw units
print("frames", step.frames.shape, "predicted actions", plan.actions.shape, plan.actions.min(), plan.actions.max())
