"""Command line: `cosmos3-world rollout` (a world rollout written to mp4) and `cosmos3-world build-tiny`."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rollout(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .engine.sampler import SamplerConfig
    from .engine.world import WorldModel
    from .testing.tiny import build_tiny_bundle, demo_actions, demo_image
    from .video import write_video

    torch.set_grad_enabled(False)
    if args.model is None:
        root = Path(tempfile.mkdtemp(prefix="cosmos3_tiny_"))
        print(f"No --model given: building a tiny random-weight model in {root} (no download).")
        model_path = build_tiny_bundle(root, seed=args.seed)
    else:
        model_path = args.model
    sampler = SamplerConfig(num_steps=args.steps, guidance_scale=args.guidance, solver=args.solver)
    wm = WorldModel.from_pretrained(
        model_path, sampler=sampler, device=args.device, torch_dtype=args.dtype, compile=args.compile
    )
    if args.image:
        from PIL import Image

        image = np.asarray(Image.open(args.image).convert("RGB"))
    else:
        image = demo_image(64, 64, seed=args.seed)
    world = wm.reset(image, args.instruction, args.embodiment, seed=args.seed, chunk_size=args.chunk_size)
    frames = [image[None]]
    start = time.perf_counter()
    for chunk in tqdm(range(args.chunks), desc="chunks", unit="chunk"):
        if args.policy == "model":
            result = world.predict()
        else:
            result = world.step(demo_actions(chunk, world.chunk_size, world.embodiment.action_dim))
        frames.append(result.frames)
    elapsed = time.perf_counter() - start
    video = np.concatenate(frames)
    scale = max(1, 256 // max(video.shape[1:3]))
    path = write_video(video, args.out, fps=world.fps if args.fps is None else args.fps, scale=scale)
    print(f"{args.chunks} chunks, {len(video)} frames of {video.shape[2]}x{video.shape[1]} in {elapsed:.1f}s "
          f"({args.chunks / elapsed:.2f} chunks/s) -> {path}")  # fmt: skip
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from .testing.tiny import build_tiny_bundle

    path = build_tiny_bundle(args.directory, codec=args.codec, seed=args.seed)
    print(f"tiny bundle written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos3-world", description="Cosmos3 world model as a robot simulator.")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("rollout", help="roll a world forward chunk by chunk and write the video")
    r.add_argument("--model", help="bundle directory or hub repo id (default: a tiny model built on the fly)")
    r.add_argument("--image", help="start frame (default: a synthetic scene)")
    r.add_argument("--instruction", default="pick up the red block and place it in the bowl")
    r.add_argument("--embodiment", default="bridge_orig_lerobot")
    r.add_argument("--chunks", type=int, default=8)
    r.add_argument("--chunk-size", type=int, default=None, help="actions per chunk (default: 3 x temporal factor)")
    r.add_argument(
        "--policy",
        choices=["scripted", "model"],
        default="scripted",
        help="scripted smooth actions (forward dynamics) or the model's own actions (policy mode)",
    )
    r.add_argument("--steps", type=int, default=10, help="denoising steps per chunk")
    r.add_argument("--guidance", type=float, default=3.0)
    r.add_argument("--solver", choices=["unipc", "euler"], default="unipc")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default=None)
    r.add_argument("--dtype", default=None, help="generator dtype, e.g. bfloat16 (default float32)")
    r.add_argument("--compile", action="store_true", help="torch.compile the generator (slow first chunk)")
    r.add_argument("--fps", type=float, default=None, help="video fps (default: the embodiment's control rate)")
    r.add_argument("--out", default="rollout.mp4")
    r.set_defaults(func=_rollout)

    b = sub.add_parser("build-tiny", help="write a tiny random-weight bundle in the published layout")
    b.add_argument("directory")
    b.add_argument("--codec", choices=["space_to_depth", "wan"], default="space_to_depth")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_build_tiny)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
