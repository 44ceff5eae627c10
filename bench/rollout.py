"""A 10-chunk forward-dynamics rollout: ours vs diffusers' pipeline called once per chunk.

Same tiny bundle (random weights, a small real Wan 2.2 VAE), same sampler settings, side by side
in one run. The reference re-tokenizes and re-encodes the prompt through the Reasoner on every
denoising step and re-encodes the whole conditioning clip each chunk; ours encodes each prompt
once and batches worlds. Prints chunks per second, the ratio at B=1, and per-world throughput at
B=8 against B=1. Goals (issue 3): ours >= 3x the reference at B=1; at B=8 >= 2x B=1 per world.

    python bench/rollout.py [--chunks 10] [--steps 10] [--batch 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from cosmos3_world import SamplerConfig, WorldModel, build_tiny_bundle, demo_image
from cosmos3_world.cli import scripted_actions

SIZE, CHUNK, EMBODIMENT, FPS = 256, 8, "bridge_orig_lerobot", 5.0
INSTRUCTION = "pick up the red block and place it in the bowl"


def reference_rollout(pipe, image: np.ndarray, chunks: int, steps: int, guidance: float, seed: int) -> float:
    from PIL import Image
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition

    start = time.perf_counter()
    frame = Image.fromarray(image)
    for c in range(chunks):
        actions = torch.from_numpy(scripted_actions(c, CHUNK, 10))
        condition = CosmosActionCondition(mode="forward_dynamics", chunk_size=CHUNK, domain_name=EMBODIMENT,
                                          resolution_tier=256, raw_actions=actions, image=frame,
                                          view_point="third_person_view")  # fmt: skip
        out = pipe(INSTRUCTION, action=condition, num_inference_steps=steps, guidance_scale=guidance, fps=FPS,
                   generator=torch.Generator().manual_seed(seed + c), output_type="np")  # fmt: skip
        frame = Image.fromarray((np.asarray(out.video[-1]) * 255).round().astype(np.uint8))
    return time.perf_counter() - start


def our_rollout(wm: WorldModel, batch: int, chunks: int, seed: int) -> float:
    worlds = [wm.reset(demo_image(SIZE, SIZE, seed=b), INSTRUCTION, EMBODIMENT, seed=seed + b, chunk_size=CHUNK,
                       fps=FPS, view_point="third_person_view") for b in range(batch)]  # fmt: skip
    start = time.perf_counter()
    for c in range(chunks):
        wm.step(worlds, [scripted_actions(c, CHUNK, 10)] * batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from diffusers import AutoencoderKLWan, Cosmos3OmniPipeline, Cosmos3OmniTransformer, UniPCMultistepScheduler
    from transformers import AutoTokenizer

    root = build_tiny_bundle(tempfile.mkdtemp(prefix="bench_rollout_"), codec="wan", seed=0)
    pipe = Cosmos3OmniPipeline(
        transformer=Cosmos3OmniTransformer.from_pretrained(root, subfolder="transformer"),
        text_tokenizer=AutoTokenizer.from_pretrained(root / "text_tokenizer"),
        vae=AutoencoderKLWan.from_pretrained(root, subfolder="vae"),
        scheduler=UniPCMultistepScheduler.from_pretrained(root, subfolder="scheduler"),
        enable_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    wm = WorldModel.from_pretrained(root, sampler=SamplerConfig(num_steps=args.steps, guidance_scale=args.guidance))
    image = demo_image(SIZE, SIZE, seed=0)

    reference_rollout(pipe, image, 1, args.steps, args.guidance, 0)  # warm-up both
    our_rollout(wm, 1, 1, 0)
    t_ref = reference_rollout(pipe, image, args.chunks, args.steps, args.guidance, 0)
    t_one = our_rollout(wm, 1, args.chunks, 0)
    t_batch = our_rollout(wm, args.batch, args.chunks, 0)
    ref_cps, one_cps, batch_cps = args.chunks / t_ref, args.chunks / t_one, args.chunks * args.batch / t_batch
    print(f"{args.chunks} chunks of {CHUNK} actions ({CHUNK + 1} frames of {SIZE}x{SIZE}), {args.steps} steps, "
          f"guidance {args.guidance}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"reference pipeline, B=1 : {ref_cps:6.2f} chunks/s")
    print(f"ours, B=1               : {one_cps:6.2f} chunks/s   ({one_cps / ref_cps:.2f}x the reference; goal >= 3x)")
    print(f"ours, B={args.batch:<2}              : {batch_cps:6.2f} world-chunks/s ({batch_cps / one_cps:.2f}x B=1 "
          f"per world; goal >= 2x)")  # fmt: skip


if __name__ == "__main__":
    main()
