"""The Reasoner prefix cache and batched generation are exact reformulations of the full forward."""

import pytest
import torch

from cosmos3_world import GenerationSpec, PrefixCache
from cosmos3_world.testing.reference import model_pair, reference_inputs, rel

TOL = 1e-5


@pytest.fixture(scope="module")
def models():
    return model_pair(seed=7, qk_norm_for_text=False, use_und_k_norm_for_gen=True)


def prefix_close(a, b):
    assert a.token_ids == b.token_ids
    for x, y in zip(a.keys + a.values + (a.gen_keys or ()), b.keys + b.values + (b.gen_keys or ())):
        assert x.shape == y.shape and rel(x, y) <= TOL


def test_extending_a_prefix_equals_encoding_it_whole(models):
    ours, _ = models
    ids = torch.randint(0, 512, (50,)).tolist()
    whole = ours.encode_prefix(ids)
    assert whole.gen_keys is not None  # this variant has a separate k norm for the generation pathway
    for cut in (1, 17, 49):
        prefix_close(ours.encode_prefix(ids, past=ours.encode_prefix(ids[:cut])), whole)
    prefix_close(whole.truncate(20), ours.encode_prefix(ids[:20]))
    with pytest.raises(ValueError, match="prefix of token_ids"):
        ours.encode_prefix(ids, past=ours.encode_prefix([ids[0] + 1]))


def test_cached_step_equals_full_forward_over_many_steps(models):
    ours, ref = models
    ids = torch.randint(0, 512, (40,)).tolist()
    vision = torch.randn(8, 3, 4, 6)
    action = torch.randn(6, 12)
    cache = PrefixCache(ours)
    for step, t in enumerate((999.0, 600.0, 10.0)):
        spec = GenerationSpec(
            prefix=cache.get(ids),
            vision_shape=(3, 4, 6),
            vision_noisy=(1, 2),
            action_len=6,
            action_noisy=tuple(range(6)),
            domain_id=2,
        )
        out = ours.denoise_step(ours.plan([spec]), [vision], t, action=[action])
        kw = reference_inputs(ref, ids, vision, [0], t, action=action, domain_id=2)
        with torch.no_grad():
            expected = ref(**kw)
        assert rel(out.sample[0], expected.sample[0][0]) <= TOL
        assert rel(out.action[0], expected.action[0]) <= TOL
        vision = vision + 0.1 * out.sample[0]
    assert cache.stats.misses == 1 and cache.stats.hits == 2 and cache.stats.tokens_encoded == 40


def test_cache_reuses_longest_prefix_and_is_bounded_in_bytes(models):
    ours, _ = models
    cache = PrefixCache(ours)
    system = list(range(10, 40))  # shared system prompt + template
    a, b, c = system + [50, 51, 52], system + [60, 61], system[:12]
    pa = cache.get(a)
    pb = cache.get(b)
    assert cache.stats.partial_hits == 1 and cache.stats.tokens_encoded == len(a) + 2
    prefix_close(pb, ours.encode_prefix(b))
    pc = cache.get(c)  # a prefix of a cached prompt: nothing to encode
    assert cache.stats.tokens_encoded == len(a) + 2
    prefix_close(pc, ours.encode_prefix(c))
    assert cache.get(a) is pa and cache.stats.hits == 1
    # LRU eviction under a byte budget: keep room for two of these entries only.
    small = PrefixCache(ours, max_bytes=int(2.5 * pa.nbytes))
    for prompt in (a, [7] + a[1:], [8] + a[1:]):
        small.get(prompt)
    assert len(small) == 2 and small.nbytes <= small.max_bytes
    small.get([8] + a[1:])
    assert small.stats.hits == 1
    small.get(a)  # evicted earlier: encoded again
    assert small.stats.misses == 4


def test_batched_step_equals_per_item_steps(models):
    ours, _ = models
    g = torch.Generator().manual_seed(0)
    items = [  # (prompt length, latent shape, noisy frames, action tokens, noisy actions, domain, timestep)
        (3, (2, 4, 4), (1,), 6, tuple(range(6)), 1, 900.0),
        (41, (3, 5, 7), (1, 2), 0, (), 0, 400.0),
        (17, (2, 4, 4), (0, 1), 4, (), 6, 50.0),
        (41, (2, 4, 4), (1,), 6, (0, 1, 2), 3, 900.0),
    ]
    specs, visions, actions, ts = [], [], [], []
    for L, shape, noisy, n_act, act_noisy, dom, t in items:
        ids = torch.randint(0, 512, (L,), generator=g).tolist()
        specs.append(
            GenerationSpec(
                prefix=ours.encode_prefix(ids),
                vision_shape=shape,
                vision_noisy=noisy,
                fps=12.0,
                action_len=n_act,
                action_noisy=act_noisy,
                domain_id=dom,
            )
        )
        visions.append(torch.randn(8, *shape, generator=g))
        actions.append(torch.randn(n_act, 12, generator=g) if n_act else None)
        ts.append(t)
    batched = ours.denoise_step(ours.plan(specs), visions, ts, action=actions)
    for i, spec in enumerate(specs):
        single = ours.denoise_step(ours.plan([spec]), [visions[i]], ts[i], action=[actions[i]])
        assert rel(batched.sample[i], single.sample[0]) <= TOL
        if spec.action_len:
            assert rel(batched.action[i], single.action[0]) <= TOL


