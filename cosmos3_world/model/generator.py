"""The Cosmos3 mixture-of-transformers generator: our own implementation, weight-compatible with
the published checkpoint and with diffusers' `Cosmos3OmniTransformer`.

Each layer has two pathways of the same width with their own Q/K/V/O, MLP and norms:
  understanding (Reasoner): causal self-attention over the text prefix;
  generation: unmasked attention from vision/sound/action tokens to [text K/V ; generation K/V].
The text never attends to generation tokens, so its K/V are computed once per instruction
(`encode_prefix`, `PrefixCache`) and every denoising step runs the generation pathway alone
(`plan` once per chunk, then `denoise_step` per step), for B sequences in one batched call.
`forward` keeps diffusers' signature for drop-in use.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import load_generator, save_generator
from .config import Cosmos3Config
from .layers import DomainAwareLinear, MoTDecoderLayer, RMSNorm, TimestepEmbedder
from .outputs import GeneratorOutput, scatter_noisy
from .packed_forward import packed_forward
from .plan import GenerationPlan, GenerationSpec, build_plan
from .prefix_cache import PrefixKV
from .rope import MultimodalRotary, text_position_ids


class Cosmos3Generator(nn.Module):
    """Cosmos3 MoT generator. Parameter names equal the checkpoint's flat layout."""

    def __init__(self, config: Cosmos3Config | dict):
        super().__init__()
        cfg = config if isinstance(config, Cosmos3Config) else Cosmos3Config.from_dict(config)
        self.config = cfg
        nemotron = cfg.norm_type == "nemotron"
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, nemotron)
        self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, nemotron)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.proj_in = nn.Linear(cfg.patch_latent_dim, cfg.hidden_size)
        self.proj_out = nn.Linear(cfg.hidden_size, cfg.patch_latent_dim)
        self.time_embedder = TimestepEmbedder(cfg.hidden_size)
        if cfg.action_gen:
            self.action_proj_in = DomainAwareLinear(cfg.action_dim, cfg.hidden_size, cfg.num_embodiment_domains)
            self.action_proj_out = DomainAwareLinear(cfg.hidden_size, cfg.action_dim, cfg.num_embodiment_domains)
            self.action_modality_embed = nn.Parameter(torch.zeros(cfg.hidden_size))
        if cfg.sound_gen:
            self.audio_proj_in = nn.Linear(cfg.sound_dim, cfg.hidden_size)
            self.audio_proj_out = nn.Linear(cfg.hidden_size, cfg.sound_dim)
            self.audio_modality_embed = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.rotary = MultimodalRotary(cfg.head_dim, cfg.rope_theta, cfg.rope_axes_dim)
        self.weights_epoch = 0  # see `PrefixCache`: bumped when tensors are converted or reloaded
        self._understanding_modules: tuple[nn.Module, ...] | None = None
        self.register_load_state_dict_post_hook(lambda module, _: module._bump_weights_epoch())

    # Modules kept in float32 whatever the load dtype (as the reference does).
    keep_in_fp32_modules = ("time_embedder",)

    def _bump_weights_epoch(self) -> None:
        self.weights_epoch += 1

    def _apply(self, fn, recurse: bool = True):
        """`.to()`, `.float()`, `.cuda()` ... all come here: tell prefix caches the tensors changed."""
        self._bump_weights_epoch()
        return super()._apply(fn, recurse)

    def understanding_parameters(self) -> list[torch.Tensor]:
        """The tensors the Reasoner prefix K/V depend on: embeddings and the understanding pathway.

        Read from the modules' own parameter slots each call (a swapped Parameter is seen), over a
        module list built once (walking `parameters()` of every module is far slower)."""
        if self._understanding_modules is None:
            roots = [self.embed_tokens]
            for layer in self.layers:
                attn = layer.self_attn
                roots += [attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k, attn.to_out, layer.mlp,
                          layer.input_layernorm, layer.post_attention_layernorm, attn.k_norm_und_for_gen]  # fmt: skip
            self._understanding_modules = tuple(m for r in roots if r is not None for m in r.modules())
        return [p for m in self._understanding_modules for p in m._parameters.values() if p is not None]

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    # ------------------------------------------------------------------ loading (see checkpoint.py)
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder: str | None = "transformer", **kwargs):
        """Load from a local directory or a hub repo id; see `checkpoint.load_generator`."""
        return load_generator(cls, pretrained_model_name_or_path, subfolder=subfolder, **kwargs)

    def save_pretrained(self, save_directory, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and (sharded) safetensors in the checkpoint's layout."""
        save_generator(self, save_directory, max_shard_size=max_shard_size)

    # ------------------------------------------------------------------ understanding pathway
    @torch.no_grad()
    def encode_prefix(self, token_ids: Sequence[int] | torch.Tensor, past: PrefixKV | None = None) -> PrefixKV:
        """Run the understanding pathway over `token_ids` and keep each layer's K/V.

        With `past` (the K/V of the first `past.length` of these tokens) only the rest is encoded.
        """
        ids = [int(t) for t in (token_ids.tolist() if torch.is_tensor(token_ids) else token_ids)]
        if not ids:
            raise ValueError("token_ids must hold at least one token")
        if max(ids) >= self.config.vocab_size or min(ids) < 0:
            raise ValueError(f"token_ids must be in [0, {self.config.vocab_size}), got ids up to {max(ids)}")
        start = 0
        if past is not None:
            if tuple(ids[: past.length]) != past.token_ids:
                raise ValueError("past.token_ids must be a prefix of token_ids")
            start = past.length
        new = torch.tensor(ids[start:], dtype=torch.long, device=self.device)
        hidden = self.embed_tokens(new)
        positions = text_position_ids(len(ids) - start, start=start).to(self.device)
        return self.encode_understanding(tuple(ids), hidden, positions, past)

    def encode_understanding(
        self, ids: tuple[int, ...], hidden: torch.Tensor, positions: torch.Tensor, past: PrefixKV | None
    ) -> PrefixKV:
        cos, sin = self.rotary(positions, hidden.dtype)
        keys, values, gen_keys = [], [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            layer_past = None
            if past is not None:
                layer_past = (past.keys[i], past.values[i], past.gen_keys[i] if past.gen_keys else None)
            hidden, k, v, gk = layer.understanding(hidden, cos, sin, layer_past, need_output=i < last)
            keys.append(k)
            values.append(v)
            gen_keys.append(gk)
        return PrefixKV(ids, tuple(keys), tuple(values), tuple(gen_keys) if gen_keys[0] is not None else None)

    # ------------------------------------------------------------------ planning
    def plan(self, specs: Sequence[GenerationSpec]) -> GenerationPlan:
        """Precompute positions, rotary tables, token rows and the attention layout for a batch (once per chunk)."""
        return build_plan(self.config, self.rotary, specs, self.device, self.dtype)

    # ------------------------------------------------------------------ generation pathway
    def patchify(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of [C, T, H, W] -> packed patches [sum T*hp*wp, p*p*C] (H, W zero-padded to p)."""
        p, c = self.config.latent_patch_size, self.config.latent_channel
        out = []
        for x in latents:
            if x.ndim == 5 and x.shape[0] == 1:
                x = x[0]
            if x.ndim != 4 or x.shape[0] != c:
                raise ValueError(f"vision latents must be [{c}, T, H, W], got {tuple(x.shape)}")
            _, t, h, w = x.shape
            if h % p or w % p:
                x = F.pad(x, (0, -w % p, 0, -h % p))
            hp, wp = x.shape[2] // p, x.shape[3] // p
            x = x.reshape(c, t, hp, p, wp, p).permute(1, 2, 4, 3, 5, 0)  # t hp wp p q c
            out.append(x.reshape(t * hp * wp, p * p * c))
        return torch.cat(out)

    def unpatchify(self, patches: torch.Tensor, shape: tuple[int, int, int], noisy: Sequence[int]) -> torch.Tensor:
        """Noisy-frame patches [len(noisy)*hp*wp, p*p*C] -> [C, T, H, W] with zeros at clean frames."""
        p, c = self.config.latent_patch_size, self.config.latent_channel
        t, h, w = shape
        hp, wp = -(-h // p), -(-w // p)
        out = patches.new_zeros(c, t, h, w)
        if len(noisy):
            x = patches.reshape(len(noisy), hp, wp, p, p, c).permute(5, 0, 1, 3, 2, 4)
            x = x.reshape(c, len(noisy), hp * p, wp * p)[:, :, :h, :w]
            out[:, list(noisy)] = x
        return out

    def time_embedding(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-token timesteps [N] -> embeddings [N, H]; the MLP runs once per distinct value."""
        values, inverse = torch.unique(timesteps.float(), return_inverse=True)
        emb = self.time_embedder(values * self.config.timestep_scale).to(dtype)
        return emb[inverse]

    def _embed_generation(
        self,
        plan: GenerationPlan,
        vision: Sequence[torch.Tensor],
        noisy_vision_t: torch.Tensor,
        sound: Sequence[torch.Tensor] | None,
        noisy_sound_t: torch.Tensor | None,
        action: Sequence[torch.Tensor] | None,
        noisy_action_t: torch.Tensor | None,
    ) -> torch.Tensor:
        """Packed generation tokens [N, H] for one step: projected latents plus timestep embeddings."""
        dtype = self.dtype
        x = torch.empty(plan.num_tokens, self.config.hidden_size, dtype=dtype, device=self.device)
        x[plan.vision_rows] = self.proj_in(self.patchify(vision).to(dtype)).to(dtype)  # .to: bf16 under autocast
        if len(plan.noisy_vision_rows):
            x[plan.noisy_vision_rows] += self.time_embedding(noisy_vision_t, dtype)
        if len(plan.sound_rows):
            s = torch.cat([t.permute(1, 0) for t, sp in zip(sound, plan.specs) if sp.sound_len]).to(dtype)  # [T, C]
            x[plan.sound_rows] = (self.audio_proj_in(s) + self.audio_modality_embed).to(dtype)
            if len(plan.noisy_sound_rows):
                x[plan.noisy_sound_rows] += self.time_embedding(noisy_sound_t, dtype)
        if len(plan.action_rows):
            a = torch.cat([t for t, sp in zip(action, plan.specs) if sp.action_len]).to(dtype)
            x[plan.action_rows] = (self.action_proj_in(a, plan.action_domains) + self.action_modality_embed).to(dtype)
            if len(plan.noisy_action_rows):
                x[plan.noisy_action_rows] += self.time_embedding(noisy_action_t, dtype)
        return x

    def compile_generation(self, **compile_kwargs) -> None:
        """torch.compile the generation layers of `denoise_step` (fuses the norms, RoPE and MLP
        elementwise work). The first call compiles (slow: tens of seconds on a CPU);
        the first plan of other sizes (prompt length, batch) recompiles once with those sizes
        dynamic, later ones reuse it. Weights stay graph inputs: reloading them is safe."""
        self._run_generation = torch.compile(self._run_generation, **compile_kwargs)

    def _run_generation(self, plan: GenerationPlan, x: torch.Tensor) -> torch.Tensor:
        """Packed tokens [N, H] -> last-layer outputs at `plan.output_rows` [R, H]."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.generation(
                x, plan.cos, plan.sin, plan.layout, i, out_rows=plan.output_rows if i == last else None
            )
        return x

    def _decode_generation(self, plan: GenerationPlan, x: torch.Tensor) -> GeneratorOutput:
        """Final norm + heads on the noisy tokens x [R, H] (at `plan.output_rows`); per-item full-shaped outputs."""
        specs = plan.specs
        x_vision, x_sound, x_action = x.split(
            [len(plan.noisy_vision_rows), len(plan.noisy_sound_rows), len(plan.noisy_action_rows)]
        )
        v = self.proj_out(self.norm_moe_gen(x_vision))
        counts = [len(s.vision_noisy) * (-(-s.vision_shape[1] // self.config.latent_patch_size))
                  * (-(-s.vision_shape[2] // self.config.latent_patch_size)) for s in specs]  # fmt: skip
        vision = [self.unpatchify(chunk, s.vision_shape, sorted(s.vision_noisy))
                  for chunk, s in zip(v.split(counts), specs)]  # fmt: skip
        sound = action = None
        if len(plan.sound_rows):
            pred = self.audio_proj_out(self.norm_moe_gen(x_sound))
            noisy = [s.sound_noisy_frames for s in specs]
            sound = [t.T for t in scatter_noisy(pred, [s.sound_len for s in specs], noisy)]
        if len(plan.action_rows):
            pred = self.norm_moe_gen(x_action)
            pred = (
                self.action_proj_out(pred, plan.noisy_action_domains)
                if len(pred)
                else pred.new_zeros(0, self.config.action_dim)
            )
            noisy = [sorted(s.action_noisy) for s in specs]
            action = scatter_noisy(pred, [s.action_len for s in specs], noisy)
        return GeneratorOutput(sample=vision, sound=sound, action=action)

    def _check_step_inputs(self, plan: GenerationPlan, vision, sound, action) -> None:
        """Each modality: one tensor per planned sequence, shaped as the plan says."""
        cfg = self.config
        expected = {
            "vision": [(cfg.latent_channel, *s.vision_shape) for s in plan.specs],
            "sound": [(cfg.sound_dim, s.sound_len) if s.sound_len else None for s in plan.specs],
            "action": [(s.action_len, cfg.action_dim) if s.action_len else None for s in plan.specs],
        }
        for name, value in (("vision", vision), ("sound", sound), ("action", action)):
            shapes = expected[name]
            if all(e is None for e in shapes):
                continue
            if value is None or len(value) != len(shapes):
                got = "None" if value is None else f"{len(value)} tensors"
                raise ValueError(f"{name} must hold one tensor per planned sequence ({len(shapes)}), got {got}")
            for i, (v, e) in enumerate(zip(value, shapes)):
                if e is not None and (v is None or tuple(v.shape[-len(e) :]) != e or v.numel() != math.prod(e)):
                    got = None if v is None else tuple(v.shape)
                    raise ValueError(f"{name}[{i}] must have shape {e}, got {got}")

    @torch.no_grad()
    def denoise_step(
        self,
        plan: GenerationPlan,
        vision: Sequence[torch.Tensor] | torch.Tensor,
        timesteps: torch.Tensor | Sequence[float] | float,
        sound: Sequence[torch.Tensor] | torch.Tensor | None = None,
        action: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> GeneratorOutput:
        """Velocity of every sequence in `plan` at one denoising step, in one batched forward.

        vision: per sequence [C, T, H, W] latents (clean frames hold the conditioning); sound:
        per sequence [sound_dim, T]; action: per sequence [T, action_dim]. timesteps: one value
        per sequence (or one for all), in the scheduler's units (0..1000).
        """
        b = plan.batch_size
        self._check_step_inputs(plan, vision, sound, action)
        t = torch.as_tensor(timesteps, dtype=torch.float32, device=self.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise ValueError(f"timesteps must hold 1 or {b} values, got {t.numel()}")
        x = self._embed_generation(
            plan, vision, t[plan.noisy_vision_owner],
            sound, t[plan.noisy_sound_owner], action, t[plan.noisy_action_owner],
        )  # fmt: skip
        return self._decode_generation(plan, self._run_generation(plan, x))

    # ------------------------------------------------------------------ training entries (autograd on)
    def training_prefix(self, token_ids: Sequence[int] | torch.Tensor) -> PrefixKV:
        """`encode_prefix` with autograd, so that training reaches the understanding pathway through the K/V."""
        return Cosmos3Generator.encode_prefix.__wrapped__(self, token_ids)

    def training_forward(
        self,
        plan: GenerationPlan,
        vision: Sequence[torch.Tensor] | torch.Tensor,
        timesteps: torch.Tensor | Sequence[float] | float,
        sound: Sequence[torch.Tensor] | torch.Tensor | None = None,
        action: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> GeneratorOutput:
        """`denoise_step` with autograd: the very same computation (the kernels take their plain PyTorch paths
        under grad), so a trained model's inference equals what was trained."""
        return Cosmos3Generator.denoise_step.__wrapped__(self, plan, vision, timesteps, sound, action)

    # ------------------------------------------------------------------ diffusers-compatible forward
    def forward(self, *args, **kwargs) -> GeneratorOutput | tuple:
        """One packed sequence, same arguments and outputs as diffusers' `Cosmos3OmniTransformer.forward`
        (see `packed_forward.packed_forward`)."""
        return packed_forward(self, *args, **kwargs)
