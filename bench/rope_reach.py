"""How sharply one attention head can copy a context frame, given the rotary settings and qk-norm.

With qk-norm a head's query and key have a fixed norm (sqrt(head_dim) * g, g the RMSNorm weight), so what a head
can do with position alone is set by how it spreads that norm over the rotary slots. For a query and the 8x8 token
grid of a context frame, this finds the spread that puts the most attention on the key at the query's own place
(aligned q and k per slot, content ignored): the largest same-place mass, the softmax over the frame's other
offsets, is min over spreads of log-sum-exp of minus the logit gaps, a convex problem solved by exponentiated
gradient. It bounds position alone with one norm weight for all dims: per-dimension weights and content (what
earlier layers wrote into the query) can add to it, other frames and the prompt take mass away.

    python bench/rope_reach.py [--g 1.5] [--grid 8]
"""

from __future__ import annotations

import argparse

import torch

from cosmos3_world.model.rope import MultimodalRotary

AXES_DIM = {32: [6, 5, 5], 64: [12, 10, 10]}  # (t, h, w) slots per head_dim: the published 24:20:20 split


def same_place_mass(theta: float, head_dim: int, g: float, grid: int, iters: int = 3000) -> tuple[float, float]:
    """(largest same-place attention mass, fastest spatial rotation in rad per token) of one head."""
    rope = MultimodalRotary(head_dim, theta, AXES_DIM[head_dim])
    freq, axis = rope.spatial_slots()  # slots on h or w; t slots cannot separate places in one frame
    freq = freq.double()  # [S] rad per token
    offsets = torch.tensor([(dh, dw) for dh in range(1 - grid, grid) for dw in range(1 - grid, grid) if dh or dw])
    delta = torch.where(axis[None] == 1, offsets[:, :1], offsets[:, 1:]).double()  # [K, S] along the slot axis
    # Logit gap to offset k: sum_s e_s (1 - cos(freq_s * delta_ks)) / sqrt(d), e the per-slot |q||k| (sum d g^2).
    gap = (1 - torch.cos(freq[None] * delta)) * head_dim * g**2 / head_dim**0.5  # [K, S] per unit share
    w = torch.full((len(freq),), 1.0 / len(freq), dtype=torch.float64)
    for _ in range(iters):
        z = -(gap @ w)  # [K]
        p = torch.softmax(z, 0)
        w = w * torch.exp(0.05 * (p @ gap))  # descend log-sum-exp(-gap @ w) on the simplex
        w = w / w.sum()
    mass = 1.0 / (1.0 + torch.exp(-(gap @ w)).sum())
    return float(mass), float(freq.max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--g", type=float, default=1.5, help="q/k RMSNorm weight")
    p.add_argument("--grid", type=int, default=8, help="tokens per side of a frame")
    args = p.parse_args()
    print(f"one head's largest attention on the same place in a {args.grid}x{args.grid} context frame, g = {args.g}")
    print(f"  {'rope_theta':>10s} {'head_dim':>8s} {'fastest h/w (rad/token)':>24s} {'same-place mass':>16s}")
    for theta in (5e6, 10.0, 1.0, 0.5, 0.3, 0.1):
        for d in (32, 64):
            mass, fastest = same_place_mass(theta, d, args.g, args.grid)
            print(f"  {theta:>10g} {d:>8d} {fastest:>24.2f} {mass:>16.2f}")


if __name__ == "__main__":
    main()
