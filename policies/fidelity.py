"""How faithful is the simulator? Open-loop replay of recorded episodes, and policy-ranking agreement.

Open-loop replay: from an episode's recorded first frame, the world model replays the recorded
actions chunk by chunk; every imagined frame is compared with the recorded one (PSNR, SSIM), against
the copy-last-frame baseline (the first frame held still), and the drift over time is plotted.
Episodes come from a video + npz pair or a LeRobot-format dataset directory (v3.0: parquet + mp4,
read with pyarrow and OpenCV, no lerobot dependency). Ranking agreement compares the success rates
of the same policies measured here and elsewhere (a robot, a simulator): Pearson, Spearman, MMRV.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .stats import rank_agreement


@dataclass
class RecordedEpisode:
    """One recorded episode: frames [T + 1, H, W, 3] uint8 (the start frame first) and actions [T, D]."""

    frames: np.ndarray
    actions: np.ndarray
    instruction: str = ""
    fps: float | None = None
    name: str = "episode"

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be [T + 1, H, W, 3] uint8, got {self.frames.dtype} {self.frames.shape}")
        if self.actions.ndim != 2 or len(self.actions) + 1 != len(self.frames):
            raise ValueError(f"actions must be [T, D] with T = frames - 1 = {len(self.frames) - 1}, "
                             f"got {self.actions.shape}")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Image metrics
# ---------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of uint8 images a, b [H, W, 3] (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5), averaged over channels."""
    import cv2

    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


# ---------------------------------------------------------------------------------------------
# Reading recorded episodes
# ---------------------------------------------------------------------------------------------


def read_video_npz(video: str | os.PathLike, npz: str | os.PathLike) -> RecordedEpisode:
    """An episode from a video [T + 1 frames] and an npz with `actions` [T, D] (and optionally `instruction`, `fps`)."""
    from cosmos3_world.video import read_video

    frames = read_video(video)
    with np.load(npz, allow_pickle=False) as data:
        if "actions" not in data:
            raise ValueError(f"{npz}: no 'actions' array (found {sorted(data.keys())})")
        actions = data["actions"]
        instruction = str(data["instruction"]) if "instruction" in data else ""
        fps = float(data["fps"]) if "fps" in data else None
    return RecordedEpisode(frames, actions, instruction, fps, name=Path(video).stem)


