"""Does a small generator learn to read its actions? A quick probe of an action featurisation on a dataset.

Trains a 2-layer, 192-wide generator in forward mode only, with one history frame, so the motion in the chunk
cannot be known without the actions. Every `--eval-every` steps it prints the PSNR of the moving latents (those
that change against the history frame) predicted in one step from pure noise, with each window's own actions and
with another window's; the gap between the two is how much the model reads its actions.

    python bench/action_probe.py --data DIR --held DIR [--features fourier|rotary|none] [--target-positions]
        [--steps 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cosmos3_world.training import FORWARD, EpisodeStore, TrainConfig, Trainer, WindowSampler
from cosmos3_world.training.trainer import MOTION_THRESHOLD

PROBE_MODEL = dict(
    hidden_size=192, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=6, head_dim=32,
    intermediate_size=256, rope_axes_dim=[6, 5, 5], rope_theta=10.0, vocab_size=640, latent_channel=48,
    latent_patch_size=2, patch_latent_dim=192, action_gen=True, action_dim=32, num_embodiment_domains=32,
)  # fmt: skip
CHUNK = 4


def held_out_windows(directory: str, count: int, seed: int = 123) -> list:
    """`count` forward windows (1 history frame + a chunk) from distinct held-out episodes, at random starts."""
    held = EpisodeStore([directory], max_episodes=4 * count, progress=False)
    rng = np.random.default_rng(seed)
    wins = []
    for ep in range(len(held.lengths)):
        if held.lengths[ep] >= CHUNK + 1 and len(wins) < count:
            wins.append(held.window(ep, int(rng.integers(held.lengths[ep] - CHUNK + 1)), 1, CHUNK, FORWARD))
    if len(wins) < count:
        raise ValueError(f"--held {directory} has {len(wins)} episodes of >= {CHUNK + 1} steps, need {count}")
    return wins


class Probe:
    """Moving-latent PSNR at sigma 1 of a trainer's EMA model on fixed held-out windows and noise."""

    def __init__(self, trainer: Trainer, windows: list):
        self.trainer, self.windows = trainer, windows
        self.ids = [trainer.prompt_ids(w.instruction, len(w.frames)) for w in windows]
        self.x0 = trainer.encode_frames([w.frames for w in windows])  # [C, 1 + CHUNK, h, w] each
        g = torch.Generator().manual_seed(0)
        self.noise = [torch.randn(z.shape, generator=g) for z in self.x0]

    @torch.no_grad()
    def psnr(self, order: list[int]) -> float:
        """PSNR of the moving latents when window i is given the actions of window order[i]."""
        tr, gen = self.trainer, self.trainer.ema
        actions = tr.clean_actions([self.windows[j] for j in order], gen.config.action_dim)
        vision = [torch.cat([z[:, :1], n[:, 1:]], 1) for z, n in zip(self.x0, self.noise)]
        out = tr.velocity(gen, self.windows, self.ids, vision, actions, torch.full((len(vision),), 1000.0))
        se, count = 0.0, 0
        for z, n, v in zip(self.x0, self.noise, out.sample):
            pred = n[:, 1:] - v[:, 1:].float()  # x0 = noise - velocity at sigma 1
            moved = (z[:, 1:] - z[:, :1]).abs().amax(0) > MOTION_THRESHOLD  # [CHUNK, h, w]
            err = (pred - z[:, 1:]).pow(2).sum(0)  # [CHUNK, h, w]
            se += float(err[moved].sum())
            count += int(moved.sum()) * z.shape[0]
        return 10 * np.log10(4.0 / (se / max(count, 1)))  # latents span about [-1, 1]

    def report(self) -> tuple[float, float]:
        n = len(self.windows)
        return self.psnr(list(range(n))), self.psnr([(i + 7) % n for i in range(n)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, nargs="+", help="training episode directories (cosmos3-world collect)")
    p.add_argument("--held", required=True, help="a held-out episode directory")
    p.add_argument("--features", choices=("fourier", "rotary", "none"), default="fourier",
                   help="Fourier features of the targets (3 octaves), their rotary phases, or raw targets")  # fmt: skip
    p.add_argument("--target-positions", action="store_true", help="clean action tokens sit where they point")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--windows", type=int, default=32, help="held-out windows probed")
    p.add_argument("--max-episodes", type=int, default=800, help="training episodes loaded")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="run directory for the probe's base bundle")
    args = p.parse_args()
    cfg = TrainConfig(
        data=args.data, run_dir=args.out, model=PROBE_MODEL, batch_size=16, history=1, history_probs=(1.0,),
        mode_probs=(1.0, 0.0, 0.0), motion_weight=5.0, qk_norm_init=1.7, total_steps=args.steps, warmup_steps=50,
        threads=args.threads, max_episodes=args.max_episodes,
        action_fourier_octaves=3 if args.features == "fourier" else 0,
        action_rotary_features=args.features == "rotary", action_target_positions=args.target_positions,
    )  # fmt: skip
    trainer = Trainer(cfg)
    store = EpisodeStore(cfg.data, max_episodes=cfg.max_episodes, progress=False)
    sampler = WindowSampler(store, chunk=CHUNK, history_probs=(1.0,), mode_probs=(1.0, 0.0, 0.0))
    probe = Probe(trainer, held_out_windows(args.held, args.windows))
    print(f"{'step':>6} {'loss':>8} {'own actions':>12} {'other':>8} {'gap dB':>7}")
    t0 = time.time()
    while trainer.step < args.steps:
        stats = trainer.train_step(sampler)
        if trainer.step % args.eval_every == 0:
            own, other = probe.report()
            print(f"{trainer.step:6d} {stats['loss']:8.4f} {own:12.2f} {other:8.2f} {own - other:7.2f}"
                  f"   ({time.time() - t0:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
