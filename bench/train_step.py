"""Seconds per training step of the embedded world, autocast and Reasoner training side by side in one run.

    python bench/train_step.py [--steps 3] [--threads 2] [--self-forcing 0.3]

Prints float32 vs bf16 autocast (frozen Reasoner) and frozen vs trained Reasoner (float32), with their ratios, on
a small freshly collected dataset, starting from the shipped bundle. README figures (AVX2-only Zen 3 EPYC): bf16
30.5 s vs float32 2.2 s; Reasoner trained 3.0 vs frozen 2.6 s at self forcing 0.3.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cosmos3_world.envs.models import default_model_path
from cosmos3_world.kernels import native_bf16
from cosmos3_world.sim.dataset import collect
from cosmos3_world.training.config import TrainConfig
from cosmos3_world.training.data import EpisodeStore, WindowSampler
from cosmos3_world.training.trainer import Trainer


def seconds_per_step(root: Path, data: Path, steps: int, **kw) -> float:
    cfg = TrainConfig(data=[str(data)], run_dir=str(root / f"run{len(list(root.iterdir()))}"),
                      init_from=str(default_model_path()), train_sigmas="sampler", mode_probs=(0.55, 0.35, 0.1),
                      history_probs=(0.6, 0.4), **kw)  # fmt: skip
    trainer = Trainer(cfg)
    store = EpisodeStore(cfg.data, progress=False)
    sampler = WindowSampler(store, chunk=cfg.chunk_size, history_probs=cfg.history_probs, mode_probs=cfg.mode_probs)
    trainer.train_step(sampler)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(sampler)
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--self-forcing", type=float, default=0.3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        collect(root / "data", 60, seed=0, max_steps=40, progress=False)
        (root / "runs").mkdir()
        common = dict(threads=args.threads, self_forcing=args.self_forcing)
        t = {name: seconds_per_step(root / "runs", root / "data", args.steps, **common, **kw) for name, kw in (
            ("float32", dict(bf16=False)), ("bf16", dict(bf16=True)),
            ("float32, Reasoner trained", dict(bf16=False, train_understanding=True)))}  # fmt: skip
    print(f"native bf16 on this CPU: {native_bf16()}")
    for name, sec in t.items():
        print(f"  {name:28s} {sec:6.2f} s/step   {sec / t['float32']:5.2f}x float32")


if __name__ == "__main__":
    main()
