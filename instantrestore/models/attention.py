"""Shared-image attention as diffusers attention processors.

The reference branch (a frozen copy of the UNet) runs its up-block self-attention layers with a
`ReferenceRecordProcessor`, which computes plain self-attention and records the layer's keys and values.
The restoring UNet runs the same layers with a `SharedAttnProcessor`, whose queries attend to those
reference keys/values (and, with `train_input`, to the input's own). Everything else in both UNets is the
stock diffusers attention: the processors are swapped in by layer name with `unet.set_attn_processor`.

Layer names are the attention module names, e.g. `up_blocks.1.attentions.0.transformer_blocks.0.attn1`
(diffusers' processor keys without the trailing `.processor`). Recorded K/V of one layer are one tensor
(2, B, K, N, C): key/value x batch x references x tokens x channels (before the split into heads).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from instantrestore.errors import ConfigError


def up_block_self_attention_layers(unet: torch.nn.Module, prefixes: Sequence[str] | None = None) -> list[str]:
    """Names of the self-attention (attn1) layers of the UNet's up-blocks: the layers that share attention.
    `prefixes` keeps only the layers whose name starts with one of them (None: all)."""
    layers = [name.removesuffix(".processor") for name in unet.attn_processors
              if name.startswith("up_blocks.") and name.endswith(".attn1.processor")]
    if prefixes is None:
        return layers
    chosen = [layer for layer in layers if any(layer.startswith(prefix) for prefix in prefixes)]
    if not chosen:
        raise ConfigError(f"model.shared_layers {list(prefixes)} matches none of {layers}")
    return chosen


def install_processors(unet: torch.nn.Module, make_processor: Callable[[str], object],
                       prefixes: Sequence[str] | None = None) -> dict[str, object]:
    """Put `make_processor(layer)` on the up-block attn1 layers (those matching `prefixes`, default all);
    other layers keep their processor."""
    processors = dict(unet.attn_processors)
    installed = {}
    for layer in up_block_self_attention_layers(unet, prefixes):
        installed[layer] = processors[f"{layer}.processor"] = make_processor(layer)
    unet.set_attn_processor(processors)  # diffusers wants one entry per attention layer
    return installed


@dataclass
class ReferenceStore:
    """What the two UNets exchange.

    recorded: filled by the reference branch, layer -> (2, B*K, N, C) keys and values.
    kv:       read by the restoring UNet, layer -> (2, 1 or B, K, N, C); empty = no references.
    mask:     (B, K) bool, True where reference k of face b is used (reference dropout); None = all used.
    """

    recorded: dict[str, torch.Tensor] = field(default_factory=dict)
    kv: dict[str, torch.Tensor] = field(default_factory=dict)
    mask: torch.Tensor | None = None


@dataclass
class AttentionCapture:
    """Attention probabilities of one sharing layer, kept for the landmark attention loss.

    probs: (B, heads, Nq, self_tokens + num_refs * ref_tokens); each row sums to 1 over all keys. The
           key axis holds the input's own tokens first (self_tokens = Nq when they take part, else 0),
           then each reference's ref_tokens in order. Tokens are the latent grid at this layer, row-major,
           side x side.
    """

    probs: torch.Tensor
    self_tokens: int
    num_refs: int
    ref_tokens: int

    @property
    def side(self) -> int:
        return math.isqrt(self.probs.shape[2])

    def reference(self, index: int) -> torch.Tensor:
        """(B, heads, Nq, ref_tokens): attention of every input query to the keys of reference `index`."""
        start = self.self_tokens + index * self.ref_tokens
        return self.probs[..., start:start + self.ref_tokens]

    def references(self) -> torch.Tensor:
        """(B, heads, Nq, num_refs, ref_tokens)."""
        refs = self.probs[..., self.self_tokens:]
        return refs.unflatten(-1, (self.num_refs, self.ref_tokens))



def _heads(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """(B, N, C) -> (B, heads, N, C/heads) each, with the layer's query/key norms applied as diffusers does."""
    query, key, value = (_split_heads(t, attn.heads) for t in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key, value

class _SelfAttentionProcessor:
    """The steps of diffusers' AttnProcessor2_0 around the attention itself, for self-attention layers.

    Subclasses decide only how queries meet keys/values (`attend`), the seam where sharing happens.
    """

    def __init__(self, store: ReferenceStore, layer: str) -> None:
        self.store = store
        self.layer = layer

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError(f"{self.layer}: reference processors are for self-attention layers only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        hidden_states = self.attend(attn, query, key, value, attention_mask)  # (B, N, heads * head_dim)

        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def attend(self, attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Plain multi-head attention, exactly as AttnProcessor2_0 computes it."""
        batch_size = query.shape[0]
        query, key, value = _heads(attn, query, key, value)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        return out.transpose(1, 2).reshape(batch_size, -1, out.shape[1] * out.shape[3]).to(query.dtype)


class ReferenceRecordProcessor(_SelfAttentionProcessor):
    """Reference branch: plain self-attention that also records this layer's keys and values."""

    def attend(self, attn, query, key, value, attention_mask):
        self.store.recorded[self.layer] = torch.stack([key, value])  # (2, B*K, N, C)
        return super().attend(attn, query, key, value, attention_mask)


class SharedAttnProcessor(_SelfAttentionProcessor):
    """Restoring UNet: queries of the input attend to the references' keys/values at this layer.

    train_input: the input's own keys/values are concatenated before the references' (authors: off).
                 A face whose references are all masked out always attends to itself, so it is restored blind.
    adain:       each reference's values are renormalised per channel to the mean/std (over tokens) of the
                 input's own values before attention.
    locality:    sigma (a fraction of the face's width) of a Gaussian prior on where a query looks in each
                 reference: -d^2 / (2 sigma^2) is added to the reference keys' scores, d the distance
                 between the query's and the key's places on their grids. Aligned faces hold the same
                 feature at nearly the same place, so the prior finds the correspondence a small UNet's
                 near-uniform attention does not. None: no prior (the authors').
    capture:     keep `captured` (an AttentionCapture) from the next call; computed with an explicit
                 softmax, the output is the same as without capturing.
    With no references stored the layer is plain self-attention, identical to diffusers' processor.
    """

    def __init__(self, store: ReferenceStore, layer: str, train_input: bool = False, adain: bool = False,
                 locality: float | None = None) -> None:
        super().__init__(store, layer)
        self.train_input = train_input
        self.adain = adain
        self.locality = locality
        self.capture = False
        self.captured: AttentionCapture | None = None

    def attend(self, attn, query, key, value, attention_mask):
        reference_kv = self.store.kv.get(self.layer)
        if reference_kv is None:
            if self.capture:
                return self._attend_capturing(attn, query, key, value, attention_mask, self_tokens=key.shape[1],
                                              num_refs=0, ref_tokens=0)
            return super().attend(attn, query, key, value, attention_mask)
        if attention_mask is not None:
            raise ValueError(f"{self.layer}: shared attention does not take an attention mask")

        batch_size, self_tokens, channels = key.shape
        ref_keys, ref_values = reference_kv.to(key.dtype).expand(-1, batch_size, -1, -1, -1)  # (B, K, N, C) each
        num_refs, ref_tokens = ref_keys.shape[1], ref_keys.shape[2]
        if self.adain:
            ref_values = _adain(ref_values, value)

        keys = [ref_keys.reshape(batch_size, num_refs * ref_tokens, channels)]
        values = [ref_values.reshape(batch_size, num_refs * ref_tokens, channels)]
        mask = self.store.mask
        key_mask = None
        if mask is not None:
            key_mask = [mask.to(key.device).repeat_interleave(ref_tokens, dim=1)]  # (B, K*N)
        blind = None if mask is None else ~mask.any(dim=1)
        include_self = self.train_input or (blind is not None and bool(blind.any()))
        if include_self:
            keys.insert(0, key)
            values.insert(0, value)
            if key_mask is not None:
                sees_self = torch.ones_like(blind) if self.train_input else blind
                key_mask.insert(0, sees_self[:, None].expand(-1, self_tokens).to(key.device))
        key, value = torch.cat(keys, dim=1), torch.cat(values, dim=1)
        attention_mask = None if key_mask is None else torch.cat(key_mask, dim=1)[:, None, None, :]  # (B,1,1,keys)
        own_keys = self_tokens if include_self else 0
        if self.locality is not None:
            attention_mask = self._with_locality_prior(attention_mask, query.shape[1], own_keys, num_refs, ref_tokens, query)

        if self.capture:
            return self._attend_capturing(attn, query, key, value, attention_mask,
                                          self_tokens=own_keys, num_refs=num_refs, ref_tokens=ref_tokens)
        return super().attend(attn, query, key, value, attention_mask)

    def _with_locality_prior(self, attention_mask, query_tokens, self_tokens, num_refs, ref_tokens, like):
        """The boolean key mask (or None) -> additive scores (1 or B, 1, Nq, keys): the locality prior on the
        reference keys, 0 on the input's own, -inf where masked."""
        prior = _key_scores_prior(query_tokens, self_tokens, num_refs, ref_tokens, self.locality, like.device).to(like.dtype)
        if attention_mask is None:
            return prior
        return prior.masked_fill(~attention_mask, float("-inf"))

    def _attend_capturing(self, attn, query, key, value, attention_mask, self_tokens, num_refs, ref_tokens):
        # An explicit softmax, because scaled_dot_product_attention does not return its probabilities.
        batch_size = query.shape[0]
        query, key, value = _heads(attn, query, key, value)
        scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])  # (B, heads, Nq, keys)
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        elif attention_mask is not None:
            scores = scores + attention_mask
        probs = scores.softmax(dim=-1)
        self.captured = AttentionCapture(probs, self_tokens, num_refs, ref_tokens)
        out = probs @ value
        return out.transpose(1, 2).reshape(batch_size, -1, out.shape[1] * out.shape[3]).to(query.dtype)


def locality_prior(query_tokens: int, key_tokens: int, sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(Nq, Nk) log-Gaussian -d^2 / (2 sigma^2) between the places of square, row-major token grids spanning the
    same face (d and sigma in face widths; the grids may differ in size)."""
    def places(tokens: int) -> torch.Tensor:
        side = math.isqrt(tokens)
        centres = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side
        rows, columns = torch.meshgrid(centres, centres, indexing="ij")
        return torch.stack([rows.flatten(), columns.flatten()], dim=1)  # (tokens, 2): (y, x)
    distance_squared = (places(query_tokens)[:, None] - places(key_tokens)[None]).square().sum(-1)
    return -distance_squared / (2 * sigma ** 2)


@functools.lru_cache(maxsize=16)
def _key_scores_prior(query_tokens: int, self_tokens: int, num_refs: int, ref_tokens: int, sigma: float,
                      device: torch.device) -> torch.Tensor:
    """(1, 1, Nq, self_tokens + num_refs * ref_tokens): 0 on the input's own keys, the locality prior on each
    reference's. Cached: building it costs as much as the attention it biases."""
    prior = locality_prior(query_tokens, ref_tokens, sigma, device)
    return torch.cat([prior.new_zeros(query_tokens, self_tokens), prior.repeat(1, num_refs)], dim=1)[None, None]


def _split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * head_dim) -> (B, heads, N, head_dim)."""
    batch_size, tokens, channels = tensor.shape
    return tensor.view(batch_size, tokens, heads, channels // heads).transpose(1, 2)


def _adain(ref_values: torch.Tensor, own_values: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give each reference's values (B, K, N, C) the per-channel mean/std of the input's values (B, N, C).

    As the authors compute it, so their weights see the same numbers: unbiased std over the tokens,
    `eps` added to both standard deviations."""
    ref_mean, ref_std = ref_values.mean(dim=2, keepdim=True), ref_values.std(dim=2, keepdim=True)
    own_mean, own_std = own_values.mean(dim=1, keepdim=True), own_values.std(dim=1, keepdim=True)
    return (ref_values - ref_mean) / (ref_std + eps) * (own_std[:, None] + eps) + own_mean[:, None]
