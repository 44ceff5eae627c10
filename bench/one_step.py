"""One-step probe of a training run: the generator's sigma = 1 prediction (its conditional mean of the next chunk)
on held-out push episodes, in seconds rather than the minutes of a rollout report.

For forward-dynamics windows (2 history frames, 4 new frames) it prints the PSNR of x0_hat = noise - v against the
true frames, over all latents, over the latents that move (differ from the last history frame by more than the
motion weight's threshold; the weight itself marks their whole tokens) and over the static rest, next to
copy-last-frame and to the same prediction with another window's actions (does the model read the actions?).
The static rest is split into latents near what moves (within 2 tokens: blur from not knowing where it goes) and
far from it (an imprecise copy). `--draws K` averages x0_hat over K noise draws: at sigma = 1 the noise carries no
information, so what averaging removes is noise the velocity failed to pass through, and what stays is systematic.
With `--attention` it also prints where the new frames' vision tokens attend, per layer: the same place in the last
history frame (a copy), its 3x3 neighbourhood, the last and first history frames, the new frames, the actions and the
prompt (the mass per query, the best head and the mean over heads), and how many heads copy.

    python bench/one_step.py --run-dir runs/world [--raw] [--windows 16] [--draws 1] [--attention]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import cosmos3_world.model.plan as plan
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
    p.add_argument("--draws", type=int, default=1, help="noise draws x0_hat is averaged over")
    p.add_argument("--attention", action="store_true", help="also print where the new frames attend, per layer")
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
    if args.draws < 1:
        raise SystemExit(f"--draws must be >= 1, got {args.draws}")

    def noised(draw: int) -> list[torch.Tensor]:  # history clean, new frames noise
        gens = [torch.Generator().manual_seed(i + 1000 * draw) for i in range(len(x0))]
        return [torch.cat([z[:, :2], torch.randn(z.shape, generator=g)[:, 2:]], dim=1) for z, g in zip(x0, gens)]

    vision = noised(0)

    def predict(actions: list[torch.Tensor]) -> list[torch.Tensor]:
        total = [torch.zeros_like(z[:, 2:]) for z in x0]
        for draw in range(args.draws):
            inputs = vision if draw == 0 else noised(draw)
            with torch.no_grad():
                out = tr.velocity(gen, wins, ids, inputs, actions, torch.full((len(wins),), 1000.0))
            total = [t + v[:, 2:] - out.sample[i][:, 2:].float() for i, (t, v) in enumerate(zip(total, inputs))]
        return [(t / args.draws).clamp(-1, 1) for t in total]

    model, rolled = predict(acts), predict(acts[1:] + acts[:1])
    true = [z[:, 2:] for z in x0]
    copy = [z[:, 1:2].expand_as(t) for z, t in zip(x0, true)]
    moved = [((t - c).abs().amax(0, keepdim=True) > MOTION_THRESHOLD).expand_as(t) for t, c in zip(true, copy)]
    static = [~m for m in moved]
    # near: static latents within 2 tokens (4 latents at 2x2 patches) of a latent that moves in any new frame
    near = [F.max_pool2d(m[:1].any(1).float()[None], 9, stride=1, padding=4)[0, 0].bool().expand_as(m) & ~m
            for m in moved]  # fmt: skip
    far = [s & ~n for s, n in zip(static, near)]

    def mse(pred: list[torch.Tensor], where: list[torch.Tensor] | None = None) -> float:
        if where is None:
            return float(np.mean([float((x - t).pow(2).mean()) for x, t in zip(pred, true)]))
        return float(np.mean([float((x - t)[m].pow(2).mean()) for x, t, m in zip(pred, true, where)]))

    print(f"{run.name} {'raw' if args.raw else 'ema'} step {tr.step}, {len(wins)} held-out windows, sigma = 1, "
          f"x0_hat over {args.draws} noise draw(s):")  # fmt: skip
    print("  PSNR (dB)      model   copy-last   other actions")
    rows = (("all latents", None), ("moving", moved), ("static", static), ("  near motion", near), ("  far", far))
    for name, where in rows:
        print(f"  {name:12s} {db(mse(model, where)):7.2f} {db(mse(copy, where)):11.2f} {db(mse(rolled, where)):15.2f}")
    change = np.mean([float((a - b).abs().mean()) for a, b in zip(model, rolled)])
    print(f"  mean |x0_hat(actions) - x0_hat(other actions)| = {change:.4f}")
    if args.attention:
        attention_report(tr, gen, wins, ids, vision, acts)


def attention_report(tr: Trainer, gen, wins: list[Window], ids, vision: list[torch.Tensor], acts) -> None:
    """Attention mass of the new frames' vision queries at sigma = 1, per layer, by what they attend to.

    The generator runs its own attention kernel; the probe only records softmax(q k^T / sqrt(D)) beside it. It reads
    the push layout: vision tokens (2 history + new frames), then the actions, no sound.
    """
    probs: list[torch.Tensor] = []
    kernel = plan.attention

    def recording(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # q [B, M, D], k/v [B, L, D]
        probs.append(torch.softmax(q.float() @ k.float().transpose(1, 2) * q.shape[-1] ** -0.5, dim=-1))  # [B, M, L]
        return kernel(q, k, v)

    t, patch = vision[0].shape[1], gen.config.latent_patch_size
    hh, ww = vision[0].shape[2] // patch, vision[0].shape[3] // patch
    di = (torch.arange(hh)[:, None, None, None] - torch.arange(hh)[None, None, :, None]).abs()
    dj = (torch.arange(ww)[None, :, None, None] - torch.arange(ww)[None, None, None, :]).abs()
    same, near = (di == 0) & (dj == 0), (di <= 1) & (dj <= 1)  # [h, w, h, w]: query place x key place
    names = ("same@last", "3x3@last", "last", "first", "new", "actions", "prompt")
    mass: dict[int, list[torch.Tensor]] = {}  # layer -> per window [heads, 7]
    plan.attention = recording
    try:
        for w, i, v_in, a in zip(wins, ids, vision, acts):
            probs.clear()
            with torch.no_grad():
                tr.velocity(gen, [w], [i], [v_in], [a], torch.full((1,), 1000.0))
            nv, na = t * hh * ww, len(w.actions)
            for layer, p in enumerate(probs):  # [kv_heads, group * (nv + na), L]: queries grouped per K/V head
                pre = p.shape[-1] - nv - na
                q = p.reshape(-1, nv + na, p.shape[-1])[:, :nv].reshape(-1, t, hh, ww, p.shape[-1])[:, 2:]
                vis = q[..., pre : pre + nv].reshape(*q.shape[:4], t, hh, ww)  # [heads, new, h, w, t, h, w]
                last = vis[..., 1, :, :]
                row = torch.stack([(last * same).sum((-1, -2)), (last * near).sum((-1, -2)), last.sum((-1, -2)),
                                   vis[..., 0, :, :].sum((-1, -2)), vis[..., 2:, :, :].sum((-1, -2, -3)),
                                   q[..., pre + nv :].sum(-1), q[..., :pre].sum(-1)], dim=-1)  # fmt: skip
                mass.setdefault(layer, []).append(row.mean((1, 2, 3)))  # [heads, 7]
    finally:
        plan.attention = kernel
    print("  attention of the new frames' vision tokens (mass per query; best head / mean over heads; copy heads:")
    print("  how many put >= 0.5 on the same place, each carrying head_dim of a patch's dims):")
    for layer, rows in mass.items():
        m = torch.stack(rows).mean(0)  # [heads, 7]
        print(f"  layer {layer}: " + "  ".join(f"{nm} {float(m[:, k].max()):.2f}/{float(m[:, k].mean()):.2f}"
                                             for k, nm in enumerate(names))
              + f"  copy heads {int((m[:, 0] >= 0.5).sum())}/{len(m)}")  # fmt: skip


if __name__ == "__main__":
    main()
