"""The Reasoner success judge: latency per episode (8 frames), single and batched, and the memory it adds.

A moderately sized random bundle (generator 512 wide, 8 layers, 32k vocabulary; ViT 256 wide, 4 blocks)
is built once. Each memory scenario runs in a fresh subprocess, one after the other, so resident sizes
do not mix: a world model alone, + a judge sharing its weights, + a separately loaded Reasoner. Both the
process's resident memory (VmRSS) and the distinct tensor bytes are reported.
Goal (issue 12): the shared judge adds no more than the vision encoder's bytes.

    python bench/judge.py [--repeats 5] [--batch 4] [--dtype float32|bfloat16] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GENERATOR = dict(
    hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
    intermediate_size=1536, vocab_size=32768, rope_axes_dim=[12, 10, 10],
)  # fmt: skip
VISION = dict(depth=4, hidden_size=256, intermediate_size=1024, num_heads=4)
FRAMES, SIZE = 8, 64  # frames per episode, frame side (the tiny processor's largest: 16 merged tokens per frame)
MB = 2**20


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def touch(tensors) -> None:
    """Read every tensor once: loaders memory-map safetensors, and pages count as resident only once read."""
    import torch

    with torch.no_grad():
        for t in tensors:
            t.float().sum() if t.dtype.is_floating_point else t.sum()


def scenario(bundle: str, judge: str, dtype: str) -> dict:
    """In a fresh process: RSS and tensor bytes of a world model, then with `judge` ("none", "shared", "separate")."""
    import torch

    from cosmos3_world import ReasonerJudge, WorldModel
    from cosmos3_world.judge import unique_bytes, vision_tensors

    torch_dtype = getattr(torch, dtype)
    base = rss_bytes()
    wm = WorldModel.from_pretrained(bundle, torch_dtype=torch_dtype)
    gen = wm.generator
    touch([*gen.parameters(), *gen.buffers()])
    out = {
        "world_model_rss": rss_bytes() - base,
        "world_model_tensors": unique_bytes([*gen.parameters(), *gen.buffers()]),
    }
    if judge != "none":
        before = rss_bytes()
        j = ReasonerJudge.from_pretrained(bundle, wm if judge == "shared" else None, torch_dtype=torch_dtype)
        touch([*j.model.parameters(), *j.model.buffers()])
        tensors = [*gen.parameters(), *gen.buffers(), *j.model.parameters(), *j.model.buffers()]
        out.update(
            judge_rss=rss_bytes() - before,
            judge_tensors=unique_bytes(tensors) - out["world_model_tensors"],
            vision_tensors=unique_bytes(vision_tensors(j.model)),
        )
    return out


def run_scenario(bundle: str, judge: str, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--scenario", judge, "--bundle", bundle, "--dtype", dtype]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def latency(bundle: str, dtype: str, repeats: int, batch: int) -> dict:
    """Median seconds per episode of `score` (one episode) and of `score_batch` (batch episodes in one forward)."""
    import numpy as np
    import torch

    from cosmos3_world import ReasonerJudge, WorldModel
    from cosmos3_world.testing.tiny import demo_image

    torch_dtype = getattr(torch, dtype)
    wm = WorldModel.from_pretrained(bundle, torch_dtype=torch_dtype)
    judge = ReasonerJudge.from_pretrained(bundle, wm, num_frames=FRAMES)
    episodes = [np.stack([demo_image(SIZE, SIZE, seed=10 * b + i) for i in range(FRAMES)]) for b in range(batch)]
    tasks = [f"Push the T block to the target {b}" for b in range(batch)]

    runs = {"single": lambda: judge.score(episodes[0], tasks[0]), "batched": lambda: judge.score_batch(episodes, tasks)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):  # alternately, so that both see the same machine state
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    single, batched = statistics.median(times["single"]), statistics.median(times["batched"]) / batch
    inputs = judge.processor([judge.sample(episodes[0])], [tasks[0]], judge.device)
    return {"single_s": single, "batched_s": batched, "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "image_tokens": int(inputs["mm_token_type_ids"].sum()), "threads": torch.get_num_threads()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.scenario:
        print(json.dumps(scenario(args.bundle, args.scenario, args.dtype)))
        return

    from cosmos3_world.testing.tiny import build_tiny_bundle

    with tempfile.TemporaryDirectory() as tmp:
        bundle = str(build_tiny_bundle(Path(tmp) / "bundle", reasoner=VISION, **GENERATOR))
        runs = {name: run_scenario(bundle, name, args.dtype) for name in ("none", "shared", "separate")}
        lat = latency(bundle, args.dtype, args.repeats, args.batch)

    print(f"Reasoner judge, {args.dtype}, generator {GENERATOR['hidden_size']}x{GENERATOR['num_hidden_layers']} "
          f"(vocab {GENERATOR['vocab_size']}), ViT {VISION['hidden_size']}x{VISION['depth']}")  # fmt: skip
    print(f"\nlatency per episode ({FRAMES} frames {SIZE}x{SIZE}, {lat['prompt_tokens']} prompt tokens of which "
          f"{lat['image_tokens']} image tokens; {lat['threads']} threads, median of {args.repeats})")  # fmt: skip
    print(f"  single          {lat['single_s'] * 1e3:8.1f} ms")
    print(f"  batched (x{args.batch})    {lat['batched_s'] * 1e3:8.1f} ms per episode")
    vit = runs["shared"]["vision_tensors"]
    print(f"\nmemory (MiB)                        {'RSS':>8} {'tensors':>8}")
    wm = runs["none"]
    print(
        f"  world model alone                 {wm['world_model_rss'] / MB:8.1f} {wm['world_model_tensors'] / MB:8.1f}"
    )
    for name, label in (("shared", "+ judge sharing weights"), ("separate", "+ Reasoner loaded separately")):
        r = runs[name]
        print(f"  {label:<33} {r['judge_rss'] / MB:8.1f} {r['judge_tensors'] / MB:8.1f}")
    print(f"  (vision encoder                   {'':8} {vit / MB:8.1f})")
    shared = runs["shared"]["judge_tensors"]
    print(f"\nshared judge adds {shared - vit} bytes of tensors beyond the vision encoder (the LM's RoPE tables); "
          f"goal {'met' if shared - vit <= 1024 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
