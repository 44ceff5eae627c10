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
from cosmos3_world.testing import reference_pipeline

SIZE, CHUNK, EMBODIMENT, FPS = 256, 8, "bridge_orig_lerobot", 5.0
INSTRUCTION = "pick up the red block and place it in the bowl"


class Stopwatch:
    """Accumulates the time spent in wrapped callables (here: the VAE's encode and decode)."""

    def __init__(self) -> None:
        self.total = 0.0

    def wrap(self, obj, name: str) -> None:
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        setattr(obj, name, timed)


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
    parser.add_argument("--dtype", default="bfloat16", help="dtype of transformer and VAE, both sides")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    root = build_tiny_bundle(tempfile.mkdtemp(prefix="bench_rollout_"), codec="wan", seed=0)
    pipe = reference_pipeline(root)
    dtype = getattr(torch, args.dtype)
    pipe.transformer.to(dtype).time_embedder.to(torch.float32)  # as from_pretrained(torch_dtype=...) would
    pipe.vae.to(dtype)
    sampler = SamplerConfig(num_steps=args.steps, guidance_scale=args.guidance)
    wm = WorldModel.from_pretrained(root, sampler=sampler, torch_dtype=dtype)
    image = demo_image(SIZE, SIZE, seed=0)
    ref_vae, our_vae = Stopwatch(), Stopwatch()
    for name in ("encode", "decode"):
        ref_vae.wrap(pipe.vae, name)
        our_vae.wrap(wm.codec, name)

    reference_rollout(pipe, image, 1, args.steps, args.guidance, 0)  # warm-up both
    our_rollout(wm, 1, 1, 0)
    rows = []
    for label, run, stopwatch, worlds in (
        ("reference pipeline, B=1", lambda: reference_rollout(pipe, image, args.chunks, args.steps, args.guidance, 0),
         ref_vae, 1),
        ("ours, B=1", lambda: our_rollout(wm, 1, args.chunks, 0), our_vae, 1),
        (f"ours, B={args.batch}", lambda: our_rollout(wm, args.batch, args.chunks, 0), our_vae, args.batch),
    ):  # fmt: skip
        stopwatch.total = 0.0
        total = run()
        per_world = args.chunks * worlds
        rows.append((label, per_world / total, per_world / stopwatch.total, per_world / (total - stopwatch.total)))
    print(f"{args.chunks} chunks of {CHUNK} actions ({CHUNK + 1} frames of {SIZE}x{SIZE}), {args.steps} steps, "
          f"guidance {args.guidance}, {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'':24} {'world-chunks/s':>15} {'VAE only':>10} {'all but VAE':>12}")
    for label, total, vae, rest in rows:
        print(f"{label:24} {total:15.2f} {vae:10.2f} {rest:12.2f}")
    (_, ref, ref_vae_cps, ref_rest), (_, one, one_vae, one_rest), (_, batch, _, batch_rest) = rows
    print(f"ours / reference at B=1: {one / ref:.2f}x end to end (goal >= 3x); "
          f"{one_rest / ref_rest:.2f}x outside the VAE; VAE {one_vae / ref_vae_cps:.2f}x")
    print(f"B={args.batch} / B=1 per world: {batch / one:.2f}x end to end (goal >= 2x); "
          f"{batch_rest / one_rest:.2f}x outside the VAE")


if __name__ == "__main__":
    main()
