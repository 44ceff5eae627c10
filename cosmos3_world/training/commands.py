"""`cosmos3-world collect` and `cosmos3-world train`: registered by `cosmos3_world.cli` (kept light: heavy imports
happen when a command runs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _collect(args: argparse.Namespace) -> int:
    from ..sim.dataset import DEFAULT_MIX, collect
    from ..sim.policies import scripted_learners
    from ..sim.push import MAX_CONTROL_STEPS
    from .data import dataset_summary

    mix = dict(DEFAULT_MIX)
    if args.mix:
        mix = {}
        for item in args.mix.split(","):
            name, _, weight = item.partition("=")
            mix[name.strip()] = float(weight or 1.0)
    learner, learner_name = None, args.learner
    scripted = scripted_learners(args.chunk_size, seed=args.seed)
    if args.learner in scripted and not Path(args.learner).is_dir():  # a scripted learner acts first, then the mix's
        learner = scripted[args.learner]
    elif args.learner:  # DAgger: a world model's policy mode (a bundle directory or repo id) acts first
        if args.make_learner is None:
            raise ValueError("--learner needs the CLI's learner factory (add_collect(make_learner=...))")
        if Path(args.learner).is_dir():
            learner_name = str(Path(args.learner).resolve())
        learner = args.make_learner(args.learner, chunk_size=args.chunk_size, seed=args.seed, threads=args.threads)
    start = time.time()
    steps = args.max_steps or MAX_CONTROL_STEPS
    collect(args.out, args.episodes, mix, seed=args.seed, chunk_size=args.chunk_size, max_steps=steps,
            learner=learner, learner_chunks=args.learner_chunks, learner_name=learner_name)  # fmt: skip
    s = dataset_summary([args.out])
    print(f"{s['episodes']} episodes, {s['steps']} steps, success {s['success_rate']:.0%} in "
          f"{time.time() - start:.0f} s -> {Path(args.out) / 'index.json'}")  # fmt: skip
    return 0


def _train(args: argparse.Namespace) -> int:
    from .trainer import run_from_args

    run_from_args(args)
    return 0


def add_collect(sub, formatter_class=argparse.ArgumentDefaultsHelpFormatter, make_learner=None) -> None:
    """`collect`; `make_learner(bundle, chunk_size=, seed=, threads=)` builds the --learner policy (given by the CLI,
    the layer above the policies: training does not import them)."""
    c = sub.add_parser("collect", help="record push-simulator episodes for training", formatter_class=formatter_class)
    c.add_argument("out", help="dataset directory (index.json + one .npz per episode)")
    c.add_argument("--episodes", type=int, default=3000, help="episodes to record")
    c.add_argument("--mix", default=None, help="policy weights, e.g. expert=0.5,random=0.5 (unset: the default mix)")
    c.add_argument("--seed", type=int, default=0, help="seed of policy choice, start states and policy noise")
    c.add_argument("--chunk-size", type=int, default=4, help="actions per policy call")
    c.add_argument("--max-steps", type=int, default=None,
                   help="control steps per episode at most (unset: sim.MAX_CONTROL_STEPS)")  # fmt: skip
    c.add_argument("--learner", default=None,
                   help="DAgger: a world-model bundle whose policy mode acts an episode's first chunks, or a "
                        "scripted learner: expert_other_goal (pushes toward another goal)")  # fmt: skip
    c.add_argument("--learner-chunks", type=int, default=4,
                   help="with --learner: the learner acts 1 .. this many chunks, then the mix's policy")  # fmt: skip
    c.add_argument("--threads", type=int, default=2, help="torch threads of the learner")
    c.set_defaults(func=_collect, make_learner=make_learner)


def add_train(sub, formatter_class=argparse.ArgumentDefaultsHelpFormatter) -> None:
    from .config import add_train_arguments

    t = sub.add_parser("train", help="train the embedded world on collected episodes (resumable)",
                       formatter_class=formatter_class)  # fmt: skip
    add_train_arguments(t)
    t.set_defaults(func=_train)
