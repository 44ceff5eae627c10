"""Training windows cut from recorded push episodes, laid out exactly as the world engine lays out a chunk.

A window of a chunk with `k` history latent frames and `N` new frames (space-to-depth codec, temporal factor 1):
frames [k + N, H, W, 3] and the k + N - 1 actions between them (action i leads from frame i to frame i + 1).
The engine conditions on the same geometry (`WorldModel._world_job`: history frames clean, past actions clean,
the chunk's frames noisy; `infer_actions`: every frame clean, every action noisy), and the prompt is the engine's
action caption of the window (`PromptEncoder.action_prompt_ids` with the embodiment's view point and fps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..sim.dataset import load_episode, load_index

# Training modes: which modalities are noised (the rest stay clean conditioning), as the reference does per mode.
FORWARD = "forward"  # forward dynamics: chunk frames noisy, actions clean
POLICY = "policy"  # policy mode: chunk frames and chunk actions noisy, history and past actions clean
INVERSE = "inverse"  # inverse dynamics: every frame clean, every action noisy
MODES = (FORWARD, POLICY, INVERSE)


@dataclass
class Window:
    """One training example (before noising)."""

    frames: np.ndarray  # [k + N, H, W, 3] uint8
    actions: np.ndarray  # [k + N - 1, 2] float32 raw actions
    instruction: str
    history: int  # k: leading latent frames that are conditioning (forward / policy)
    mode: str
    episode: int = -1  # where the window lies in its EpisodeStore (-1: not from a store)
    start: int = -1  # its first frame within the episode

    @property
    def vision_noisy(self) -> tuple[int, ...]:
        """Latent frames denoised in this window (temporal factor 1: latent frame = pixel frame)."""
        return () if self.mode == INVERSE else tuple(range(self.history, len(self.frames)))

    @property
    def action_noisy(self) -> tuple[int, ...]:
        """Action rows denoised: none (forward), the chunk's (policy), all (inverse)."""
        if self.mode == FORWARD:
            return ()
        start = 0 if self.mode == INVERSE else self.history - 1
        return tuple(range(start, len(self.actions)))


class EpisodeStore:
    """Every episode of one or more dataset directories in memory: frames concatenated, with per-episode offsets."""

    def __init__(self, directories: Sequence[str | Path], max_episodes: int | None = None, progress: bool = True):
        frames, actions, starts, lengths, instructions, success, expert_from = [], [], [], [], [], [], []
        self.seeds: set[int] = set()
        files = []
        for d in directories:
            meta = load_index(d)
            files += [(Path(d) / e["file"], e["seed"]) for e in meta["episodes"]]
        files = files[:max_episodes]
        cursor = 0
        for path, seed in tqdm(files, desc="load episodes", disable=not progress):
            ep = load_episode(path)
            frames.append(ep.frames)
            actions.append(np.concatenate([ep.actions, np.zeros((1, 2), np.float32)]))  # pad: one row per frame
            starts.append(cursor)
            lengths.append(len(ep.actions))
            instructions.append(ep.instruction)
            success.append(bool(ep.success))
            expert_from.append(ep.expert_from)
            self.seeds.add(int(seed))
            cursor += len(ep.frames)
        if not files:
            raise ValueError(f"no episodes in {list(map(str, directories))}")
        self.frames = np.concatenate(frames)  # [sum(T + 1), H, W, 3] uint8
        self.actions = np.concatenate(actions)  # [sum(T + 1), 2]: row j is the action after frame j
        self.starts = np.asarray(starts)
        self.lengths = np.asarray(lengths)  # actions per episode (T)
        self.instructions = instructions
        self.success = np.asarray(success)  # [episodes] bool: the block reached the instructed goal
        self.expert_from = np.asarray(expert_from)  # [episodes] first action the recorded policy took (DAgger: the
        # actions before it are a learner's, fine for dynamics but not demonstrations)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def window(self, episode: int, start: int, history: int, chunk: int, mode: str) -> Window:
        """Frames start .. start + history + chunk - 1 of `episode` and the actions between them."""
        n = history + chunk
        if start < 0 or start + n - 1 > self.lengths[episode]:
            raise ValueError(f"window [{start}, {start + n}) outside episode {episode} ({self.lengths[episode]} steps)")
        s = self.starts[episode] + start
        return Window(
            frames=self.frames[s : s + n], actions=self.actions[s : s + n - 1], instruction=self.instructions[episode],
            history=history, mode=mode, episode=episode, start=start,
        )  # fmt: skip


