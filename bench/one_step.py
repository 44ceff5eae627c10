"""One-step probe of a training run: the generator's sigma = 1 prediction (its conditional mean of the next chunk)
on held-out push episodes, in seconds rather than the minutes of a rollout report.

For forward-dynamics windows (2 history frames, 4 new frames) it prints the PSNR of x0_hat = noise - v against the
true frames, over all latents and over the latents that move (differ from the last history frame by more than the
motion weight's threshold; the weight itself marks their whole tokens), next to
copy-last-frame and to the same prediction with another window's actions (does the model read the actions?).

    python bench/one_step.py --run-dir runs/world [--raw] [--windows 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from cosmos3_world.policies.push_report import HELD_OUT_SEED, record
from cosmos3_world.training import FORWARD, TrainConfig, Trainer, Window
from cosmos3_world.training.trainer import MOTION_THRESHOLD


def db(mse: float) -> float:
    return float(10 * np.log10(4.0 / max(mse, 1e-12)))  # latents in [-1, 1]: peak-to-peak 2


def windows(n: int) -> list[Window]:
    """n forward windows (2 history frames + 4 new) from held-out episodes, one per episode, at chunk 2."""
    out = []
    for r in record([HELD_OUT_SEED + 50_000 + i for i in range(n)], chunks=3):
        actions = r.actions.reshape(-1, 2)  # [12, 2]: action j leads from frame j to j + 1
        out.append(Window(frames=r.frames[3:9], actions=actions[3:8], instruction=r.task, history=2, mode=FORWARD))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="a training run directory (with checkpoint/)")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    p.add_argument("--windows", type=int, default=16, help="held-out windows")
    args = p.parse_args()
    run = Path(args.run_dir)
    with tempfile.TemporaryDirectory() as tmp:  # a private copy: the run may checkpoint meanwhile
        shutil.copytree(run / "checkpoint", Path(tmp) / "checkpoint")
        (Path(tmp) / "base").symlink_to((run / "base").resolve())
        cfg = TrainConfig.from_dict({**json.loads((run / "config.json").read_text()), "run_dir": tmp})
        tr = Trainer(cfg)
        tr.load()
    gen = (tr.model if args.raw else tr.ema).eval()
    wins = windows(args.windows)
    x0 = tr.encode_frames([w.frames for w in wins])  # [C, 6, h, w] each
    ids = [tr.prompt_ids(w.instruction, len(w.frames)) for w in wins]
    acts = tr.clean_actions(wins, gen.config.action_dim)
    noise = [torch.randn(z.shape, generator=torch.Generator().manual_seed(i)) for i, z in enumerate(x0)]

    def predict(actions: list[torch.Tensor]) -> list[torch.Tensor]:
        vision = [torch.cat([z[:, :2], n[:, 2:]], dim=1) for z, n in zip(x0, noise)]
        with torch.no_grad():
            out = tr.velocity(gen, wins, ids, vision, actions, torch.full((len(wins),), 1000.0))
        return [(v[:, 2:] - out.sample[i][:, 2:].float()).clamp(-1, 1) for i, v in enumerate(vision)]

    model, rolled = predict(acts), predict(acts[1:] + acts[:1])
    true = [z[:, 2:] for z in x0]
    copy = [z[:, 1:2].expand_as(t) for z, t in zip(x0, true)]
    moved = [((t - c).abs().amax(0, keepdim=True) > MOTION_THRESHOLD).expand_as(t) for t, c in zip(true, copy)]

    def mse(pred: list[torch.Tensor], where: list[torch.Tensor] | None = None) -> float:
        if where is None:
            return float(np.mean([float((x - t).pow(2).mean()) for x, t in zip(pred, true)]))
        return float(np.mean([float((x - t)[m].pow(2).mean()) for x, t, m in zip(pred, true, moved)]))

    print(f"{run.name} {'raw' if args.raw else 'ema'} step {tr.step}, {len(wins)} held-out windows, sigma = 1:")
    print("  PSNR (dB)      model   copy-last   other actions")
    for name, where in (("all latents", None), ("moving", moved)):
        print(f"  {name:12s} {db(mse(model, where)):7.2f} {db(mse(copy, where)):11.2f} {db(mse(rolled, where)):15.2f}")
    change = np.mean([float((a - b).abs().mean()) for a, b in zip(model, rolled)])
    print(f"  mean |x0_hat(actions) - x0_hat(other actions)| = {change:.4f}")


if __name__ == "__main__":
    main()
