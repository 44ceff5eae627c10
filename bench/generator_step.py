"""One CFG denoising step (cond + uncond): diffusers' reference transformer vs our cached, batched generator.

Same random weights, same inputs, side by side in one run, float32 and bfloat16. Prints medians,
the ratio ours/reference, and our achieved GFLOP/s against a matmul peak measured here for that dtype.
Goal (issue 2): ours <= 0.4x the reference's time in both dtypes.

    python bench/generator_step.py [--repeats 7] [--uncond-len 256] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cosmos3_world import Cosmos3Config, Cosmos3Generator, GenerationSpec, PrefixCache
from cosmos3_world.kernels import onednn_linear
from cosmos3_world.testing.reference import randomize_, reference_inputs

CONFIG = dict(
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=1536,
    vocab_size=151936,
    latent_channel=48,
    latent_patch_size=2,
    patch_latent_dim=192,
    action_gen=True,
    action_dim=32,
    num_embodiment_domains=32,
    rope_axes_dim=[12, 10, 10],
)
PROMPT_LEN, LATENT, CLEAN, ACTIONS, DOMAIN, T = 256, (4, 16, 16), [0], 12, 8, 500.0


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_medians(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median times of a and b, measured alternately so that both see the same machine state."""
    fn_a(), fn_b()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, ta), (fn_b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def matmul_peak(dtype: torch.dtype) -> float:
    """Best of torch.matmul (MKL for float32) and oneDNN, which is ~2x faster in float32 on AMD CPUs."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    t = min(median_time(lambda: a @ b, 5), median_time(lambda: onednn_linear(a, b), 5))
    return 2 * 2048**3 / t / 1e9


def step_flops(cfg: dict, gen_tokens: int, prefix_lens: list[int]) -> float:
    """Matmul FLOPs of our batched generation pass (projections, MLP, attention, heads)."""
    h, hd, nq, nkv, inter = (
        cfg[k] for k in ("hidden_size", "head_dim", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    )
    n = gen_tokens * len(prefix_lens)
    proj = 2 * n * h * (2 * nq * hd + 2 * nkv * hd)
    mlp = 2 * n * h * inter * 3
    attn = sum(4 * gen_tokens * (L + gen_tokens) * nq * hd for L in prefix_lens)
    heads = 2 * n * cfg["patch_latent_dim"] * h * 2
    return cfg["num_hidden_layers"] * (proj + mlp + attn) + heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--uncond-len", type=int, default=PROMPT_LEN, help="negative-prompt length in tokens")
    parser.add_argument("--compile", action="store_true", help="time ours after compile_generation()")
    args = parser.parse_args()
    torch.manual_seed(0)
    from diffusers import Cosmos3OmniTransformer

    ref32 = Cosmos3OmniTransformer(**CONFIG).eval()
    randomize_(ref32, seed=0)
    ours32 = Cosmos3Generator(Cosmos3Config.from_dict(CONFIG)).eval()
    ours32.load_state_dict(ref32.state_dict(), strict=True)

    g = torch.Generator().manual_seed(1)
    cond_ids = torch.randint(0, CONFIG["vocab_size"], (PROMPT_LEN,), generator=g).tolist()
    uncond_ids = torch.randint(0, CONFIG["vocab_size"], (args.uncond_len,), generator=g).tolist()
    vision = torch.randn(CONFIG["latent_channel"], *LATENT, generator=g)
    action = torch.randn(ACTIONS, CONFIG["action_dim"], generator=g)
    gen_tokens = LATENT[0] * (LATENT[1] // 2) * (LATENT[2] // 2) + ACTIONS
    peak = {}
    print(
        f"config: {CONFIG}\nprompt {PROMPT_LEN} / negative {args.uncond_len} tokens, latent {LATENT} "
        f"({len(CLEAN)} clean), {ACTIONS} action tokens -> {gen_tokens} generation tokens per pass; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'dtype':>9} | {'reference':>10} | {'ours':>9} | {'ratio':>6} | {'ours GFLOP/s':>12} | {'peak':>7}")
    for dtype in (torch.float32, torch.bfloat16):
        ref = ref32.to(dtype) if dtype == torch.float32 else Cosmos3OmniTransformer(**CONFIG).eval()
        if dtype != torch.float32:
            ref.load_state_dict(ref32.state_dict())
            ref = ref.to(dtype)
            ref.time_embedder.to(torch.float32)  # diffusers keeps it in float32 when loading in bf16
        ours = Cosmos3Generator(Cosmos3Config.from_dict(CONFIG)).eval()
        ours.load_state_dict(ref32.state_dict())
        ours.to(dtype)
        ours.time_embedder.to(torch.float32)
        if args.compile:
            ours.compile_generation()
        v, a = vision.to(dtype), action.to(dtype)
        kws = [reference_inputs(ref, ids, v, CLEAN, T, action=a, domain_id=DOMAIN) for ids in (cond_ids, uncond_ids)]

        @torch.no_grad()
        def reference_step():
            for kw in kws:
                ref(**kw)

        prefixes = PrefixCache(ours).get_many([cond_ids, uncond_ids])
        specs = [
            GenerationSpec(
                prefix=p,
                vision_shape=LATENT,
                vision_noisy=(1, 2, 3),
                action_len=ACTIONS,
                action_noisy=tuple(range(ACTIONS)),
                domain_id=DOMAIN,
            )
            for p in prefixes
        ]
        plan = ours.plan(specs)

        def our_step():
            ours.denoise_step(plan, [v, v], T, action=[a, a])

        if args.compile:
            start = time.perf_counter()
            our_step()
            print(f"compiling ours ({dtype}): {time.perf_counter() - start:.1f}s")

        t_ref, t_ours = paired_medians(reference_step, our_step, args.repeats)
        peak[dtype] = matmul_peak(dtype)
        gflops = step_flops(CONFIG, gen_tokens, [PROMPT_LEN, args.uncond_len]) / t_ours / 1e9
        name = str(dtype).removeprefix("torch.")
        print(
            f"{name:>9} | {t_ref * 1e3:8.1f}ms | {t_ours * 1e3:7.1f}ms | {t_ours / t_ref:5.2f}x | "
            f"{gflops:12.0f} | {peak[dtype]:7.0f}"
        )


if __name__ == "__main__":
    main()