@dataclass
class WindowSampler:
    """Draws random windows: the episode uniformly among those long enough, the start uniformly within it.

    history_probs[k - 1] is the probability of k history latent frames (the engine's first chunk after a reset has
    one, later chunks `history`); mode_probs weights FORWARD, POLICY, INVERSE. Windows that start at frame 0 are
    drawn with extra probability `start_prob`, since every rollout begins there. With `policy_from_success`,
    policy-mode windows come only from successful episodes (behaviour cloning learns from demonstrations that reach
    the goal; the dynamics modes learn from every policy, the failures included). Policy windows never denoise a
    learner's actions (`EpisodeStore.expert_from`): their chunk starts where the recorded policy had taken over.
    """

    store: EpisodeStore
    chunk: int = 4
    history_probs: tuple[float, ...] = (0.3, 0.7)
    mode_probs: tuple[float, float, float] = (0.5, 0.25, 0.25)
    start_prob: float = 0.1
    policy_from_success: bool = False

    def __post_init__(self) -> None:
        k = len(self.history_probs)  # the longest window
        if self.policy_from_success and not self._policy_episodes(k).any():
            raise ValueError(
                f"policy_from_success: the data holds no successful episode with {self.chunk} demonstrated steps "
                f"after {k} history frames to draw policy windows from (collect more episodes, or train policy mode "
                "on all of them: --policy-data all)"
            )

    def _first_start(self, k: int) -> np.ndarray:
        """[episodes] the earliest start of a policy window with k history frames: its chunk's first action
        (start + k - 1) must be the recorded policy's."""
        return np.maximum(self.store.expert_from - (k - 1), 0)

    def _policy_episodes(self, k: int) -> np.ndarray:
        """[episodes] bool: episodes a policy window with k history frames can be cut from."""
        ok = self.store.lengths - (k + self.chunk - 1) >= self._first_start(k)
        return ok & self.store.success if self.policy_from_success else ok

    def sample(self, rng: np.random.Generator, batch_size: int) -> list[Window]:
        out = []
        hp = np.asarray(self.history_probs, dtype=np.float64)
        mp = np.asarray(self.mode_probs, dtype=np.float64)
        for _ in range(batch_size):
            k = int(rng.choice(len(hp), p=hp / hp.sum())) + 1
            mode = MODES[int(rng.choice(3, p=mp / mp.sum()))]
            need = k + self.chunk - 1  # actions spanned
            ok = np.flatnonzero(self._policy_episodes(k) if mode == POLICY else self.store.lengths >= need)
            ep = int(ok[rng.integers(len(ok))])
            lo = int(self._first_start(k)[ep]) if mode == POLICY else 0  # the window's first frame: lo .. hi
            hi = int(self.store.lengths[ep] - need)
            start = lo if rng.random() < self.start_prob else int(rng.integers(lo, hi + 1))
            out.append(self.store.window(ep, start, k, self.chunk, mode))
        return out


def dataset_summary(directories: Sequence[str | Path]) -> dict:
    """Episode and step counts, success rate and policy mix of dataset directories."""
    eps = [e for d in directories for e in load_index(d)["episodes"]]
    policies: dict[str, int] = {}
    for e in eps:
        policies[e["policy"]] = policies.get(e["policy"], 0) + 1
    return {
        "episodes": len(eps),
        "steps": int(sum(e["length"] for e in eps)),
        "success_rate": float(np.mean([e["success"] for e in eps])) if eps else 0.0,
        "policies": policies,
    }


def write_summary(path: str | Path, directories: Sequence[str | Path]) -> None:
    Path(path).write_text(json.dumps(dataset_summary(directories), indent=1))
