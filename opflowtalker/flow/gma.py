"""GMA: Global Motion Aggregation (Jiang et al., ICCV 2021), the flow network the paper supervises
lip motion with (Eq. 6) and the best row of Table 3a.

GMA is RAFT whose update block also sees the motion features of the whole frame, aggregated with an
attention computed once per image pair from frame 1's context features: pixels that look alike
(the same lip, the same cheek) are assumed to move alike, which fills in motion where matching is
ambiguous. The module tree and state-dict keys are those of zacjiang/GMA's ``RAFTGMA``, so the
released ``gma-things.pth`` loads strictly; the calling convention is
:class:`opflowtalker.flow.raft.RAFT`'s.
"""
from __future__ import annotations

import torch
from torch import nn

from .extractor import BasicEncoder
from .raft import RecurrentFlowNetwork
from .update import GMAUpdateBlock

__all__ = ["RelPosEmb", "Attention", "GMA"]

SIMILARITIES = ("content", "position", "position_and_content")


class RelPosEmb(nn.Module):
    """Learnt embeddings of relative row and column offsets, for positional attention scores."""

    def __init__(self, max_pos_size: int, dim_head: int):
        super().__init__()
        self.rel_height = nn.Embedding(2 * max_pos_size - 1, dim_head)
        self.rel_width = nn.Embedding(2 * max_pos_size - 1, dim_head)
        positions = torch.arange(max_pos_size)
        # Persistent: the released checkpoints carry this table.
        self.register_buffer("rel_ind", positions.view(1, -1) - positions.view(-1, 1) + max_pos_size - 1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Scores (B, heads, H, W, H, W) of queries ``q`` (B, heads, H, W, d) against each position."""
        _, _, h, w, _ = q.shape
        height = self.rel_height(self.rel_ind[:h, :h].reshape(-1)).view(h, h, -1)  # [row, other row, d]
        width = self.rel_width(self.rel_ind[:w, :w].reshape(-1)).view(w, w, -1)  # [col, other col, d]
        height_score = torch.einsum("bnxyd,xud->bnxyu", q, height)
        width_score = torch.einsum("bnxyd,yvd->bnxyv", q, width)
        return height_score[..., :, None] + width_score[..., None, :]


class Attention(nn.Module):
    """Self-attention weights (B, heads, HW, HW) among the positions of a context feature map.

    The released model compares content only (query-key products); ``similarity`` also allows
    GMA's positional variants, whose embeddings exist in every checkpoint whether used or not.
    """

    def __init__(self, dim: int = 128, max_pos_size: int = 100, heads: int = 4, dim_head: int = 128,
                 similarity: str = "content"):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"attention similarity {similarity!r} is none of {SIMILARITIES}")
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.similarity = similarity
        self.to_qk = nn.Conv2d(dim, heads * dim_head * 2, 1, bias=False)
        self.pos_emb = RelPosEmb(max_pos_size, dim_head)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        b, _, h, w = fmap.shape
        q, k = self.to_qk(fmap).chunk(2, dim=1)
        q, k = (t.view(b, self.heads, -1, h, w).permute(0, 1, 3, 4, 2) for t in (q, k))  # (b, n, h, w, d)
        q = self.scale * q
        if self.similarity == "position":
            sim = self.pos_emb(q).reshape(b, self.heads, h * w, h * w)
        else:
            sim = torch.matmul(q.reshape(b, self.heads, h * w, -1), k.reshape(b, self.heads, h * w, -1).transpose(-2, -1))
            if self.similarity == "position_and_content":
                sim = sim + self.pos_emb(q).reshape(b, self.heads, h * w, h * w)
        return sim.softmax(dim=-1)


class GMA(RecurrentFlowNetwork):
    """RAFT with global motion aggregation (5,879,873 parameters with one head, as released)."""

    def __init__(self, heads: int = 1, similarity: str = "content", dropout: float = 0.0):
        hdim = cdim = 128
        fnet = BasicEncoder(output_dim=256, norm_fn="instance", dropout=dropout)
        cnet = BasicEncoder(output_dim=hdim + cdim, norm_fn="batch", dropout=dropout)
        update_block = GMAUpdateBlock(hidden_dim=hdim, heads=heads, corr_levels=4, corr_radius=4)
        super().__init__(fnet, cnet, update_block, hidden_dim=hdim, context_dim=cdim, corr_levels=4, corr_radius=4)
        # Relative positions cover feature maps up to 160 cells (1280 px) a side.
        self.att = Attention(dim=cdim, heads=heads, max_pos_size=160, dim_head=cdim, similarity=similarity)

    def update_inputs(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.att(context),)