def test_sequences_are_bucketed_by_lengths_without_padding(models):
    ours, _ = models
    cond, uncond = ours.encode_prefix(list(range(1, 21))), ours.encode_prefix(list(range(101, 121)))
    specs = [GenerationSpec(prefix=p, vision_shape=(2, 4, 4), vision_noisy=(1,)) for p in (cond, uncond)]
    plan = ours.plan(specs)
    assert len(plan.layout.buckets) == 1 and plan.layout.buckets[0].rows == slice(0, 2 * 8)
    short = ours.encode_prefix([5, 6, 7])
    mixed = ours.plan(specs + [GenerationSpec(prefix=short, vision_shape=(2, 4, 4), vision_noisy=(1,)), specs[0]])
    assert sorted(b.count for b in mixed.layout.buckets) == [1, 3]
    assert mixed.layout.buckets[0].keys[0].stride(0) != 0  # two distinct prefixes of one length: stacked
    v = torch.randn(8, 2, 4, 4)
    out = ours.denoise_step(plan, [v, v], 500.0)
    single = ours.denoise_step(ours.plan(specs[1:]), [v], 500.0)
    assert rel(out.sample[1], single.sample[0]) <= TOL
    assert rel(out.sample[0], out.sample[1]) > 1e-3  # the prompt matters


def test_step_input_errors_name_the_argument(models):
    ours, _ = models
    spec = GenerationSpec(
        prefix=ours.encode_prefix([1, 2, 3]),
        vision_shape=(2, 4, 4),
        vision_noisy=(1,),
        action_len=4,
        action_noisy=(0, 1, 2, 3),
        domain_id=1,
    )
    plan = ours.plan([spec])
    with pytest.raises(ValueError, match=r"vision\[0\] must have shape \(8, 2, 4, 4\)"):
        ours.denoise_step(plan, [torch.randn(8, 2, 4, 5)], 1.0, action=[torch.randn(4, 12)])
    with pytest.raises(ValueError, match="action must hold one tensor per planned sequence"):
        ours.denoise_step(plan, [torch.randn(8, 2, 4, 4)], 1.0)
    with pytest.raises(ValueError, match="timesteps must hold 1 or 1 values"):
        ours.denoise_step(plan, [torch.randn(8, 2, 4, 4)], [1.0, 2.0], action=[torch.randn(4, 12)])
    with pytest.raises(ValueError, match="domain_id must be in"):
        ours.plan(
            [
                GenerationSpec(
                    prefix=spec.prefix,
                    vision_shape=(2, 4, 4),
                    vision_noisy=(1,),
                    action_len=2,
                    action_noisy=(0,),
                    domain_id=99,
                )
            ]
        )
    with pytest.raises(ValueError, match="vision_noisy"):
        ours.plan([GenerationSpec(prefix=spec.prefix, vision_shape=(2, 4, 4), vision_noisy=(2,))])
    with pytest.raises(ValueError, match="token_ids must be in"):
        ours.encode_prefix([1, 10_000])


def test_compiled_generation_matches_eager():
    ours, _ = model_pair(seed=9)
    spec = GenerationSpec(
        prefix=ours.encode_prefix(list(range(1, 30))),
        vision_shape=(2, 4, 6),
        vision_noisy=(1,),
        action_len=4,
        action_noisy=(0, 1, 2, 3),
        domain_id=2,
    )
    plan = ours.plan([spec, spec])
    v, a = torch.randn(8, 2, 4, 6), torch.randn(4, 12)
    eager = ours.denoise_step(plan, [v, v], 300.0, action=[a, a])
    ours.compile_generation()
    compiled = ours.denoise_step(plan, [v, v], 300.0, action=[a, a])
    assert rel(compiled.sample[0], eager.sample[0]) <= TOL and rel(compiled.action[1], eager.action[1]) <= TOL


