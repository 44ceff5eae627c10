"""The shipped test's figure for a training run or a bundle: PSNR over chunks 2-3 of 8 held-out episodes, model minus
copy-last-frame, and right minus shuffled actions, per episode too. A run is exported (EMA, bf16, as shipped) first.

    python bench/ship_check.py RUN_DIR_OR_BUNDLE [--episodes 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from cosmos3_world.engine import WorldModel
from cosmos3_world.policies.push_report import HELD_OUT_SEED, imagine, psnr, record
from cosmos3_world.training.trainer import export_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="a run directory (its latest checkpoint's EMA) or an exported bundle")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    src = Path(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        if (src / "checkpoint").is_dir():
            step = torch.load(src / "checkpoint" / "trainer_state.pt", weights_only=False)["step"]
            print(f"run {src} at step {step}")
            src = export_run(src, Path(tmp) / "bundle", dtype=torch.bfloat16)
        wm = WorldModel.from_pretrained(src)
        recs = record([HELD_OUT_SEED + i for i in range(args.episodes)], chunks=3)
        true = np.stack([r.frames[1:] for r in recs])  # [N, 12, H, W, 3]
        copy = np.repeat(np.stack([r.frames[:1] for r in recs]), true.shape[1], axis=1)
        model = imagine(wm, recs, [r.actions for r in recs])
        shuffled = imagine(wm, recs, [recs[(i + 1) % len(recs)].actions for i in range(len(recs))])
    later = slice(4, None)  # chunks 2-3
    per_ep = [psnr(model[i, later], true[i, later]) - psnr(copy[i, later], true[i, later]) for i in range(len(recs))]
    gain = psnr(model[:, later], true[:, later]) - psnr(copy[:, later], true[:, later])
    first4 = psnr(model[:4, later], true[:4, later]) - psnr(copy[:4, later], true[:4, later])
    follow = psnr(model[:, later], true[:, later]) - psnr(shuffled[:, later], true[:, later])
    print(f"chunks 2-3, {len(recs)} episodes: model - copy {gain:+.2f} dB (first 4: {first4:+.2f}); "
          f"right - shuffled {follow:+.2f} dB")  # fmt: skip
    print("per episode model - copy: " + " ".join(f"{g:+.2f}" for g in per_ep))


if __name__ == "__main__":
    main()
