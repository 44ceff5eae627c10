"""Configuration of an embedded-world training run (no heavy imports: the CLI builds its parser from this)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

# The embedded world's generator: 5.3M parameters (21 MB in float32: export it in bfloat16 to ship under 20 MB),
# 64 tokens per 64x64 frame (16x16x48 latents, 2x2 patches). The width must exceed the 192-dim patch: the velocity
# at a noisy token carries the token's noise, which a narrower model (e.g. 4x4 patches = 768 dims into 192) cannot
# pass through, so it never denoises.
# rope_theta 10, not the published 5e6: with head_dim 32 the w axis's fastest rotary frequency would be 5e6^(-1/8)
# = 0.15 rad per token (0.75 with theta 10), too slow for attention to find the same place in a context frame of an
# 8x8 token grid; the 5e6 run never learned to copy its context (13 dB against copy-last-frame's 22).
# 8 key/value heads: a context token's 192-dim patch crosses attention through kv_heads x head_dim dims per
# layer, and 2 x 32 (4.5M parameters) gave blurry, striped copies.
EMBEDDED_MODEL_CONFIG: dict[str, Any] = dict(
    hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8, head_dim=32,
    intermediate_size=384, rope_axes_dim=[6, 5, 5], rope_theta=10.0, vocab_size=640, latent_channel=48,
    latent_patch_size=2, patch_latent_dim=192, action_gen=True, action_dim=16, num_embodiment_domains=32,
)  # fmt: skip

EMBODIMENT = "pusht"
POLICY_DATA = ("success", "all")  # the episodes policy-mode windows are drawn from (TrainConfig.policy_data)
TRAIN_SIGMAS = ("logit_normal", "sampler")  # how a training window's noise level is drawn (TrainConfig.train_sigmas)
# The model_index.json entry holding a bundle's rollout defaults (read by the engine: world.BUNDLE_DEFAULTS_KEY).
DEFAULTS_KEY = "_cosmos3_world"


@dataclass
class TrainConfig:
    """Everything a run needs; saved with each checkpoint."""

    data: list[str] = field(default_factory=list)  # dataset directories (sim.dataset format)
    run_dir: str = "runs/world"
    model: dict[str, Any] = field(default_factory=lambda: dict(EMBEDDED_MODEL_CONFIG))
    batch_size: int = 16
    chunk_size: int = 4  # new frames (= actions) per chunk, as World.chunk_size
    history: int = 2  # latent frames of context, as World.history
    history_probs: tuple[float, ...] = (0.3, 0.7)  # P(k history latent frames), k = 1 .. history
    mode_probs: tuple[float, float, float] = (0.5, 0.25, 0.25)  # forward, policy, inverse
    policy_data: str = "success"  # episodes policy-mode windows come from: "success" (behaviour cloning of the
    # demonstrations that reach the goal) or "all" (random and wrong-goal policies too)
    uncond_prob: float = 0.15  # instruction replaced by the negative prompt (for classifier-free guidance)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    total_steps: int = 3000  # cosine schedule length; training stops here
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    sigma_shift: float = 3.0  # sigma = shift u / (1 + (shift - 1) u), u logit-normal: weights the noisy end
    train_sigmas: str = "logit_normal"  # "sampler": each window's sigma is one of the sigmas the bundle's default
    # sampler evaluates (2 Euler steps: 1.0 and 0.834), so a few-step world spends all its training where it is used
    action_weight: float = 1.0
    context_noise: float = 0.0  # max std of Gaussian noise added to the clean history frames (forward / policy
    # windows, std ~ U(0, context_noise) per window): later chunks condition on the model's own imperfect frames
    motion_weight: float = 0.0  # extra loss weight on the latent tokens of noisy frames that differ from the last
    # history frame (the agent and block are ~8% of the tokens, and an unweighted loss lets a small model erase them;
    # the logged vision loss includes the weights)
    action_rotary_features: bool = False  # the target position's rotary phases in the clean actions' padding
    # (engine.embodiments.rotary_action_features): attention can then find the token an action points at
    action_target_positions: bool = False  # clean action tokens sit where their targets point
    # (engine.embodiments.action_token_positions), so attention reaches them from there as a same-place copy does
    self_forcing: float = 0.0  # probability that a forward / policy window's history frames are the model's own:
    # the chunk ending at its last history frame, imagined from the recorded frames before it with the bundle's
    # default sampler (as a rollout's later chunks are), so the model learns to recover from its own drift
    action_fourier_octaves: int = 0  # Fourier features of the clean actions (engine.embodiments.action_features)
    qk_norm_init: float = 1.0  # initial weight g of the generation pathway's query/key RMSNorms. With qk-norm,
    # head_dim 32 and rope_theta 10 (fastest h / w rotations 0.87 / 0.75 rad per token), a head's logit gap between
    # the key at its own place and a neighbour's is at most ~2 g^2, ~g^2 when it finds both h and w, so at g ~ 1 a
    # copy of a context frame spreads over the 3x3 neighbourhood. g is shared by a layer's heads and training pulls
    # it down, not up. 1.7 learns faster per step; a sharper copy alone did not remove the static error (README).
    bf16: bool | None = None  # bfloat16 autocast on CPU; None: where the CPU has native bf16 (kernels.native_bf16),
    # float32 elsewhere (emulated bf16 runs 12-14x slower than float32 on an AVX2 CPU: bench/train_step.py)
    train_understanding: bool = False  # False: the Reasoner pathway keeps its initial weights (a fixed random text
    # encoder whose K/V still tell the instructions apart); its prefixes are then encoded once (training it costs
    # 10-15% more per step: bench/train_step.py)
    understanding_lr_scale: float = 1.0  # the Reasoner pathway's lr over the schedule's (train_understanding; it
    # starts from random weights and must learn to single out the instruction's words)
    init_from: str | None = None  # a bundle this trainer exported (e.g. the shipped embedded world): a fresh run
    # starts from its transformer weights, model config and action features (`config_from_bundle`), not from noise
    seed: int = 0
    threads: int = 1  # on a 2-core machine: 2 threads alone run ~1.4x faster, but collapse ~10x next to another job
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    max_episodes: int | None = None
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall clock in this process

    def __post_init__(self) -> None:
        hp, mp = self.history_probs[: self.history], self.mode_probs
        if len(hp) < self.history or min(hp) < 0 or sum(hp) <= 0:
            raise ValueError(f"history_probs must hold {self.history} weights >= 0 (one per history length) with a "
                             f"positive sum, got {list(self.history_probs)}")  # fmt: skip
        if self.policy_data not in POLICY_DATA:
            raise ValueError(f"policy_data must be one of {POLICY_DATA}, got {self.policy_data!r}")
        if self.train_sigmas not in TRAIN_SIGMAS:
            raise ValueError(f"train_sigmas must be one of {TRAIN_SIGMAS}, got {self.train_sigmas!r}")
        if len(mp) != 3 or min(mp) < 0 or sum(mp) <= 0:
            raise ValueError(f"mode_probs must hold 3 weights >= 0 (forward, policy, inverse) with a positive sum, "
                             f"got {list(mp)}")  # fmt: skip
        if not self.understanding_lr_scale > 0:
            raise ValueError(f"understanding_lr_scale must be > 0, got {self.understanding_lr_scale}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) and k.endswith("probs") else v
                      for k, v in d.items() if k in known})  # fmt: skip


# Sampler settings written into exported bundles, chosen with `bench/fidelity.py --sweep` (PSNR after 5 chunks, run
# embedded4 at step 2850: Euler 1 step 20.53 dB, 2 steps 20.95, 4 steps 20.85, 8 steps 20.49; UniPC 4 / 8 steps
# 20.80 / 20.26; guidance 2 / 4 at 4 Euler steps 20.64 / 19.32). Re-run the sweep on the checkpoint that ships.
DEFAULT_SAMPLER: dict[str, Any] = {"num_steps": 2, "solver": "euler", "guidance_scale": 1.0}


def add_train_arguments(p: Any) -> None:
    d = TrainConfig()
    p.add_argument("--data", nargs="+", required=True, help="dataset directories written by `collect`")
    p.add_argument("--run-dir", default=d.run_dir, help="run directory (keep it outside git)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint")
    p.add_argument("--steps", type=int, default=d.total_steps, help="total optimizer steps (cosine schedule)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per step")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate")
    p.add_argument("--chunk-size", type=int, default=d.chunk_size, help="new frames (actions) per chunk")
    p.add_argument("--history", type=int, default=d.history, help="latent frames of context")
    p.add_argument("--history-probs", type=float, nargs="+", default=list(d.history_probs),
                   help="P(k history latent frames), k = 1 .. history (k = 1: motion only actions tell)")  # fmt: skip
    p.add_argument("--mode-probs", type=float, nargs=3, default=list(d.mode_probs),
                   help="weights of forward dynamics, policy mode and inverse dynamics windows")  # fmt: skip
    p.add_argument("--policy-data", choices=POLICY_DATA, default=d.policy_data,
                   help="episodes policy-mode windows come from: successful ones, or all")  # fmt: skip
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes, help="checkpoint + export period")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall clock")
    p.add_argument("--max-episodes", type=int, default=None, help="use at most this many episodes")
    p.add_argument("--context-noise", type=float, default=d.context_noise,
                   help="max std of noise on the history frames (robustness to the model's own frames)")  # fmt: skip
    p.add_argument("--motion-weight", type=float, default=d.motion_weight,
                   help="extra loss weight on tokens that move (differ from the last history frame)")  # fmt: skip
    p.add_argument("--action-rotary-features", action="store_true",
                   help="the clean actions carry their target's rotary phases (declared in the bundle)")  # fmt: skip
    p.add_argument("--action-target-positions", action="store_true",
                   help="clean action tokens sit where their targets point (declared in the bundle)")  # fmt: skip
    p.add_argument("--self-forcing", type=float, default=d.self_forcing,
                   help="probability of conditioning a window on the model's own imagined history frames")  # fmt: skip
    p.add_argument("--action-fourier-octaves", type=int, default=d.action_fourier_octaves,
                   help="octaves of Fourier features of the clean actions (declared in the bundle)")  # fmt: skip
    p.add_argument("--qk-norm-init", type=float, default=d.qk_norm_init,
                   help="initial weight of the generation query/key RMSNorms (a fresh run's base)")  # fmt: skip
    p.add_argument("--init-from", default=None,
                   help="start a fresh run from an exported bundle (e.g. the shipped embedded world)")  # fmt: skip
    p.add_argument("--train-sigmas", choices=TRAIN_SIGMAS, default=d.train_sigmas,
                   help="noise levels trained: logit-normal, or only those the default sampler evaluates")  # fmt: skip
    p.add_argument("--action-weight", type=float, default=d.action_weight,
                   help="loss weight of the noisy actions (policy windows) against the video's")  # fmt: skip
    p.add_argument("--train-understanding", action="store_true",
                   help="train the Reasoner pathway too (10-15%% slower): it learns to read instructions")  # fmt: skip
    p.add_argument("--understanding-lr-scale", type=float, default=d.understanding_lr_scale,
                   help="the Reasoner pathway's lr over the schedule's (with --train-understanding)")  # fmt: skip
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: where the CPU has native bf16, else float32)")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="init, batch and noise seed")
    p.add_argument("--model", type=json.loads, default=None, help="generator config overrides as JSON")


def config_from_args(args: Any) -> TrainConfig:
    """A TrainConfig from parsed `add_train_arguments` flags."""
    model = {**EMBEDDED_MODEL_CONFIG, **(args.model or {})}
    return TrainConfig(
        data=list(args.data), run_dir=str(args.run_dir), model=model, batch_size=args.batch_size, lr=args.lr,
        chunk_size=args.chunk_size, history=args.history, history_probs=tuple(args.history_probs),
        mode_probs=tuple(args.mode_probs), policy_data=args.policy_data, total_steps=args.steps, threads=args.threads,
        checkpoint_minutes=args.checkpoint_minutes, max_minutes=args.max_minutes, max_episodes=args.max_episodes,
        bf16=args.bf16, seed=args.seed, context_noise=args.context_noise,
        motion_weight=args.motion_weight, action_fourier_octaves=args.action_fourier_octaves,
        qk_norm_init=args.qk_norm_init, self_forcing=args.self_forcing,
        action_rotary_features=args.action_rotary_features, action_target_positions=args.action_target_positions,
        init_from=args.init_from, train_sigmas=args.train_sigmas, action_weight=args.action_weight,
        train_understanding=args.train_understanding, understanding_lr_scale=args.understanding_lr_scale,
    )  # fmt: skip
