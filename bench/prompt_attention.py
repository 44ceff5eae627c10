"""Where do the world model's policy-mode action tokens attend? Per layer, the share of their attention on the prompt.

    python bench/prompt_attention.py [--model BUNDLE] [--episodes 8] [--threads 2]

On the first frame of held-out push episodes, with the episode's instruction, one policy-mode predict is run with
the generation attention hooked; for the first denoising step it reports per layer the attention mass the noisy
action tokens put on the Reasoner prompt's keys (mean over heads and episodes, and the range over heads), on the
single most attended prompt key (of the heads' mean attention, and each head's own), and per token on the token(s)
naming the goal colour ("yellow" is five), against the uniform share per prompt key (prompt share / prompt length).
A colour token near the uniform share means the action tokens do not single out the word that says where to push.
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

import cosmos3_world.model.plan as plan_module
from cosmos3_world.engine import World, WorldModel
from cosmos3_world.envs.models import default_model_path
from cosmos3_world.model import GenerationPlan, GenerationSpec
from cosmos3_world.policies.push_report import CHUNK, HELD_OUT_SEED
from cosmos3_world.sim.env import PushSimEnv
from cosmos3_world.sim.push import TASKS

METRICS = ("prompt", "head_max_key", "colour", "uniform")  # per (layer, head); see ActionAttention.summary


class ActionAttention:
    """While entered, records the attention probabilities of the first sequence's noisy action tokens (the cond
    sequence of the first world) in every layer of the first forward (= first denoising step) of each chunk.

    Wraps `WorldModel.generator.plan` (to learn the action rows and the prefix length of the chunk) and the module
    name `cosmos3_world.model.plan.attention` that `AttentionLayout._attend_bucket` calls; both restored on exit.
    """

    def __init__(self, wm: WorldModel) -> None:
        self.generator = wm.generator
        cfg = self.generator.config
        self.num_layers, self.kv_heads = cfg.num_hidden_layers, cfg.num_key_value_heads
        self.group = cfg.num_attention_heads // cfg.num_key_value_heads
        self.probs: list[torch.Tensor] = []  # per layer [heads, A, L]: action queries over [prompt ; generation]
        self.plan: GenerationPlan | None = None
        self.action_rows = torch.zeros(0, dtype=torch.long)  # [A] rows of the action tokens within sequence 0
        self.gen_len = self.prefix_len = 0
        self._calls = 0
        self._buckets = 1
        self._original_attention: Callable | None = None

    def __enter__(self) -> "ActionAttention":
        original_plan, original_attention = self.generator.plan, plan_module.attention

        def plan(specs: Sequence[GenerationSpec]) -> GenerationPlan:
            p = original_plan(specs)
            self._start(p)
            return p

        def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = original_attention(q, k, v)
            self._record(q, k, v, out)
            return out

        self._original_attention = original_attention
        self.generator.plan = plan  # instance attribute shadowing the method; deleted on exit
        plan_module.attention = attention
        return self

    def __exit__(self, *exc) -> None:
        try:
            plan_module.attention = self._original_attention
        finally:
            del self.generator.plan

    def _start(self, p: GenerationPlan) -> None:
        """A new chunk: sequence 0 sits in the first bucket (the layout groups sequences in order), first row there."""
        self.plan, self.probs, self._calls = p, [], 0
        self._buckets = len(p.layout.buckets)
        first = p.layout.buckets[0]
        self.gen_len, self.prefix_len = first.gen_len, p.specs[0].prefix.length
        # Sequence 0's packed rows start at 0, so its packed rows are its local rows.
        self.action_rows = p.noisy_action_rows[p.noisy_action_owner == 0].cpu()
        if not len(self.action_rows) or int(self.action_rows.max()) >= self.gen_len:
            raise RuntimeError(f"no noisy action rows within sequence 0's {self.gen_len} generation rows")

    @torch.no_grad()
    def _record(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        # One call per bucket per layer, the first bucket first: call c is bucket c % buckets of layer c // buckets.
        c, self._calls = self._calls, self._calls + 1
        if self.plan is None or c % self._buckets or c // self._buckets >= self.num_layers:
            return
        g, n, h = self.group, self.gen_len, self.kv_heads
        # q [b * kv_heads, group * n, D] (row g * n + r: query head kv * group + g, token r); k [b * kv_heads, L, D]
        if q.shape[1] != g * n or k.shape[1] != self.prefix_len + n:
            raise RuntimeError(f"attention call {c}: q {tuple(q.shape)}, k {tuple(k.shape)} do not match the plan")
        qa = q[:h].float().view(h, g, n, -1)[:, :, self.action_rows.to(q.device)]  # [kv_heads, group, A, D]
        scores = torch.einsum("hgad,hld->hgal", qa, k[:h].float()) * q.shape[-1] ** -0.5  # [kv_heads, group, A, L]
        probs = scores.softmax(-1)  # [kv_heads, group, A, L]
        # The kernel's own output at these queries must be probs @ v, else the rows or heads are mismatched.
        rows = (torch.arange(g)[:, None] * n + self.action_rows[None]).flatten().to(q.device)  # [group * A]
        expected = torch.einsum("hgal,hld->hgad", probs, v[:h].float()).flatten(1, 2)  # [kv_heads, group * A, D]
        if not torch.allclose(out[:h, rows].float(), expected, atol=2e-2 if out.dtype != torch.float32 else 1e-4):
            raise RuntimeError(f"attention call {c}: recomputed probabilities do not reproduce the kernel's output")
        self.probs.append(probs.flatten(0, 1).cpu())  # probs [heads, A, L]

    def summary(self, colour: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """For the recorded chunk, the action tokens' attention (mean over them) per layer: per head
        [layers, heads, len(METRICS)] on the prompt keys, on each head's most attended prompt key, per token of the
        `colour` keys and uniform per prompt key; and [layers] on the most attended prompt key of the heads' mean."""
        if len(self.probs) != self.num_layers:
            raise RuntimeError(f"recorded {len(self.probs)} layers, expected {self.num_layers}")
        p = torch.stack(self.probs)[..., : self.prefix_len].mean(2)  # [layers, heads, P]: mean over action queries
        prompt = p.sum(-1)  # [layers, heads]
        per_head = torch.stack([prompt, p.amax(-1), p[..., colour].mean(-1), prompt / self.prefix_len], dim=-1)
        return per_head, p.mean(1).amax(-1)


