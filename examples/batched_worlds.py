"""Several worlds in lockstep: different instructions, start frames, embodiments and seeds, one
batched generator forward per denoising step; one world restarts while the others go on."""

import tempfile

import numpy as np

from cosmos3_world import SamplerConfig, WorldModel, build_tiny_bundle, demo_image

wm = WorldModel.from_pretrained(build_tiny_bundle(tempfile.mkdtemp()), sampler=SamplerConfig(num_steps=6))
tasks = [("stack the red block on the blue one", "bridge_orig_lerobot"),
         ("open the top drawer", "droid_lerobot"),
         ("push the T into the target", "pusht")]  # fmt: skip
worlds = [wm.reset(demo_image(seed=i), task, emb, seed=i, chunk_size=4) for i, (task, emb) in enumerate(tasks)]
rng = np.random.default_rng(0)
for chunk in range(3):
    actions = [rng.uniform(-1, 1, (w.chunk_size, w.embodiment.action_dim)) for w in worlds]
    results = wm.step(worlds, actions)
    print(f"chunk {chunk}: " + ", ".join(f"{w.embodiment.name} {r.frames.shape}" for w, r in zip(worlds, results)))
    if chunk == 1:  # the pusht episode ends; start a new one in place
        wm.reset(demo_image(seed=7), "push the T into the target", "pusht", seed=7, chunk_size=4, world=worlds[2])
print("prefix cache:", wm.prefix_cache.stats)
