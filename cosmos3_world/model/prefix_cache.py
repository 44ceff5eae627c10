"""The Reasoner prefix: per-layer keys/values of an encoded instruction, and an LRU cache of them.

The understanding (Reasoner) pathway attends causally over the text alone and never sees
generation tokens, so the keys/values it hands the generation pathway depend on the token ids
only. They are computed once per instruction and reused by every denoising step of every chunk.
Because attention is causal, the K/V of the first n tokens of a prompt are those of any prompt
that starts with the same n tokens: the cache reuses the longest cached prefix and encodes only
the rest.

The cache belongs to whoever runs the generator (the world engine) and watches the weights it
was filled from: a changed dtype or device (`Module._apply`, which `.to()` uses), a reload
(`load_state_dict`), an optimizer step (tensor version counters) or replaced tensors all empty
it on the next lookup, so stale keys/values are never served. (Writes through `param.data`
bypass version counters: call `clear()` after those.)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch


@dataclass(frozen=True)
class PrefixKV:
    """Keys/values of a text prefix, one entry per layer, each [kv_heads, length, head_dim] (RoPE applied).

    `keys` are what the understanding pathway itself attends with (needed to extend the prefix);
    `gen_keys` are what the generation pathway reads, which differ only when the checkpoint has
    a separate `k_norm_und_for_gen`.
    """

    token_ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    gen_keys: tuple[torch.Tensor, ...] | None = None

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def keys_for_generation(self) -> tuple[torch.Tensor, ...]:
        return self.gen_keys if self.gen_keys is not None else self.keys

    @property
    def nbytes(self) -> int:
        tensors = [*self.keys, *self.values, *(self.gen_keys or ())]
        return sum(t.numel() * t.element_size() for t in tensors)

    def truncate(self, n: int) -> "PrefixKV":
        """The K/V of the first n tokens (valid because the understanding pathway is causal), copied
        so that the result owns its memory and the cache's byte count stays true."""
        cut = lambda ts: tuple(t[:, :n].clone() for t in ts)  # noqa: E731
        return PrefixKV(
            self.token_ids[:n], cut(self.keys), cut(self.values), cut(self.gen_keys) if self.gen_keys else None
        )


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class PrefixCacheStats:
    hits: int = 0  # prompts found whole in the cache
    partial_hits: int = 0  # prompts that reused a cached prefix and encoded the rest
    misses: int = 0  # prompts encoded from scratch
    tokens_encoded: int = 0  # text tokens run through the understanding pathway


class PrefixEncoder(Protocol):
    """What the cache needs of a generator."""

    weights_epoch: int  # bumped by the generator whenever its tensors are converted or reloaded

    def encode_prefix(self, token_ids: Sequence[int], past: PrefixKV | None = None) -> PrefixKV: ...

    def understanding_parameters(self) -> list[torch.Tensor]: ...


def _weights_fingerprint(generator: PrefixEncoder) -> tuple:
    """Identity and version of every tensor the prefix K/V depend on (cheap: no data is read)."""
    return (generator.weights_epoch, *((p.data_ptr(), p._version) for p in generator.understanding_parameters()))


@dataclass
class PrefixCache:
    """LRU cache of encoded prefixes for one generator, bounded in bytes, reusing the longest prefix."""

    generator: PrefixEncoder
    max_bytes: int = 2 << 30
    stats: PrefixCacheStats = field(default_factory=PrefixCacheStats)
    _entries: "OrderedDict[tuple[int, ...], PrefixKV]" = field(default_factory=OrderedDict, repr=False)
    _fingerprint: tuple | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()

    def check_weights(self) -> None:
        """Empty the cache if the generator's understanding weights changed since it was filled."""
        fingerprint = _weights_fingerprint(self.generator)
        if fingerprint != self._fingerprint:
            self._entries.clear()
            self._fingerprint = fingerprint

    def get_many(self, token_ids: Sequence[Sequence[int]]) -> list[PrefixKV]:
        """`get` for several prompts, checking the weights once."""
        self.check_weights()
        return [self._get(ids) for ids in token_ids]

    def get(self, token_ids: Sequence[int]) -> PrefixKV:
        """The prefix K/V for `token_ids`, encoding only what no cached prompt shares."""
        self.check_weights()
        return self._get(token_ids)

    def _get(self, token_ids: Sequence[int]) -> PrefixKV:
        key = tuple(int(t) for t in token_ids)
        if not key:
            raise ValueError("token_ids must hold at least one token")
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return hit
        best, best_len = None, 0
        for cached_key, entry in self._entries.items():
            n = _common_prefix_length(cached_key, key)
            if n > best_len:
                best, best_len = entry, n
        if best is not None:
            self._entries.move_to_end(best.token_ids)
            self.stats.partial_hits += 1
            past = best.truncate(best_len)
        else:
            self.stats.misses += 1
            past = None
        self.stats.tokens_encoded += len(key) - best_len
        entry = self.generator.encode_prefix(key, past=past) if best_len < len(key) else past
        self._entries[key] = entry
        self._evict()
        return entry

    def _evict(self) -> None:
        while len(self._entries) > 1 and self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)
