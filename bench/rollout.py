"""A 10-chunk forward-dynamics rollout: ours vs diffusers' pipeline called once per chunk.

Same tiny bundle (random weights, a small real Wan 2.2 VAE), same sampler settings, side by side
in one run. The reference re-tokenizes and re-encodes the prompt through the Reasoner on every
denoising step and re-encodes the whole conditioning clip each chunk; ours encodes each prompt
once and batches worlds. Prints chunks per second, the ratio at B=1, and per-world throughput at
B=8 against B=1. Goals (issue 3): ours >= 3x the reference at B=1; at B=8 >= 2x B=1 per world.

    python bench/rollout.py [--chunks 10] [--steps 10] [--batch 8] [--rounds 3] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from cosmos3_world import SamplerConfig, WorldModel, build_tiny_bundle, demo_image
from cosmos3_world.testing.reference import reference_pipeline
from cosmos3_world.testing.tiny import demo_actions

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
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition
    from PIL import Image

    start = time.perf_counter()
    frame = Image.fromarray(image)
    for c in range(chunks):
        actions = torch.from_numpy(demo_actions(c, CHUNK, 10))
        condition = CosmosActionCondition(mode="forward_dynamics", chunk_size=CHUNK, domain_name=EMBODIMENT,
                                          resolution_tier=256, raw_actions=actions, image=frame,
                                          view_point="third_person_view")  # fmt: skip
        out = pipe(INSTRUCTION, action=condition, num_inference_steps=steps, guidance_scale=guidance, fps=FPS,
                   generator=torch.Generator().manual_seed(seed + c), output_type="np")  # fmt: skip
        frame = Image.fromarray((np.asarray(out.video[-1]) * 255).round().astype(np.uint8))
    return time.perf_counter() - start


def our_rollout(wm: WorldModel, batch: int, chunks: int, seed: int) -> float:
    worlds = [wm.reset(demo_image(SIZE, SIZE, seed=b), INSTRUCTION, EMBODIMENT, seed=seed + b, chunk_size=CHUNK,
                       tier=256, fps=FPS, view_point="third_person_view") for b in range(batch)]  # fmt: skip
    start = time.perf_counter()
    for c in range(chunks):
        wm.step(worlds, [demo_actions(c, CHUNK, 10)] * batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--dtype", default="bfloat16", help="dtype of transformer and VAE, both sides")
    parser.add_argument("--compile", action="store_true", help="also time ours with compile=True")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    root = build_tiny_bundle(tempfile.mkdtemp(prefix="bench_rollout_"), codec="wan", seed=0)
    pipe = reference_pipeline(root)
    dtype = getattr(torch, args.dtype)
    pipe.transformer.to(dtype).time_embedder.to(torch.float32)  # as from_pretrained(torch_dtype=...) would
    pipe.vae.to(dtype)
    sampler = SamplerConfig(num_steps=args.steps, guidance_scale=args.guidance)
    models = {"eager": WorldModel.from_pretrained(root, sampler=sampler, torch_dtype=dtype)}
    if args.compile:
        models["compiled"] = WorldModel.from_pretrained(root, sampler=sampler, torch_dtype=dtype, compile=True)
    image = demo_image(SIZE, SIZE, seed=0)
    ref_vae = Stopwatch()
    for name in ("encode", "decode"):
        ref_vae.wrap(pipe.vae, name)
    watches = {}
    for key, wm in models.items():
        watches[key] = Stopwatch()
        for name in ("encode", "decode"):
            watches[key].wrap(wm.codec, name)

    def ref_run():
        return reference_rollout(pipe, image, args.chunks, args.steps, args.guidance, 0)

    runs = [("reference pipeline, B=1", ref_run, ref_vae, 1)]
    for key, wm in models.items():
        for b in (1, args.batch):
            run = lambda wm=wm, b=b: our_rollout(wm, b, args.chunks, 0)  # noqa: E731
            runs.append((f"ours {key}, B={b}", run, watches[key], b))
    reference_rollout(pipe, image, 1, args.steps, args.guidance, 0)  # warm-up (and compile) every run
    for key, wm in models.items():
        for b in (1, args.batch):
            our_rollout(wm, b, 1, 0)
    totals = {label: [] for label, *_ in runs}
    vae = {label: [] for label, *_ in runs}
    for _ in tqdm(range(args.rounds), desc="rounds"):  # alternate, so that every run sees the same machine
        for label, run, stopwatch, worlds in runs:
            stopwatch.total = 0.0
            totals[label].append(run())
            vae[label].append(stopwatch.total)
    print(f"{args.chunks} chunks of {CHUNK} actions ({CHUNK + 1} frames of {SIZE}x{SIZE}), {args.steps} steps, "
          f"guidance {args.guidance}, {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} alternating rounds")  # fmt: skip
    print(f"{'':26} {'world-chunks/s':>15} {'VAE only':>10} {'all but VAE':>12}")
    rate = {}
    for label, _, _, worlds in runs:
        total, in_vae = statistics.median(totals[label]), statistics.median(vae[label])
        n = args.chunks * worlds
        rate[label] = (n / total, n / in_vae, n / (total - in_vae))
        print(f"{label:26} {rate[label][0]:15.2f} {rate[label][1]:10.2f} {rate[label][2]:12.2f}")
    ref = rate[runs[0][0]]
    for key in models:
        one, batch = rate[f"ours {key}, B=1"], rate[f"ours {key}, B={args.batch}"]
        print(f"ours {key} / reference at B=1: {one[0] / ref[0]:.2f}x end to end (goal >= 3x); "
              f"{one[2] / ref[2]:.2f}x outside the VAE; VAE {one[1] / ref[1]:.2f}x")  # fmt: skip
        print(f"ours {key}, B={args.batch} / B=1 per world: {batch[0] / one[0]:.2f}x end to end (goal >= 2x); "
              f"{batch[2] / one[2]:.2f}x outside the VAE")  # fmt: skip


if __name__ == "__main__":
    main()
