"""Roll a world forward with scripted actions and save the imagined video.

python examples/rollout.py                       # tiny random-weight model built on the fly
python examples/rollout.py --model nvidia/Cosmos3-Nano --device cuda --dtype bfloat16 --image start.png
"""

import argparse
import tempfile

import numpy as np
import torch

from cosmos3_world import SamplerConfig, WorldModel, build_tiny_bundle, demo_image, write_video

parser = argparse.ArgumentParser()
parser.add_argument("--model", default=None)
parser.add_argument("--image", default=None)
parser.add_argument("--device", default=None)
parser.add_argument("--dtype", default=None)
parser.add_argument("--chunks", type=int, default=4)
parser.add_argument("--out", default="example_rollout.mp4")
args = parser.parse_args()

model = args.model or build_tiny_bundle(tempfile.mkdtemp())
wm = WorldModel.from_pretrained(
    model, device=args.device, torch_dtype=args.dtype, sampler=SamplerConfig(num_steps=8, guidance_scale=3.0)
)
if args.image:
    from PIL import Image

    image = np.asarray(Image.open(args.image).convert("RGB"))
else:
    image = demo_image(64, 64)

world = wm.reset(image, "push the blue block to the left", embodiment="bridge_orig_lerobot", seed=0)
frames = [image[None]]
for chunk in range(args.chunks):
    # Bridge actions: xyz delta, 6-D rotation, gripper. Move left, keep orientation, gripper open.
    actions = np.zeros((world.chunk_size, world.embodiment.action_dim), np.float32)
    actions[:, 1] = -0.05
    actions[:, 3], actions[:, 7] = 1.0, 1.0  # identity rotation: first two columns of I
    actions[:, 9] = 1.0
    with torch.inference_mode():
        frames.append(world.step(actions).frames)
video = np.concatenate(frames)
print(f"{len(video)} frames -> {write_video(video, args.out, fps=world.fps, scale=4)}")
