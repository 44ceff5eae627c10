"""The shipped test's figure for a training run or a bundle: PSNR over chunks 2-3 of 8 held-out episodes, model minus
copy-last-frame, and right minus shuffled actions, per episode too. A run is exported (EMA, bf16, as shipped) first.

    python bench/ship_check.py RUN_DIR_OR_BUNDLE [--episodes 8] [--chunks 3] [--threads 2]

--chunks 5 scores chunks 2-5 instead (the fidelity goal's horizon); the shipped test uses 3.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cosmos3_world.engine import WorldModel
from cosmos3_world.policies.push_report import later_chunk_gains
from cosmos3_world.training.trainer import export_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="a run directory (its latest checkpoint's EMA) or an exported bundle")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--chunks", type=int, default=3, help="score chunks 2 .. CHUNKS")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    src = Path(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        if (src / "checkpoint").is_dir():
            step = torch.load(src / "checkpoint" / "trainer_state.pt", weights_only=False)["step"]
            print(f"run {src} at step {step}")
            src = export_run(src, Path(tmp) / "bundle", dtype=torch.bfloat16)
        g = later_chunk_gains(WorldModel.from_pretrained(src), episodes=args.episodes, chunks=args.chunks)
    print(f"chunks 2-{args.chunks}, {args.episodes} episodes: model - copy {g['copy']:+.2f} dB; "
          f"right - shuffled {g['shuffled']:+.2f} dB")  # fmt: skip
    print("per episode model - copy: " + " ".join(f"{x:+.2f}" for x in g["per_episode"]))


if __name__ == "__main__":
    main()
