"""A LeRobot v3.0 dataset writer for tests and demos (parquet + mp4, the layout `LeRobotDataset` reads),
so the replay readers are checked against the real format without a lerobot dependency."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def write_lerobot_v3(
    root: str | os.PathLike,
    episodes: Sequence[tuple[np.ndarray, np.ndarray, str]],
    fps: float = 10.0,
    camera: str = "observation.images.top",
) -> Path:
    """Write episodes (frames [T, H, W, 3] uint8, actions [T, D], task) into one data file and one video file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cosmos3_world.video import write_video

    root = Path(root)
    tasks = list(dict.fromkeys(task for _, _, task in episodes))
    rows: dict[str, list] = {k: [] for k in ("action", "observation.state", "timestamp", "frame_index",
                                              "episode_index", "index", "task_index")}  # fmt: skip
    meta: dict[str, list] = {k: [] for k in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                                              "dataset_from_index", "dataset_to_index", f"videos/{camera}/chunk_index",
                                              f"videos/{camera}/file_index", f"videos/{camera}/from_timestamp",
                                              f"videos/{camera}/to_timestamp")}  # fmt: skip
    all_frames, index, t0 = [], 0, 0.0
    for e, (frames, actions, task) in enumerate(episodes):
        length = len(frames)
        if len(actions) != length:
            raise ValueError("LeRobot records one action per frame: actions must have as many rows as frames")
        for i in range(length):
            rows["action"].append(np.asarray(actions[i], np.float32).tolist())
            rows["observation.state"].append(np.asarray(actions[i], np.float32).tolist())
            rows["timestamp"].append(i / fps)
            rows["frame_index"].append(i)
            rows["episode_index"].append(e)
            rows["index"].append(index + i)
            rows["task_index"].append(tasks.index(task))
        for key, value in (("episode_index", e), ("tasks", [task]), ("length", length), ("data/chunk_index", 0),
                           ("data/file_index", 0), ("dataset_from_index", index), ("dataset_to_index", index + length),
                           (f"videos/{camera}/chunk_index", 0), (f"videos/{camera}/file_index", 0),
                           (f"videos/{camera}/from_timestamp", t0),
                           (f"videos/{camera}/to_timestamp", t0 + length / fps)):  # fmt: skip
            meta[key].append(value)
        all_frames.append(frames)
        index += length
        t0 += length / fps
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), _ensure(root / DATA_PATH.format(chunk_index=0, file_index=0)))
    pq.write_table(pa.table(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task_index": list(range(len(tasks))), "task": tasks}), root / "meta" / "tasks.parquet")
    write_video(np.concatenate(all_frames), _ensure(root / VIDEO_PATH.format(video_key=camera, chunk_index=0,
                                                                            file_index=0)), fps=fps)  # fmt: skip
    h, w = all_frames[0].shape[1:3]
    dim = int(np.asarray(episodes[0][1]).shape[1])
    info = {
        "codebase_version": "v3.0", "fps": fps, "total_episodes": len(episodes), "total_frames": index,
        "data_path": DATA_PATH, "video_path": VIDEO_PATH,
        "features": {
            camera: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]},
            "action": {"dtype": "float32", "shape": [dim]},
            "observation.state": {"dtype": "float32", "shape": [dim]},
        },
    }  # fmt: skip
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return root


def _ensure(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
