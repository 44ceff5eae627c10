"""diffusers' packed single-sequence forward (`Cosmos3OmniTransformer.forward`'s signature) on our
generator, for drop-in use and as the bridge our parity tests cross: the understanding pathway on
the text, then the generation pathway on the rest."""

from __future__ import annotations

import math

import torch
from torch import nn

from .outputs import GeneratorOutput, scatter_noisy
from .plan import AttentionLayout


def packed_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    text_indexes: torch.Tensor,
    position_ids: torch.Tensor,
    und_len: int,
    sequence_length: int,
    vision_tokens: list[torch.Tensor],
    vision_token_shapes: list[tuple[int, int, int]],
    vision_sequence_indexes: torch.Tensor,
    vision_mse_loss_indexes: torch.Tensor,
    vision_timesteps: torch.Tensor,
    vision_noisy_frame_indexes: list[torch.Tensor],
    sound_tokens: list[torch.Tensor] | None = None,
    sound_token_shapes: list[tuple[int, int, int]] | None = None,
    sound_sequence_indexes: torch.Tensor | None = None,
    sound_mse_loss_indexes: torch.Tensor | None = None,
    sound_timesteps: torch.Tensor | None = None,
    sound_noisy_frame_indexes: list[torch.Tensor] | None = None,
    action_tokens: list[torch.Tensor] | None = None,
    action_token_shapes: list[tuple[int, int, int]] | None = None,
    action_sequence_indexes: torch.Tensor | None = None,
    action_mse_loss_indexes: torch.Tensor | None = None,
    action_timesteps: torch.Tensor | None = None,
    action_noisy_frame_indexes: list[torch.Tensor] | None = None,
    action_domain_ids: list[torch.Tensor] | None = None,
    return_dict: bool = True,
) -> GeneratorOutput | tuple:
    """One packed sequence, same arguments and outputs as diffusers' `Cosmos3OmniTransformer.forward`.

    Runs the understanding pathway on the text and the generation pathway on the rest; the
    text's own outputs are not computed (nothing reads them).
    """
    cfg, dtype, device = model.config, model.dtype, model.device
    has_sound = sound_tokens is not None and sound_sequence_indexes is not None
    has_action = action_tokens is not None and action_sequence_indexes is not None
    for name, idx in (("vision", vision_mse_loss_indexes), ("sound", sound_mse_loss_indexes if has_sound else None),
                      ("action", action_mse_loss_indexes if has_action else None)):  # fmt: skip
        if idx is not None and idx.numel() and int(idx.min()) < und_len:
            raise ValueError(f"{name}_mse_loss_indexes must point past the text (und_len={und_len})")
    hidden = torch.zeros(sequence_length, cfg.hidden_size, dtype=dtype, device=device)
    hidden[text_indexes] = model.embed_tokens(input_ids.to(device))
    vision_idx = vision_sequence_indexes.to(device)
    hidden[vision_idx] = model.proj_in(model.patchify(vision_tokens).to(dtype))

    def add_time(seq_idx, noisy_per_item, shapes, timesteps):
        """Add timestep embeddings to the noisy frames' tokens, in the order the timesteps are given."""
        packed, start = [], 0
        for noisy, shape in zip(noisy_per_item, shapes):
            per_frame = math.prod(shape[1:])
            frames = noisy.to(device)[:, None] * per_frame + torch.arange(per_frame, device=device)
            packed.append(frames.flatten() + start)
            start += math.prod(shape)
        rows = seq_idx[torch.cat(packed)]
        hidden[rows] += model.time_embedding(timesteps.to(device), dtype)

    add_time(vision_idx, vision_noisy_frame_indexes, vision_token_shapes, vision_timesteps)
    if has_sound:
        s = torch.cat([st[:, : sh[0]].permute(1, 0) for st, sh in zip(sound_tokens, sound_token_shapes)]).to(dtype)
        sound_idx = sound_sequence_indexes.to(device)
        hidden[sound_idx] = model.audio_proj_in(s) + model.audio_modality_embed
        add_time(sound_idx, sound_noisy_frame_indexes, sound_token_shapes, sound_timesteps)
    if has_action:
        a = torch.cat([at[: sh[0]] for at, sh in zip(action_tokens, action_token_shapes)]).to(dtype)
        doms = torch.cat([d.reshape(1).expand(sh[0]) for d, sh in zip(action_domain_ids, action_token_shapes)]).to(
            device
        )
        model.action_proj_in.check_domains(doms)
        action_idx = action_sequence_indexes.to(device)
        hidden[action_idx] = model.action_proj_in(a, doms) + model.action_modality_embed
        if action_mse_loss_indexes.numel():
            add_time(action_idx, action_noisy_frame_indexes, action_token_shapes, action_timesteps)

    position_ids = position_ids.to(device)
    ids = tuple(int(t) for t in input_ids.tolist())
    prefix = model.encode_understanding(ids, hidden[:und_len], position_ids[:, :und_len], None)
    layout = AttentionLayout([prefix], [sequence_length - und_len], device)
    cos, sin = model.rotary(position_ids[:, und_len:], dtype)
    x = hidden[und_len:]
    for i, layer in enumerate(model.layers):
        x = layer.generation(x, cos, sin, layout, i)
    x = model.norm_moe_gen(x)

    def read(idx):
        return x[idx.to(device) - und_len]

    original = [tuple(v.shape[-3:]) for v in vision_tokens]
    v = model.proj_out(read(vision_mse_loss_indexes))
    counts = [len(n) * sh[1] * sh[2] for n, sh in zip(vision_noisy_frame_indexes, vision_token_shapes)]
    vision = [model.unpatchify(c, shape, n.tolist()).unsqueeze(0)
              for c, shape, n in zip(v.split(counts), original, vision_noisy_frame_indexes)]  # fmt: skip
    sound = action = None
    if has_sound:
        pred = model.audio_proj_out(read(sound_mse_loss_indexes))
        noisy = [n.tolist() for n in sound_noisy_frame_indexes]
        sound = [t.T for t in scatter_noisy(pred, [sh[0] for sh in sound_token_shapes], noisy)]
    if has_action:
        doms = torch.cat([d.reshape(1).expand(len(n)) for d, n in zip(action_domain_ids, action_noisy_frame_indexes)])
        pred = model.action_proj_out(read(action_mse_loss_indexes), doms.to(device))
        noisy = [n.tolist() for n in action_noisy_frame_indexes]
        action = scatter_noisy(pred, [sh[0] for sh in action_token_shapes], noisy)
    if not return_dict:
        return vision, sound, action
    return GeneratorOutput(sample=vision, sound=sound, action=action)
