"""Shared neural blocks (DESIGN.md, "Layout": nn/)."""

# Attention, positional encodings, HSTU and the causal sequence encoder (sequential retrievers).
from recstack.nn.attention import MultiHeadSelfAttention, PointwiseFeedForward, TransformerBlock, causal_mask
from recstack.nn.hstu import HSTUBlock, hstu_attention
from recstack.nn.positional import (
    LearnedPositionalEmbedding,
    RelativeAttentionBias,
    log_time_buckets,
    relative_position_buckets,
)
from recstack.nn.sequence_encoder import CausalSequenceEncoder
