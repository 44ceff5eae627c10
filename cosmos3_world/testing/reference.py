"""The reference side of our parity checks: diffusers' transformer and pipeline with the same random
weights as ours, forward inputs packed by the reference pipeline's own segment builders, and the
relative error every test and benchmark compares with."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import Cosmos3OmniTransformer
from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import Cosmos3OmniPipeline

from ..model import Cosmos3Config, Cosmos3Generator
from .tiny import tiny_config


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b|| in float64 (0 when both are zero)."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    den = float(b.norm())
    return float((a - b).norm()) / den if den else float(a.norm())


def parity_config(**overrides) -> dict:
    """The tiny config shrunk further, with every modality on (sound and actions), for parity with diffusers."""
    return tiny_config(**{**PARITY_OVERRIDES, **overrides})


PARITY_OVERRIDES = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    intermediate_size=96, latent_channel=8, latent_patch_size=2, patch_latent_dim=32, vocab_size=512,
    rope_axes_dim=[4, 2, 2], rope_theta=10000.0, base_fps=24, enable_fps_modulation=True,
    unified_3d_mrope_temporal_modality_margin=15000, action_gen=True, action_dim=12,
    num_embodiment_domains=8, sound_gen=True, sound_dim=6, sound_latent_fps=25.0,
)  # fmt: skip


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Fill every parameter (norm weights and embeddings too) with random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)


def model_pair(seed: int = 0, **overrides) -> tuple[Cosmos3Generator, Cosmos3OmniTransformer]:
    cfg = parity_config(**overrides)
    ref = Cosmos3OmniTransformer(**cfg).eval()
    randomize_(ref, seed)
    ours = Cosmos3Generator(Cosmos3Config.from_dict(cfg)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def reference_inputs(
    ref: Cosmos3OmniTransformer,
    input_ids: list[int],
    vision: torch.Tensor,  # [C, T, H, W]
    cond_frames: list[int],
    timestep: float,
    fps: float = 24.0,
    sound: torch.Tensor | None = None,  # [C, T]
    action: torch.Tensor | None = None,  # [T, D]
    action_cond: list[int] = (),
    domain_id: int = 0,
) -> dict:
    """Forward kwargs exactly as the reference pipeline packs one sequence."""
    pipe = SimpleNamespace(transformer=ref, vae_scale_factor_temporal=4)
    P = Cosmos3OmniPipeline
    text = P._prepare_text_segment(pipe, input_ids, device="cpu")
    offset = text["vision_start_temporal_offset"]
    vis = P._prepare_vision_segment(
        pipe,
        vision[None],
        has_image_condition=bool(cond_frames),
        mrope_offset=offset,
        vision_fps=fps,
        curr=text["und_len"],
        device="cpu",
        condition_frame_indexes=list(cond_frames),
    )
    curr = text["und_len"] + vis["num_vision_tokens"]
    segs, mrope = {}, [text["text_mrope_ids"], vis["vision_mrope_ids"]]
    if sound is not None:
        snd = P._prepare_sound_segment(
            pipe, sound, mrope_offset=offset, sound_fps=ref.config.sound_latent_fps, curr=curr, device="cpu"
        )
        curr += snd["sound_len"]
        mrope.append(snd["sound_mrope_ids"])
        segs.update(snd)
    if action is not None:
        act = P._prepare_action_segment(
            pipe,
            action,
            condition_frame_indexes=list(action_cond),
            mrope_offset=offset,
            action_fps=fps,
            curr=curr,
            device="cpu",
        )
        curr += act["action_len"]
        mrope.append(act["action_mrope_ids"])
        segs.update(act)
    kw = dict(
        input_ids=text["input_ids"],
        text_indexes=text["text_indexes"],
        position_ids=torch.cat(mrope, dim=1),
        und_len=text["und_len"],
        sequence_length=curr,
        vision_tokens=[vision[None]],
        vision_token_shapes=vis["vision_token_shapes"],
        vision_sequence_indexes=vis["vision_sequence_indexes"],
        vision_mse_loss_indexes=vis["vision_mse_loss_indexes"],
        vision_timesteps=torch.full((vis["num_noisy_vision_tokens"],), float(timestep)),
        vision_noisy_frame_indexes=vis["vision_noisy_frame_indexes"],
    )
    if sound is not None:
        kw.update(
            sound_tokens=[sound],
            sound_token_shapes=segs["sound_token_shapes"],
            sound_sequence_indexes=segs["sound_sequence_indexes"],
            sound_mse_loss_indexes=segs["sound_mse_loss_indexes"],
            sound_timesteps=torch.full((segs["sound_len"],), float(timestep)),
            sound_noisy_frame_indexes=segs["sound_noisy_frame_indexes"],
        )
    if action is not None:
        kw.update(
            action_tokens=[action],
            action_token_shapes=segs["action_token_shapes"],
            action_sequence_indexes=segs["action_sequence_indexes"],
            action_mse_loss_indexes=segs["action_mse_loss_indexes"],
            action_timesteps=torch.full((segs["num_noisy_action_tokens"],), float(timestep)),
            action_noisy_frame_indexes=segs["action_noisy_frame_indexes"],
            action_domain_ids=[torch.tensor([domain_id])],
        )
    return kw


def reference_pipeline(bundle: str | Path):
    """diffusers' own `Cosmos3OmniPipeline` on a bundle with a Wan VAE (safety checker off, no
    progress bars): the oracle our world engine is checked and benchmarked against."""
    from diffusers import AutoencoderKLWan, Cosmos3OmniPipeline, Cosmos3OmniTransformer, UniPCMultistepScheduler
    from transformers import AutoTokenizer

    bundle = Path(bundle)
    pipe = Cosmos3OmniPipeline(
        transformer=Cosmos3OmniTransformer.from_pretrained(bundle, subfolder="transformer"),
        text_tokenizer=AutoTokenizer.from_pretrained(bundle / "text_tokenizer"),
        vae=AutoencoderKLWan.from_pretrained(bundle, subfolder="vae"),
        scheduler=UniPCMultistepScheduler.from_pretrained(bundle, subfolder="scheduler"),
        enable_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
