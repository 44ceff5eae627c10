"""Wan VAE decode: diffusers' ``AutoencoderKLWan.decode`` vs our whole-clip ``WanFastDecoder``.

Same random-weight VAE (``tiny_wan_vae_config()``, RMS gammas perturbed so they matter; weights
rounded to bfloat16 so float32 and bfloat16 runs share them), same latents, channels-last conv
weights as ``WanVAECodec`` sets them. For each dtype the two decoders run alternately, round
after round; prints per-decode medians, the speed-up, and the error of each against the float32
decode (max abs and relative L2).

    python bench/vae_decode.py [--rounds 9] [--shape 1 48 3 16 16] [--dtypes bf16 fp32] [--full]

``--full`` uses the published Wan 2.2 VAE's layout (base_dim 160, decoder_base_dim 256,
num_res_blocks 2; random weights): ~100x the work, so use few rounds and a small shape.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from diffusers import AutoencoderKLWan
from diffusers.utils import logging as diffusers_logging

from cosmos3_world.codecs import WanVAECodec
from cosmos3_world.testing import tiny_wan_vae_config

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def make_vae(full: bool, seed: int = 0) -> AutoencoderKLWan:
    config = tiny_wan_vae_config()
    if full:
        config.update(base_dim=160, decoder_base_dim=256, num_res_blocks=2)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**config).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.mul_(1 + 0.25 * torch.randn_like(p))
    return vae.to(torch.bfloat16).to(torch.float32)  # weights exactly representable in both dtypes


def errors(out: torch.Tensor, ref: torch.Tensor) -> str:
    diff = out.float() - ref
    return f"max {diff.abs().max().item():.2e} rel {(diff.norm() / ref.norm()).item():.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--shape", type=int, nargs=5, default=[1, 48, 3, 16, 16])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["bf16", "fp32"])
    parser.add_argument("--full", action="store_true", help="the published Wan 2.2 VAE's layout")
    args = parser.parse_args()
    diffusers_logging.set_verbosity_error()  # no "cast with to()" warnings for the dtype copies

    base = make_vae(args.full)
    z = torch.randn(*args.shape, generator=torch.Generator().manual_seed(0))
    print(f"latents {tuple(z.shape)}, {'full' if args.full else 'tiny'} Wan 2.2 VAE, {torch.get_num_threads()} threads")
    reference = None
    for name in sorted(args.dtypes, key=lambda n: n != "fp32"):  # float32 first: it is the reference
        dtype = DTYPES[name]
        codec = WanVAECodec(copy.deepcopy(base).to(dtype))
        vae, fast, zz = codec.vae, codec._fast_decoder, z.to(dtype)
        times: dict[str, list[float]] = {"diffusers": [], "ours": []}
        with torch.no_grad():
            for _ in range(args.rounds + 1):  # the first round warms up
                start = time.perf_counter()
                theirs = vae.decode(zz).sample
                times["diffusers"].append(time.perf_counter() - start)
                start = time.perf_counter()
                ours = fast(zz)
                times["ours"].append(time.perf_counter() - start)
        if reference is None:
            reference = theirs.float()
        t_theirs, t_ours = (statistics.median(times[k][1:]) for k in ("diffusers", "ours"))
        print(
            f"{name}: diffusers {t_theirs:.4f} s, ours {t_ours:.4f} s, speed-up {t_theirs / t_ours:.2f}x | "
            f"error vs fp32 diffusers: diffusers {errors(theirs, reference)}, ours {errors(ours, reference)}"
        )


if __name__ == "__main__":
    main()
