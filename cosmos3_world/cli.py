"""Command line: `cosmos3-world rollout` (a world rollout written to mp4), `build-tiny`, and the subcommands
registered in `COMMANDS`. Defaults come from the model (its bundle's sampler and reset settings)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the unset ones (None: the model decides) and flags."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class UserError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


def _sampler(args: argparse.Namespace, defaults):
    """The model's sampler settings with the flags given on the command line applied."""
    from dataclasses import replace

    changes = {k: v for k, v in (("num_steps", args.steps), ("guidance_scale", args.guidance),
                                  ("solver", args.solver)) if v is not None}  # fmt: skip
    return replace(defaults, **changes)


def _rollout(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .engine.world import WorldModel
    from .envs.models import default_model_path
    from .testing.tiny import demo_actions, demo_image
    from .video import write_video

    torch.set_grad_enabled(False)
    model_path = args.model or default_model_path()
    if args.model is None:
        print(f"No --model given: using the default model at {model_path}.")
    wm = WorldModel.from_pretrained(model_path, device=args.device, torch_dtype=args.dtype, compile=args.compile)
    wm.sampler.config = _sampler(args, wm.sampler.config)
    if args.image:
        from PIL import Image, UnidentifiedImageError

        try:
            image = np.asarray(Image.open(args.image).convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"--image {args.image}: cannot read it as an image ({e})") from None
    else:
        image = demo_image(64, 64, seed=args.seed)
    world = wm.reset(image, args.instruction, args.embodiment, seed=args.seed, chunk_size=args.chunk_size)
    frames = [world.last_frame[None]]
    cfg = wm.sampler.config
    print(f"{args.chunks} chunks of {world.chunk_size} actions, {world.embodiment.name}, sampler {cfg.solver} "
          f"{cfg.num_steps} steps, guidance {cfg.guidance_scale}")  # fmt: skip
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


def _add_rollout(sub) -> None:
    r = sub.add_parser("rollout", help="roll a world forward chunk by chunk and write the video",
                       formatter_class=HelpFormatter)  # fmt: skip
    r.add_argument("--model", help="bundle directory or hub repo id (unset: the project's default model)")
    r.add_argument("--image", help="start frame (unset: a synthetic scene)")
    r.add_argument("--instruction", default="pick up the red block and place it in the bowl", help="the task")
    r.add_argument("--embodiment", default=None, help="embodiment name (unset: the model's)")
    r.add_argument("--chunks", type=int, default=8, help="chunks to imagine")
    r.add_argument("--chunk-size", type=int, default=None, help="actions per chunk (unset: the model's)")
    r.add_argument(
        "--policy",
        choices=["scripted", "model"],
        default="scripted",
        help="scripted smooth actions (forward dynamics) or the model's own actions (policy mode)",
    )
    r.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (unset: the model's)")
    r.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (unset: the model's)")
    r.add_argument("--solver", choices=["unipc", "euler"], default=None, help="ODE solver (unset: the model's)")
    r.add_argument("--seed", type=int, default=0, help="the world's noise (and the synthetic scene)")
    r.add_argument("--device", default=None, help="e.g. cuda (unset: cpu)")
    r.add_argument("--dtype", default=None, help="generator dtype, e.g. bfloat16 (unset: float32)")
    r.add_argument("--compile", action="store_true", help="torch.compile the generator (slow first chunk)")
    r.add_argument("--fps", type=float, default=None, help="video fps (unset: the embodiment's control rate)")
    r.add_argument("--out", default="rollout.mp4", help="video to write")
    r.set_defaults(func=_rollout)


def _add_build_tiny(sub) -> None:
    b = sub.add_parser("build-tiny", help="write a tiny random-weight bundle in the published layout",
                       formatter_class=HelpFormatter)  # fmt: skip
    b.add_argument("directory", help="where to write the bundle")
    b.add_argument("--codec", choices=["space_to_depth", "wan"], default="space_to_depth", help="the bundle's codec")
    b.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    b.set_defaults(func=_build_tiny)


def _add_training(sub) -> None:
    from .training.commands import add_collect, add_train

    add_collect(sub, HelpFormatter)
    add_train(sub, HelpFormatter)


# Each subcommand registers itself here.
COMMANDS = [_add_rollout, _add_build_tiny, _add_training]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos3-world", description="Cosmos3 world model as a robot simulator.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, KeyError, FileNotFoundError) as e:  # user mistakes: one line, no traceback
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"cosmos3-world {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