def first_chunk_prompts(wm: WorldModel, world: World) -> list[list[int]]:
    """The prompt ids of each task's instruction for `world`'s first chunk (one start frame + chunk_size frames)."""
    c = world.canvas
    return [wm.prompts.action_prompt_ids(t, view_point=world.view_point, num_frames=1 + world.chunk_size,
                                         fps=world.fps, height=c.height, width=c.width) for t in TASKS]  # fmt: skip


def colour_positions(prompts: list[list[int]], task: int) -> list[int]:
    """Positions in `prompts[task]` of the tokens that differ between the tasks' prompts (the colour word)."""
    lead = next(i for i in range(min(map(len, prompts))) if len({p[i] for p in prompts}) > 1)
    tail = next(i for i in range(min(map(len, prompts))) if len({p[-1 - i] for p in prompts}) > 1)
    return list(range(lead, len(prompts[task]) - tail))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundle directory (default: the shipped embedded world)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wm = WorldModel.from_pretrained(args.model or default_model_path())
    per_head: list[torch.Tensor] = []  # per episode [layers, heads, len(METRICS)]
    pooled_max: list[torch.Tensor] = []  # per episode [layers]
    notes: dict[str, set[str]] = {"rows": set(), "prompt": set(), "colour": set()}
    recorder = ActionAttention(wm)
    with recorder:
        for i in tqdm(range(args.episodes), desc="episodes"):
            seed, task = HELD_OUT_SEED + 20_000 + i, i % len(TASKS)
            obs, _ = PushSimEnv(chunk_size=CHUNK).reset(seed=seed, options={"task": task})
            world = wm.reset(image=obs["pixels"], instruction=TASKS[task], embodiment="pusht", seed=seed)
            prompts = first_chunk_prompts(wm, world)
            wm.predict([world])
            if list(recorder.plan.specs[0].prefix.token_ids) != prompts[task]:
                raise RuntimeError("the model's prompt is not the one first_chunk_prompts rebuilt")
            colour = colour_positions(prompts, task)
            heads, pooled = recorder.summary(colour)
            per_head.append(heads)
            pooled_max.append(pooled)
            rows = recorder.action_rows.tolist()
            notes["rows"].add(f"{rows[0]}-{rows[-1]} of {recorder.gen_len}")
            notes["prompt"].add(f"{TASKS[task].split()[-2]} {recorder.prefix_len}")
            notes["colour"].add(f"{TASKS[task].split()[-2]} {colour}")
    stats = torch.stack(per_head).mean(0)  # [layers, heads, len(METRICS)]: mean over episodes
    prompt, head_max, colour, uniform = stats.unbind(-1)  # each [layers, heads]
    pooled = torch.stack(pooled_max).mean(0)  # [layers]
    print(f"{args.episodes} episodes, first denoising step; action query rows {sorted(notes['rows'])} (generation "
          f"rows); prompt keys {sorted(notes['prompt'])}; colour keys {sorted(notes['colour'])}")  # fmt: skip
    print("share of the action tokens' attention, mean over them, the heads and the episodes (heads: range of the "
          "per-head means); max key: of the heads' mean / mean of each head's; colour: per colour token; uniform: "
          "prompt / prompt length")  # fmt: skip
    print(f"{'layer':>5}  {'prompt':>6}  {'heads':>11}  {'max key':>7}  {'per head':>8}  {'colour':>6}  "
          f"{'uniform':>7}  {'colour/uniform':>14}")  # fmt: skip
    for layer in range(stats.shape[0]):
        m = {name: float(t[layer].mean()) for name, t in zip(METRICS, (prompt, head_max, colour, uniform))}
        span = f"{float(prompt[layer].min()):.0%}-{float(prompt[layer].max()):.0%}"
        print(f"{layer:>5}  {m['prompt']:>6.1%}  {span:>11}  {float(pooled[layer]):>7.2%}  {m['head_max_key']:>8.2%}  "
              f"{m['colour']:>6.2%}  {m['uniform']:>7.2%}  {m['colour'] / m['uniform']:>14.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
