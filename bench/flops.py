"""Matmul FLOPs of Qwen2.5-VL's forward, for the benchmarks' achieved FLOP/s and MFU.

Only matrix products count (2 FLOPs per multiply-add), as MFU is conventionally reckoned; norms, activations, RoPE,
softmax and the value head are left out. A backward pass costs twice its forward. `config` is a transformers
Qwen2_5_VLConfig or its config.json as a dict (the hub's flat layout or one with "text_config").
"""


def _field(obj, key, *aliases):
    for k in (key, *aliases):
        if (k in obj) if isinstance(obj, dict) else hasattr(obj, k):
            return obj[k] if isinstance(obj, dict) else getattr(obj, k)
    raise KeyError(f"config has no {key}")


def _text(config):
    if isinstance(config, dict):
        return config.get("text_config") or config
    return getattr(config, "text_config", config)


def _vision(config):
    return _field(config, "vision_config")


def decoder_linear_params(config) -> int:
    """Weights of the decoder's projections (attention q/k/v/o and the gated MLP), all layers."""
    t = _text(config)
    h, inter, layers = _field(t, "hidden_size"), _field(t, "intermediate_size"), _field(t, "num_hidden_layers")
    kv_width = _field(t, "num_key_value_heads") * (h // _field(t, "num_attention_heads"))
    return layers * (2 * h * h + 2 * h * kv_width + 3 * h * inter)


def causal_attention_flops(config, tokens: int) -> float:
    """QK^T and AV of every decoder layer over one causal sequence (half of the square)."""
    t = _text(config)
    return float(_field(t, "num_hidden_layers") * 2 * tokens * tokens * _field(t, "hidden_size"))


def prefill_flops(config, tokens: int) -> float:
    """The decoder over one causal sequence of `tokens` (no lm_head)."""
    return 2.0 * decoder_linear_params(config) * tokens + causal_attention_flops(config, tokens)


def decode_step_flops(config, context: int) -> float:
    """One cached decode step of one sequence attending to `context` positions (no lm_head)."""
    t = _text(config)
    return float(2 * decoder_linear_params(config) + _field(t, "num_hidden_layers") * 4 * context * _field(t, "hidden_size"))


def lm_head_flops(config, positions: int) -> float:
    t = _text(config)
    return float(2 * _field(t, "hidden_size") * _field(t, "vocab_size") * positions)


def vision_flops(config, patches: int) -> float:
    """The vision tower over one image of `patches` 14-px patches (before the 2x2 merge): patch embedding, blocks
    (window attention within --window_size windows, full attention in fullatt_block_indexes), merger."""
    v = _vision(config)
    vh, inter, depth = _field(v, "hidden_size"), _field(v, "intermediate_size"), _field(v, "depth")
    patch_dim = _field(v, "in_channels", "in_chans") * _field(v, "temporal_patch_size") * _field(v, "patch_size") ** 2
    merge = _field(v, "spatial_merge_size") ** 2
    window = min((_field(v, "window_size") // _field(v, "patch_size")) ** 2, patches)
    full = len(_field(v, "fullatt_block_indexes"))
    blocks = depth * 2 * (4 * vh * vh + 3 * vh * inter) * patches
    attention = (depth - full) * 4 * patches * window * vh + full * 4 * patches * patches * vh
    merger = 2 * ((vh * merge) ** 2 + vh * merge * _field(v, "out_hidden_size")) * (patches // merge)
    return float(2 * patch_dim * vh * patches + blocks + attention + merger)


def scoring_flops(config, tokens: int, image_patches) -> float:
    """One reward-scoring item: its images through the vision tower, then the decoder over all its tokens."""
    return prefill_flops(config, tokens) + sum(vision_flops(config, p) for p in image_patches)


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9