def _read_video_segment(path: Path, start_s: float, count: int, fps: float) -> np.ndarray:
    """`count` frames [count, H, W, 3] uint8 of a video file, from timestamp start_s (frame-accurate by index)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    first = int(round(start_s * fps))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first)
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if len(frames) != count:
        raise ValueError(f"{path}: expected {count} frames from {start_s:.3f}s, could read {len(frames)}")
    return np.stack(frames)


def read_lerobot(
    root: str | os.PathLike, episode: int, camera: str | None = None, action_key: str = "action"
) -> RecordedEpisode:
    """Episode `episode` of a LeRobot v3.0 dataset directory (meta/info.json, meta/episodes, data, videos).

    camera: the video feature (e.g. "observation.images.top"; default: the only or first one). The episode's
    frames pair with its actions as LeRobot records them (frame t, then action t): the last frame has no
    following action, so frames [T, ...] with actions [T, D] become T frames and T - 1 actions.
    """
    import pyarrow.parquet as pq

    root = Path(root)
    info_file = root / "meta" / "info.json"
    if not info_file.is_file():
        raise FileNotFoundError(f"{root}: no meta/info.json (not a LeRobot dataset)")
    info = json.loads(info_file.read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(f"{root}: LeRobot dataset {version or '(unknown version)'}; only v3.x is read here")
    fps = float(info["fps"])
    videos = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    if camera is None:
        if not videos:
            raise ValueError(f"{root}: the dataset has no video features")
        camera = videos[0]
    elif camera not in videos:
        raise ValueError(f"camera must be one of {videos}, got {camera!r}")
    table = pq.read_table(sorted((root / "meta" / "episodes").rglob("*.parquet"))).to_pylist()
    rows = [r for r in table if int(r["episode_index"]) == episode]
    if not rows:
        raise ValueError(f"{root}: no episode {episode} (the dataset has {len(table)} episodes)")
    meta = rows[0]
    data_path = root / info["data_path"].format(
        chunk_index=meta["data/chunk_index"], file_index=meta["data/file_index"]
    )
    data = pq.read_table(data_path).to_pydict()
    idx = [i for i, e in enumerate(data["episode_index"]) if int(e) == episode]
    idx.sort(key=lambda i: data["frame_index"][i])
    actions = np.asarray([data[action_key][i] for i in idx], np.float32)
    video_path = root / info["video_path"].format(
        video_key=camera,
        chunk_index=meta[f"videos/{camera}/chunk_index"],
        file_index=meta[f"videos/{camera}/file_index"],
    )
    frames = _read_video_segment(video_path, float(meta[f"videos/{camera}/from_timestamp"]), len(idx), fps)
    tasks = meta.get("tasks") or []
    return RecordedEpisode(frames, actions[:-1], str(tasks[0]) if tasks else "", fps, name=f"episode_{episode:06d}")


# ---------------------------------------------------------------------------------------------
# Open-loop replay
# ---------------------------------------------------------------------------------------------


def replay(
    model: Any,
    episode: RecordedEpisode,
    *,
    embodiment: Any = None,
    chunk_size: int | None = None,
    seed: int = 0,
    max_chunks: int | None = None,
    **reset_kwargs: Any,
) -> dict[str, Any]:
    """Replay the episode's actions in `model` (a WorldModel) from its first frame; per chunk PSNR/SSIM of the
    imagined frames against the recorded ones, and of the copy-last-frame baseline (the start frame held)."""
    world = model.reset(episode.frames[0], episode.instruction, embodiment, seed=seed, chunk_size=chunk_size,
                        **({"fps": episode.fps} if episode.fps else {}), **reset_kwargs)  # fmt: skip
    n = world.chunk_size
    chunks = len(episode.actions) // n if max_chunks is None else min(max_chunks, len(episode.actions) // n)
    if chunks < 1:
        raise ValueError(f"the episode has {len(episode.actions)} actions, fewer than one chunk of {n}")
    h, w = world.frame_shape[:2]
    recorded = episode.frames[:, :h, :w]  # the frames the model returns are at its content size
    start = world.last_frame
    rows = []
    imagined = [start[None]]
    for c in range(chunks):
        result = world.step(episode.actions[c * n : (c + 1) * n])
        imagined.append(result.frames)
        truth = recorded[1 + c * n : 1 + (c + 1) * n]
        rows.append({
            "chunk": c + 1,
            "psnr": float(np.mean([psnr(f, t) for f, t in zip(result.frames, truth)])),
            "ssim": float(np.mean([ssim(f, t) for f, t in zip(result.frames, truth)])),
            "baseline_psnr": float(np.mean([psnr(start, t) for t in truth])),
            "baseline_ssim": float(np.mean([ssim(start, t) for t in truth])),
        })  # fmt: skip
    return {"episode": episode.name, "chunks": rows, "frames": np.concatenate(imagined)}


def replay_report(results: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Per chunk index, the metrics averaged over the episodes that reach it."""
    longest = max(len(r["chunks"]) for r in results)
    out = []
    for c in range(longest):
        rows = [r["chunks"][c] for r in results if len(r["chunks"]) > c]
        out.append({"chunk": c + 1, "episodes": len(rows),
                    **{k: float(np.mean([row[k] for row in rows])) for k in ("psnr", "ssim", "baseline_psnr",
                                                                              "baseline_ssim")}})  # fmt: skip
    return out


def plot_drift(report: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path:
    """A PNG of PSNR and SSIM against chunks, model vs copy-last-frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chunks = [r["chunk"] for r in report]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        ax.plot(chunks, [r[metric] for r in report], "o-", label="world model")
        ax.plot(chunks, [r[f"baseline_{metric}"] for r in report], "s--", label="copy last frame")
        ax.set_xlabel("chunk")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("open-loop replay: drift over time", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Policy-ranking agreement
# ---------------------------------------------------------------------------------------------


def ranking_agreement(
    reference: Mapping[str, float], measured: Mapping[str, float], plot: str | os.PathLike | None = None
) -> dict[str, float]:
    """Pearson, Spearman and MMRV of success rates measured here vs elsewhere (same policy names); a scatter PNG."""
    names = sorted(set(reference) & set(measured))
    if len(names) < 2:
        raise ValueError(f"need the rates of at least 2 common policies, got {names}")
    ref, got = [float(reference[n]) for n in names], [float(measured[n]) for n in names]
    out = {**rank_agreement(ref, got), "policies": len(names)}
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(ref, got)
        for n, x, y in zip(names, ref, got):
            ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("success rate, reference")
        ax.set_ylabel("success rate, world model")
        ax.set_title(
            f"Pearson {out['pearson']:.2f}, Spearman {out['spearman']:.2f}, MMRV {out['mmrv']:.3f}", fontsize=8
        )
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        plt.close(fig)
    return out