def test_prefix_cache_never_serves_stale_keys_after_the_weights_change():
    """A cache filled before a reload, an in-place update, a dtype change or a device move re-encodes."""
    ours, _ = model_pair(seed=3)
    cache = PrefixCache(ours)
    ids = list(range(5, 30))

    def fresh_keys() -> torch.Tensor:
        return ours.encode_prefix(ids).keys[-1]

    assert torch.equal(cache.get(ids).keys[-1], fresh_keys()) and cache.stats.misses == 1
    assert cache.get(ids) is cache.get(ids)  # unchanged weights: a hit
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    state["layers.0.self_attn.to_k.weight"].mul_(1.5)
    ours.load_state_dict(state)  # a reload
    assert torch.equal(cache.get(ids).keys[-1], fresh_keys()) and cache.stats.misses == 2
    with torch.no_grad():
        ours.layers[0].mlp.up_proj.weight.add_(0.1)  # an optimizer-style in-place update
    assert torch.equal(cache.get(ids).keys[-1], fresh_keys()) and cache.stats.misses == 3
    ours.to(torch.bfloat16)  # a dtype change
    assert cache.get(ids).keys[-1].dtype == torch.bfloat16 and cache.stats.misses == 4
    ours.to(torch.float32).to("cpu")  # back, and a device move (the same device here: still re-encoded)
    assert torch.equal(cache.get(ids).keys[-1], fresh_keys()) and cache.stats.misses >= 5
    with torch.no_grad():
        ours.layers[-1].self_attn.add_q_proj.weight.add_(0.1)  # generation-pathway weights do not touch the prefix
    before = cache.stats.misses
    cache.get(ids)
    assert cache.stats.misses == before


@pytest.mark.parametrize("tcf", [1, 4])
def test_action_i_sits_at_the_time_of_frame_i_plus_1_for_any_codec(models, tcf):
    """Positions follow the codec's temporal compression: with one pixel frame per latent frame (tcf 1) action i
    shares its rotary time with latent frame i + 1; the published layout (tcf 4) keeps the reference's ids."""
    ours, _ = models
    prefix = ours.encode_prefix(list(range(1, 20)))
    spec = GenerationSpec(prefix=prefix, vision_shape=(5, 2, 2), vision_noisy=(1, 2, 3, 4), fps=10.0, action_len=4,
                          temporal_compression=tcf)  # fmt: skip
    plan = ours.plan([spec])
    assert ours.config.latent_patch_size == 2  # 2x2 latents: one token per frame
    frame_cos = plan.cos[plan.vision_rows]  # [5, D]: (t_j, 0, 0)
    action_cos = plan.cos[plan.action_rows]  # [4, D]: (t_i, 0, 0)
    if tcf == 1:
        torch.testing.assert_close(action_cos, frame_cos[1:], atol=1e-6, rtol=0)
    else:  # latent frame j covers pixel frames up to 4 j: action 4 j - 1 would share its time
        assert not torch.allclose(action_cos, frame_cos[1:], atol=1e-3)
        default = ours.plan([GenerationSpec(prefix=prefix, vision_shape=(5, 2, 2), vision_noisy=(1,), fps=10.0,
                                            action_len=4)])  # fmt: skip
        torch.testing.assert_close(default.cos, plan.cos, atol=0, rtol=0)


def test_placed_action_tokens_share_the_position_of_the_token_they_point_at(models):
    """With `action_positions`, action i sits at the (row, column) it is given and at the time of frame i + 1, so its
    rotary position equals that frame's token there (attention reaches it as a same-place copy); unplaced actions
    keep spatial position 0, and a wrong number of positions is refused by name."""
    ours, _ = models
    prefix = ours.encode_prefix(list(range(1, 20)))
    kw = dict(prefix=prefix, vision_shape=(5, 6, 6), vision_noisy=(1, 2, 3, 4), fps=10.0, action_len=4,
              temporal_compression=1)  # fmt: skip
    places = ((0.0, 2.0), (1.0, 1.0), (2.0, 0.0), (0.0, 0.0))  # (row, column) on the 3x3 token grid
    plan = ours.plan([GenerationSpec(**kw, action_positions=places)])
    frame_cos = plan.cos[plan.vision_rows].view(5, 3, 3, -1)  # [T, rows, columns, D]
    action_cos = plan.cos[plan.action_rows]  # [4, D]
    for i, (r, c) in enumerate(places):
        torch.testing.assert_close(action_cos[i], frame_cos[i + 1, int(r), int(c)], atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.plan([GenerationSpec(**kw)]).cos[plan.action_rows][3], action_cos[3])  # at 0
    assert not torch.allclose(ours.plan([GenerationSpec(**kw)]).cos[plan.action_rows][0], action_cos[0], atol=1e-3)
    with pytest.raises(ValueError, match="action_positions holds 2 .row, column. pairs for 4 action tokens"):
        ours.plan([GenerationSpec(**kw, action_positions=places[:2])])
