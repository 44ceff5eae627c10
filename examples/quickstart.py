import numpy as np

from cosmos3_world import WorldModel
from cosmos3_world.envs.models import default_model_path

# The project's default model runs on any CPU. On a GPU:
# WorldModel.from_pretrained("nvidia/Cosmos3-Nano", device="cuda", torch_dtype="bfloat16")
wm = WorldModel.from_pretrained(default_model_path())
first_frame = np.zeros((64, 64, 3), np.uint8)  # a camera frame [H, W, 3]
first_frame[20:44, 20:44] = (200, 40, 40)

world = wm.reset(first_frame, "push the block onto the green target", embodiment="pusht", seed=0, chunk_size=4)
actions = np.full((world.chunk_size, 2), 0.5, np.float32)  # [chunk_size, raw action dim]
result = world.step(actions)  # forward dynamics: result.frames [4, 64, 64, 3] uint8
result = world.predict()  # policy mode: imagined frames and the actions result.actions [4, 2]
video = np.concatenate([first_frame[None], result.frames])  # [5, 64, 64, 3]
inferred = wm.infer_actions(video, "push the block onto the green target", "pusht")  # inverse dynamics: [4, 2]

# Many worlds in lockstep: one batched forward per denoising step (cond + uncond of every world).
worlds = [wm.reset(first_frame, task, "pusht", seed=s, chunk_size=4) for s, task in enumerate(["left", "right"])]
results = wm.step(worlds, [np.random.uniform(-1, 1, (4, 2)).astype(np.float32) for _ in worlds])
print(result.frames.shape, result.actions.shape, inferred.shape, [r.frames.shape for r in results])
