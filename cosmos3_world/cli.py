"""Command line: `cosmos3-world rollout` (a world rollout written to mp4), `build-tiny`, and the subcommands
registered in `COMMANDS`. Defaults come from the model (its bundle's sampler and reset settings)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the unset ones (None: the model decides) and flags."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class UserError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


def _sampler(args: argparse.Namespace, defaults):
    """The model's sampler settings with the flags given on the command line applied."""
    from dataclasses import replace

    changes = {k: v for k, v in (("num_steps", args.steps), ("guidance_scale", args.guidance),
                                  ("solver", args.solver)) if v is not None}  # fmt: skip
    return replace(defaults, **changes)


def _rollout(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .engine.world import WorldModel
    from .envs.models import default_model_path
    from .testing.tiny import demo_actions, demo_image
    from .video import write_video

    torch.set_grad_enabled(False)
    model_path = args.model or default_model_path()
    if args.model is None:
        print(f"No --model given: using the default model at {model_path}.")
    wm = WorldModel.from_pretrained(model_path, device=args.device, torch_dtype=args.dtype, compile=args.compile)
    wm.sampler.config = _sampler(args, wm.sampler.config)
    pusht = (args.embodiment or wm.defaults.get("embodiment")) == "pusht"
    instruction, agent_pos = args.instruction, None
    if args.image:
        from PIL import Image, UnidentifiedImageError

        try:
            image = np.asarray(Image.open(args.image).convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"--image {args.image}: cannot read it as an image ({e})") from None
    elif pusht:  # a Push-T world starts where the ground-truth simulator starts, with one of its instructions
        from .sim import PushSimEnv

        obs, info = PushSimEnv(chunk_size=1).reset(seed=args.seed)
        image, agent_pos = obs["pixels"], obs["agent_pos"]
        instruction = args.instruction or info["task"]
    else:
        image = demo_image(64, 64, seed=args.seed)
    instruction = instruction or "pick up the red block and place it in the bowl"
    world = wm.reset(image, instruction, args.embodiment, seed=args.seed, chunk_size=args.chunk_size)
    policy = args.policy
    if policy == "auto":
        policy = "expert" if pusht else "scripted"
    if policy == "expert" and world.embodiment.name != "pusht":
        raise UserError("--policy expert is the push simulator's scripted expert: it needs a pusht world")
    expert = None
    if policy == "expert":
        from .sim import ExpertPushPolicy

        expert = ExpertPushPolicy(world.chunk_size, seed=args.seed, task=instruction)
    frames = [world.last_frame[None]]
    cfg = wm.sampler.config
    print(f"{args.chunks} chunks of {world.chunk_size} actions, {world.embodiment.name}, policy {policy}, "
          f"sampler {cfg.solver} {cfg.num_steps} steps, guidance {cfg.guidance_scale}: {instruction!r}")  # fmt: skip
    start = time.perf_counter()
    for chunk in tqdm(range(args.chunks), desc="chunks", unit="chunk"):
        if policy == "model":
            result = world.predict()
        elif expert is not None:  # closed loop on the imagined frames: the expert sees what the model imagines
            actions = expert.act({"pixels": world.last_frame, "agent_pos": agent_pos, "task": instruction})
            result = world.step(actions)
            agent_pos = actions[-1]
        else:
            result = world.step(demo_actions(chunk, world.chunk_size, world.embodiment.action_dim))
        frames.append(result.frames)
    elapsed = time.perf_counter() - start
    video = np.concatenate(frames)
    scale = max(1, 256 // max(video.shape[1:3]))
    path = write_video(video, args.out, fps=world.fps if args.fps is None else args.fps, scale=scale)
    print(f"{args.chunks} chunks, {len(video)} frames of {video.shape[2]}x{video.shape[1]} in {elapsed:.1f}s "
          f"({args.chunks / elapsed:.2f} chunks/s) -> {path}")  # fmt: skip
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from .testing.tiny import build_tiny_bundle

    path = build_tiny_bundle(args.directory, codec=args.codec, seed=args.seed)
    print(f"tiny bundle written to {path}")
    return 0


def _add_rollout(sub) -> None:
    r = sub.add_parser("rollout", help="roll a world forward chunk by chunk and write the video",
                       formatter_class=HelpFormatter)  # fmt: skip
    r.add_argument("--model", help="bundle directory or hub repo id (unset: the project's default model)")
    r.add_argument("--image", help="start frame (unset: a synthetic scene)")
    r.add_argument("--instruction", default=None, help="the task (unset: the simulator's for Push-T, else a demo task)")
    r.add_argument("--embodiment", default=None, help="embodiment name (unset: the model's)")
    r.add_argument("--chunks", type=int, default=8, help="chunks to imagine")
    r.add_argument("--chunk-size", type=int, default=None, help="actions per chunk (unset: the model's)")
    r.add_argument(
        "--policy",
        choices=["auto", "scripted", "expert", "model"],
        default="auto",
        help="scripted smooth actions, the push simulator's expert acting on the imagined frames "
        "(Push-T), or the model's own actions (policy mode); auto: expert for Push-T, else scripted",
    )
    r.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (unset: the model's)")
    r.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (unset: the model's)")
    r.add_argument("--solver", choices=["unipc", "euler"], default=None, help="ODE solver (unset: the model's)")
    r.add_argument("--seed", type=int, default=0, help="the world's noise (and the synthetic scene)")
    r.add_argument("--device", default=None, help="e.g. cuda (unset: cpu)")
    r.add_argument("--dtype", default=None, help="generator dtype, e.g. bfloat16 (unset: float32)")
    r.add_argument("--compile", action="store_true", help="torch.compile the generator (slow first chunk)")
    r.add_argument("--fps", type=float, default=None, help="video fps (unset: the embodiment's control rate)")
    r.add_argument("--out", default="rollout.mp4", help="video to write")
    r.set_defaults(func=_rollout)


def _add_build_tiny(sub) -> None:
    b = sub.add_parser("build-tiny", help="write a tiny random-weight bundle in the published layout",
                       formatter_class=HelpFormatter)  # fmt: skip
    b.add_argument("directory", help="where to write the bundle")
    b.add_argument("--codec", choices=["space_to_depth", "wan"], default="space_to_depth", help="the bundle's codec")
    b.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    b.set_defaults(func=_build_tiny)


def _world_model_learner(bundle: str, chunk_size: int, seed: int, threads: int):
    """`collect --learner`: the bundle's policy mode acting from the simulator's frames (DAgger)."""
    import torch

    from .policies.world_model import WorldModelPolicy
    from .sim.env import push_spaces

    torch.set_num_threads(threads)
    return WorldModelPolicy(model=bundle, action_space=push_spaces(chunk_size)[1], seed=seed)


def _add_training(sub) -> None:
    from .training.commands import add_collect, add_train

    add_collect(sub, HelpFormatter, make_learner=_world_model_learner)
    add_train(sub, HelpFormatter)


# Each subcommand registers itself here.
def _eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .policies.evaluate import evaluate, make_eval_env
    from .policies.specs import make_policy
    from .policies.suite import load_suite

    if args.manifest:  # the run the manifest describes, exactly: its suite, seeds, batch, policies, env
        path = Path(args.manifest)
        if not path.is_file():
            raise UserError(f"--manifest {path}: no such file")
        m = json.loads(path.read_text())
        specs, seed, num_envs, max_steps = m["policies"], m["seed"], m["num_envs"], m["max_episode_steps"]
        env_id, env_kwargs = m["env"]["id"], dict(m["env"].get("kwargs", {}))
        suite = load_suite(m["suite"]["path"])
        episodes = {t["name"]: t["episodes"] for t in m["suite"]["tasks"]}
        suite = suite.with_episodes_per_task(episodes) if set(episodes) == {t.name for t in suite.tasks} else None
        if suite is None or [t.describe() for t in suite.tasks] != m["suite"]["tasks"]:
            raise UserError(f"--manifest {path}: the suite file {m['suite']['path']} changed since the run")
    else:
        specs = {spec: spec for spec in (args.policy or ["random"])}
        seed, num_envs, max_steps = args.seed, args.num_envs, args.max_episode_steps
        env_id, env_kwargs = args.env, {}
        if args.model:
            env_kwargs["model"] = args.model
        for key, value in (("num_steps", args.steps), ("guidance_scale", args.guidance)):
            if value is not None:
                env_kwargs[key] = value
        suite = load_suite(args.suite, args.episodes)
    if args.ray:
        results = evaluate(specs, {"id": env_id, "kwargs": env_kwargs, "num_envs": num_envs}, suite=suite,
                           seed=seed, max_episode_steps=max_steps, out=args.out, resume=args.resume,
                           videos=not args.no_videos, backend="ray", address=args.ray_address,
                           workers=args.workers)  # fmt: skip
    else:
        env = make_eval_env(env_id, num_envs, **env_kwargs)
        policies = {name: make_policy(spec, env, seed=seed) for name, spec in specs.items()}
        results = evaluate(policies, env, suite=suite, seed=seed, max_episode_steps=max_steps, out=args.out,
                           resume=args.resume, videos=not args.no_videos, policy_specs=specs,
                           env_spec={"id": env_id, "kwargs": env_kwargs})  # fmt: skip
        env.close()
    for name, res in results["policies"].items():
        o = res["overall"]
        print(f"{name}: success {o['success_rate']:.3f} [{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}] over "
              f"{o['episodes']} episodes, mean steps {o['mean_steps']:.1f}")  # fmt: skip
    print(f"results -> {Path(args.out) / 'results.json'}")
    return 0


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate policies in the world model (or any env), with confidence intervals",
                       formatter_class=HelpFormatter)  # fmt: skip
    e.add_argument("--policy", action="append",
                   help="random | model | sim:NAME | replay:FILE | openpi:HOST:PORT | module.path:attr; repeat "
                        "to compare policies on the same episodes (unset: random)")  # fmt: skip
    e.add_argument("--episodes", type=int, default=None, help="episodes per task (unset: the suite's)")
    e.add_argument("--num-envs", type=int, default=8, help="worlds stepped together (one batched forward)")
    e.add_argument("--seed", type=int, default=0, help="episode g of the run gets seed + g")
    e.add_argument("--out", required=True, help="directory for manifest, episodes.jsonl, results, plots, videos")
    e.add_argument("--suite", default=None, help="task suite file, JSON or YAML (unset: the default suite)")
    e.add_argument("--manifest", default=None, help="re-run the evaluation a manifest.json describes")
    e.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    e.add_argument("--env", default="Cosmos3World-v0", help="gym id to evaluate in")
    e.add_argument("--model", default=None, help="world model bundle (unset: the default model)")
    e.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (unset: the model's)")
    e.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (unset: the model's)")
    e.add_argument("--max-episode-steps", type=int, default=None, help="steps per episode (unset: the suite's)")
    e.add_argument("--no-videos", action="store_true", help="do not write an mp4 per episode")
    e.add_argument("--ray", action="store_true", help="run the waves on Ray actors")
    e.add_argument("--ray-address", default=None, help="Ray cluster to join, e.g. auto (unset: start a local one)")
    e.add_argument("--workers", type=int, default=2, help="Ray actors, each holding one model")
    e.set_defaults(func=_eval)


def _replay(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .engine.world import WorldModel
    from .envs.models import default_model_path
    from .policies.fidelity import plot_drift, read_lerobot, read_video_npz, replay, replay_report
    from .video import write_video

    if bool(args.lerobot) == bool(args.video):
        raise UserError("pass either --lerobot DIR (with --episode) or --video FILE --actions NPZ")
    if args.video:
        if not args.actions:
            raise UserError("--video needs --actions (an npz with an 'actions' array)")
        episodes = [read_video_npz(args.video, args.actions)]
    else:
        episodes = [read_lerobot(args.lerobot, e, camera=args.camera) for e in (args.episode or [0])]
    wm = WorldModel.from_pretrained(args.model or default_model_path())
    wm.sampler.config = _sampler(args, wm.sampler.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for ep in episodes:
        res = replay(wm, ep, embodiment=args.embodiment, chunk_size=args.chunk_size, seed=args.seed,
                     max_chunks=args.max_chunks)  # fmt: skip
        write_video(res.pop("frames"), out / f"{ep.name}_imagined.mp4", fps=ep.fps or 10.0, scale=4)
        results.append(res)
    report = replay_report(results)
    (out / "replay.json").write_text(json.dumps({"per_chunk": report, "episodes": results}, indent=2) + "\n")
    plot_drift(report, out / "drift.png")
    for row in report:
        print(f"chunk {row['chunk']:2d}: PSNR {row['psnr']:6.2f} dB (copy-last {row['baseline_psnr']:6.2f}), "
              f"SSIM {row['ssim']:.3f} (copy-last {row['baseline_ssim']:.3f})")  # fmt: skip
    print(f"report -> {out / 'replay.json'}, plot -> {out / 'drift.png'}")
    return 0


def _add_replay(sub) -> None:
    r = sub.add_parser("replay", help="open-loop replay of recorded episodes: PSNR/SSIM drift vs copy-last-frame",
                       formatter_class=HelpFormatter)  # fmt: skip
    r.add_argument("--lerobot", default=None, help="a LeRobot v3 dataset directory")
    r.add_argument("--episode", type=int, action="append", help="episode index in --lerobot (repeatable; unset: 0)")
    r.add_argument("--camera", default=None, help="video feature of --lerobot (unset: the first)")
    r.add_argument("--video", default=None, help="a recorded video (with --actions)")
    r.add_argument("--actions", default=None, help="npz with 'actions' [T, D] for --video")
    r.add_argument("--model", default=None, help="world model bundle (unset: the default model)")
    r.add_argument("--embodiment", default=None, help="(unset: the model's)")
    r.add_argument("--chunk-size", type=int, default=None, help="(unset: the model's)")
    r.add_argument("--max-chunks", type=int, default=None, help="replay at most this many chunks per episode")
    r.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (unset: the model's)")
    r.add_argument("--guidance", type=float, default=None, help="(unset: the model's)")
    r.add_argument("--solver", choices=["unipc", "euler"], default=None, help="(unset: the model's)")
    r.add_argument("--seed", type=int, default=0, help="the world's noise")
    r.add_argument("--out", required=True, help="directory for replay.json, drift.png and the imagined videos")
    r.set_defaults(func=_replay)


def _rank(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .policies.fidelity import ranking_agreement

    reference = json.loads(Path(args.reference).read_text())
    results = json.loads(Path(args.results).read_text())
    measured = {name: r["overall"]["success_rate"] for name, r in results["policies"].items()}
    out = ranking_agreement(reference, measured, plot=args.plot)
    print(" ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return 0


def _add_rank(sub) -> None:
    r = sub.add_parser("rank", help="policy-ranking agreement (Pearson, Spearman, MMRV) with rates measured elsewhere",
                       formatter_class=HelpFormatter)  # fmt: skip
    r.add_argument("--reference", required=True, help="JSON {policy: success rate} measured elsewhere")
    r.add_argument("--results", required=True, help="results.json of cosmos3-world eval")
    r.add_argument("--plot", default="ranking.png", help="scatter plot to write")
    r.set_defaults(func=_rank)


def _serve(args: argparse.Namespace) -> int:
    import logging
    import os

    import torch

    from .engine.world import WorldModel
    from .envs.models import default_model_path

    try:
        from .serving import ServerConfig, run_server
    except ImportError as e:
        raise UserError(f"serving needs websockets and msgpack: pip install 'cosmos3-world[serve]' ({e})") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    size = args.image_size.lower().split("x")
    if len(size) != 2 or not all(s.isdigit() and int(s) > 0 for s in size):
        raise UserError(f"--image-size must be HxW, e.g. 64x64, got {args.image_size!r}")
    api_key = args.api_key or os.environ.get("COSMOS3_WORLD_API_KEY") or None
    config = ServerConfig(
        host=args.host, port=args.port, api_key=api_key, embodiment=args.embodiment, chunk_size=args.chunk_size,
        image_size=(int(size[0]), int(size[1])), max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_sessions=args.max_sessions,
    )  # fmt: skip
    torch.set_grad_enabled(False)
    model_path = args.model or default_model_path()
    wm = WorldModel.from_pretrained(model_path, device=args.device, torch_dtype=args.dtype)
    wm.sampler.config = _sampler(args, wm.sampler.config)
    if api_key is None:
        print("No API key (--api-key or $COSMOS3_WORLD_API_KEY): any client may connect.", flush=True)

    def ready(server) -> None:
        print(f"serving {model_path} on ws://{args.host}:{server.port} (healthz: http://{args.host}:{server.port}"
              f"/healthz; embodiment {server.embodiment.name}, chunk {server.chunk_size})", flush=True)  # fmt: skip

    try:
        run_server(wm, config, ready=ready)
    except OSError as e:  # e.g. the port is taken
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    return 0


def _add_serve(sub) -> None:
    s = sub.add_parser("serve", help="serve the model to robot controllers over OpenPI's websocket protocol",
                       formatter_class=HelpFormatter)  # fmt: skip
    s.add_argument("--model", default=None, help="world model bundle or hub repo id (unset: the default model)")
    s.add_argument("--host", default="0.0.0.0", help="address to listen on")
    s.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    s.add_argument("--api-key", default=None,
                   help="require `Authorization: Api-Key <key>` (unset: $COSMOS3_WORLD_API_KEY if set)")  # fmt: skip
    s.add_argument("--embodiment", default=None, help="default embodiment of requests (unset: the model's, else pusht)")
    s.add_argument("--chunk-size", type=int, default=None, help="actions per request (unset: the model's, else 4)")
    s.add_argument("--image-size", default="64x64", help="HxW of the observation images")
    s.add_argument("--max-batch", type=int, default=16, help="requests batched into one forward (1: serial)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for batch mates")
    s.add_argument("--max-sessions", type=int, default=256, help="worlds kept between calls (LRU, 10 min idle expiry)")
    s.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (unset: the model's)")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (unset: the model's)")
    s.add_argument("--solver", choices=["unipc", "euler"], default=None, help="ODE solver (unset: the model's)")
    s.add_argument("--device", default=None, help="e.g. cuda (unset: cpu)")
    s.add_argument("--dtype", default=None, help="generator dtype, e.g. bfloat16 (unset: float32)")
    s.set_defaults(func=_serve)


COMMANDS = [_add_rollout, _add_build_tiny, _add_training, _add_eval, _add_replay, _add_rank, _add_serve]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos3-world", description="Cosmos3 world model as a robot simulator.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, KeyError, FileNotFoundError) as e:  # user mistakes: one line, no traceback
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"cosmos3-world {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
