"""``resnet_transformer``: a ResNet-style CNN encoder and an autoregressive Transformer decoder.

Shapes for height 40 and a batch of B lines padded to width W::

    images (B, 1, 40, W)
    ResNet trunk                  (B, c3, 3, W/8)     the line_cnn_lstm trunk, also halving the width
    1x1 conv + 2-D position       (B, d, 3, W/8)      half the channels encode the row, half the column
    flatten                       (B, S = 3 * W/8, d) memory; columns beyond a line's width are masked
    decoder over tokens (B, L)    (B, L, d) -> logits (B, L, V)

Tokens: characters keep their charset indices 1..num_classes-1 (index 0, the CTC blank, is never
produced); ``pad``, ``start`` and ``end`` are the three indices after the charset, so V = num_classes + 3.
Teacher forcing in training, greedy or beam search at inference (no key/value cache: lines are short).

``paragraph_transformer`` (:class:`ParagraphTransformer`, at the end of this file) is the same model
over whole paragraph or page images: a trunk that keeps more rows (the 2-D memory then spans the
page's lines), a charset with a line-break character (:func:`textrec.charset.page_charset`), and
longer outputs. Its pages come from :class:`textrec.models.paragraph.PageStem`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from textrec.charset import PAGE_CHARSET, Charset
from textrec.decoding import CharNgramLM, DecoderSpec, Recognition
from textrec.models.line_cnn_lstm import ResBlock, ResNetTrunk
from textrec.models.registry import GREEDY, LineModel, register_model


@dataclass(frozen=True)
class ResnetTransformerConfig:
    channels: tuple[int, int, int, int] = (16, 48, 96, 128)
    blocks: tuple[int, int, int] = (1, 1, 1)
    d_model: int = 128
    heads: int = 4
    layers: int = 3
    ff: int = 384
    dropout: float = 0.1
    label_smoothing: float = 0.0
    max_length: int = 160  # characters decoded at most per line

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.d_model % 4 or self.d_model % self.heads:
            raise ValueError(f"resnet_transformer: d_model ({self.d_model}) must be divisible by 4 and by "
                             f"heads ({self.heads})")


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) sine/cosine encodings (dim even)."""
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device)
                     * (-math.log(10000.0) / dim))
    angles = positions.to(torch.float32)[:, None] * freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@register_model("resnet_transformer", ResnetTransformerConfig)
class ResnetTransformer(LineModel):
    """CNN encoder with 2-D positions, Transformer decoder over characters + pad/start/end tokens."""

    # The decoder is itself a character language model conditioned on the image; a separate n-gram
    # LM is not fused into its search.
    uses_lm = False

    def __init__(self, config: ResnetTransformerConfig, *, num_classes: int, height: int) -> None:
        super().__init__(config, num_classes=num_classes, height=height)
        d = config.d_model
        self.pad, self.start, self.end = num_classes, num_classes + 1, num_classes + 2
        self.vocab = num_classes + 3
        self.encoder = self.make_encoder(config)
        self.project = nn.Conv2d(config.channels[3], d, 1)
        self.embed = nn.Embedding(self.vocab, d, padding_idx=self.pad)
        layer = nn.TransformerDecoderLayer(d, config.heads, config.ff, config.dropout, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.layers)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.vocab)
        self.drop = nn.Dropout(config.dropout)
        # never produce the CTC blank or the pad/start tokens
        banned = torch.zeros(self.vocab, dtype=torch.bool)
        banned[[0, self.pad, self.start]] = True
        self.register_buffer("banned", banned, persistent=False)

    # --- encoder --------------------------------------------------------------------------------

    def make_encoder(self, config: ResnetTransformerConfig) -> ResNetTrunk:
        return ResNetTrunk(config.channels, config.blocks, last_stride_w=2)

    def encode(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> memory (B, S, d) and its padding mask (B, S), True where a position is padding."""
        x, widths = self.encoder(images, widths)  # (B, c3, h, w)
        x = self.project(x)  # (B, d, h, w)
        b, d, h, w = x.shape
        rows = sinusoid(torch.arange(h, device=x.device), d // 2)  # (h, d/2)
        cols = sinusoid(torch.arange(w, device=x.device), d // 2)  # (w, d/2)
        pos = torch.cat([rows[:, None, :].expand(h, w, -1), cols[None, :, :].expand(h, w, -1)], dim=2)
        x = x.permute(0, 2, 3, 1) + pos  # (B, h, w, d)
        memory = self.drop(x.reshape(b, h * w, d))
        col = torch.arange(w, device=x.device)
        pad = (col[None, :] >= widths[:, None])[:, None, :].expand(b, h, w).reshape(b, h * w)
        return memory, pad

    # --- decoder --------------------------------------------------------------------------------

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L) -> logits (B, L, V), each position seeing only earlier tokens."""
        n = tokens.shape[1]
        x = self.embed(tokens) * math.sqrt(self.config.d_model) + sinusoid(
            torch.arange(n, device=tokens.device), self.config.d_model)
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=tokens.device), diagonal=1)
        x = self.decoder(self.drop(x), memory, tgt_mask=causal, tgt_key_padding_mask=tokens == self.pad,
                         memory_key_padding_mask=memory_pad)
        return self.head(self.norm(x))

    def forward(self, images: torch.Tensor, widths: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens (B, L) starting with ``start`` -> logits (B, L, V)."""
        memory, pad = self.encode(images, widths)
        return self.decode(tokens, memory, pad)

    def loss(self, images: torch.Tensor, widths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each line's characters and end token, summed per line, mean over lines."""
        self.check_input(images, widths)
        b, n = targets.shape[0], int(target_lengths.max()) if targets.numel() else 0
        steps = torch.arange(n + 1, device=targets.device)[None, :]
        lengths = target_lengths.to(torch.long)[:, None]
        body = F.pad(targets[:, :n].to(torch.long), (0, 1), value=self.pad)
        gold = torch.where(steps < lengths, body, torch.full_like(body, self.pad))
        gold = torch.where(steps == lengths, torch.full_like(gold, self.end), gold)  # (B, n + 1)
        inputs = torch.cat([torch.full((b, 1), self.start, device=targets.device), gold[:, :-1]], dim=1)
        inputs = torch.where(inputs == self.end, torch.full_like(inputs, self.pad), inputs)
        logits = self(images, widths, inputs)  # (B, n + 1, V)
        ce = F.cross_entropy(logits.reshape(-1, self.vocab), gold.reshape(-1), ignore_index=self.pad,
                             reduction="sum", label_smoothing=self.config.label_smoothing)
        return ce / b

    # --- inference ------------------------------------------------------------------------------

    @torch.no_grad()
    def recognise(self, images: torch.Tensor, widths: torch.Tensor, decoder: DecoderSpec = GREEDY,
                  lm: CharNgramLM | None = None, *, charset: Charset | None = None) -> list[Recognition]:
        """Greedy or beam-search decoding of width ``decoder.beam``. No LM (``uses_lm`` is False), so
        the CTC fusion terms ``lm_weight`` and ``insertion_bonus`` play no part."""
        self.check_input(images, widths)
        self.check_decoder(decoder, lm)
        charset = self.resolve_charset(charset)
        was_training = self.training
        self.eval()
        try:
            memory, pad = self.encode(images, widths)
            limits = self._max_steps(widths)
            if decoder.kind == "greedy":
                seqs = self._greedy(memory, pad, limits)
            else:
                seqs = [self._beam(memory[i:i + 1], pad[i:i + 1], decoder.beam, int(limits[i]))
                        for i in range(len(memory))]
        finally:
            self.train(was_training)
        out = []
        for tokens, probs in seqs:
            conf = float(sum(probs) / len(probs)) if probs else 0.0
            out.append(Recognition(tokens, charset.decode(tokens), conf, probs))
        return out

    def _max_steps(self, widths: torch.Tensor) -> torch.Tensor:
        """Characters each line may decode at most. Even narrow writing has fewer characters
        than memory columns (8 px each at height 40), so twice that bounds a line: a confused model
        cannot run on to ``max_length`` on a short line, and a line's result does not depend on the
        widths of the others in its batch."""
        cols = self.encoder.out_widths(widths.to(torch.long))
        return torch.clamp(2 * cols, max=self.config.max_length)

    def _step_logp(self, tokens: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        logits = self.decode(tokens, memory, pad)[:, -1]  # (B, V)
        banned: torch.Tensor = self.banned  # type: ignore[assignment]  # a registered buffer
        return F.log_softmax(logits.masked_fill(banned, float("-inf")), dim=-1)

    def _memory_keys(self, memory: torch.Tensor, pad: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per decoder layer, its cross-attention's keys and values of ``memory`` (B, heads, S, d/heads)
        and the mask of real positions: projected once per decoding, not once per step."""
        out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        heads = self.config.heads
        keep = ~pad[:, None, None, :]  # (B, 1, 1, S): True where attention may look
        for layer in self.decoder.layers:
            attn = layer.multihead_attn
            d = attn.embed_dim
            w, bias = attn.in_proj_weight, attn.in_proj_bias
            k = F.linear(memory, w[d:2 * d], bias[d:2 * d])
            v = F.linear(memory, w[2 * d:], bias[2 * d:])
            b, n, _ = memory.shape
            out.append((k.view(b, n, heads, d // heads).transpose(1, 2),
                        v.view(b, n, heads, d // heads).transpose(1, 2), keep))
        return out

    def _cached_step_logp(self, token: torch.Tensor, step: int, cache: list[torch.Tensor | None],
                          memory_keys: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """What :meth:`_step_logp` gives for the last of the tokens so far, computing only that
        position: ``cache`` holds, per decoder layer, the normed inputs of the earlier positions (the
        keys and values its self-attention reads), and ``memory_keys`` the cross-attention's projected
        memory (:meth:`_memory_keys`), so a step costs one position, not the whole prefix. Greedy
        decoding is then linear in the text's length rather than quadratic (pages: hundreds of
        characters). Eval mode only (dropout off), as decoding is."""
        x = self.embed(token[:, None]) * math.sqrt(self.config.d_model) + sinusoid(
            torch.tensor([step], device=token.device), self.config.d_model)
        for i, layer in enumerate(self.decoder.layers):
            q = layer.norm1(x)
            keys = q if cache[i] is None else torch.cat([cache[i], q], dim=1)  # type: ignore[list-item]
            cache[i] = keys
            x = x + layer.self_attn(q, keys, keys, need_weights=False)[0]
            x = x + self._cross_attend(layer.multihead_attn, layer.norm2(x), *memory_keys[i])
            x = x + layer._ff_block(layer.norm3(x))
        if self.decoder.norm is not None:
            x = self.decoder.norm(x)
        logits = self.head(self.norm(x))[:, -1]
        banned: torch.Tensor = self.banned  # type: ignore[assignment]  # a registered buffer
        return F.log_softmax(logits.masked_fill(banned, float("-inf")), dim=-1)

    @staticmethod
    def _cross_attend(attn: nn.MultiheadAttention, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      keep: torch.Tensor) -> torch.Tensor:
        """``attn(x, memory, memory)`` with the memory's keys and values already projected."""
        b, n, d = x.shape
        heads = k.shape[1]
        q = F.linear(x, attn.in_proj_weight[:d], attn.in_proj_bias[:d]).view(b, n, heads, d // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def _greedy(self, memory: torch.Tensor, pad: torch.Tensor,
                limits: torch.Tensor) -> list[tuple[list[int], list[float]]]:
        b = memory.shape[0]
        token = torch.full((b,), self.start, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        cache: list[torch.Tensor | None] = [None] * len(self.decoder.layers)
        memory_keys = self._memory_keys(memory, pad)
        chosen, probs = [], []
        for step in range(int(limits.max())):
            done |= limits.to(memory.device) <= step
            if bool(done.all()):
                break
            logp, nxt = self._cached_step_logp(token, step, cache, memory_keys).max(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad), nxt)
            chosen.append(nxt)
            probs.append(logp.exp())
            done |= nxt == self.end
            token = nxt
        seqs = []
        for i in range(b):
            toks, ps = [], []
            for t, p in zip(chosen, probs, strict=True):
                if int(t[i]) in (self.end, self.pad):
                    break
                toks.append(int(t[i]))
                ps.append(float(p[i]))
            seqs.append((toks, ps))
        return seqs

    def _beam(self, memory: torch.Tensor, pad: torch.Tensor, beam: int, limit: int) -> tuple[list[int], list[float]]:
        """Beam search for one line; hypotheses are ranked by mean log probability per token."""
        live: list[tuple[float, list[int], list[float]]] = [(0.0, [], [])]
        finished: list[tuple[float, list[int], list[float]]] = []
        for _ in range(limit):
            tokens = torch.tensor([[self.start] + h[1] for h in live], device=memory.device)
            logp = self._step_logp(tokens, memory.expand(len(live), -1, -1), pad.expand(len(live), -1))
            top_lp, top_ix = logp.topk(min(beam, self.vocab), dim=-1)
            cands = []
            for (score, toks, ps), lps, ixs in zip(live, top_lp.tolist(), top_ix.tolist(), strict=True):
                for lp, ix in zip(lps, ixs, strict=True):
                    cands.append((score + lp, toks + [ix], ps + [math.exp(lp)]))
            cands.sort(key=lambda c: c[0], reverse=True)
            live = []
            for score, toks, ps in cands[:beam]:
                if toks[-1] == self.end:
                    finished.append((score / len(toks), toks[:-1], ps[:-1]))
                else:
                    live.append((score, toks, ps))
            if not live or (finished and max(f[0] for f in finished) > max(s / len(t) for s, t, _ in live)):
                break
        finished.extend((s / max(len(t), 1), t, p) for s, t, p in live)
        _, toks, ps = max(finished, key=lambda f: f[0])
        return toks, ps


# ---------------------------------------------------------------------------------------------------
# The page variant


@dataclass(frozen=True)
class ParagraphTransformerConfig(ResnetTransformerConfig):
    """``resnet_transformer``'s settings, plus the trunk's strides, and outputs as long as pages."""

    # (rows, columns) strides of the three residual stages, after the first conv's /2 both ways. The
    # default gives square 8 x 8 px memory cells: several rows per written line, even on a small page.
    row_strides: tuple[int, int, int] = (2, 2, 1)
    col_strides: tuple[int, int, int] = (2, 1, 2)
    max_length: int = 600  # characters (line breaks included) decoded at most per page

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("row_strides", "col_strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.channels) != 4 or len(self.blocks) != 3 or min(self.blocks) < 1:
            raise ValueError(f"paragraph_transformer: channels need 4 sizes and blocks 3 counts >= 1, got "
                             f"channels={self.channels} blocks={self.blocks}")
        for name in ("row_strides", "col_strides"):
            if len(getattr(self, name)) != 3 or not set(getattr(self, name)) <= {1, 2}:
                raise ValueError(f"paragraph_transformer: {name} must be 3 strides of 1 or 2, got "
                                 f"{getattr(self, name)}")
        if self.max_length < 1:
            raise ValueError(f"paragraph_transformer: max_length must be >= 1, got {self.max_length}")


class PageTrunk(ResNetTrunk):
    """:class:`ResNetTrunk` with the residual stages' strides given: conv 3x3 /2, then three stages.
    Columns beyond each page's width stay zero at every step, as in the line trunk."""

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...], row_strides: tuple[int, int, int],
                 col_strides: tuple[int, int, int]) -> None:
        nn.Module.__init__(self)
        c0 = channels[0]
        self.stem = nn.Sequential(nn.Conv2d(1, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        layers: list[ResBlock] = []
        c_in = c0
        for c, n, sr, sc in zip(channels[1:], blocks, row_strides, col_strides, strict=True):
            layers.append(ResBlock(c_in, c, (sr, sc)))
            layers.extend(ResBlock(c, c) for _ in range(n - 1))
            c_in = c
        self.blocks = nn.ModuleList(layers)
        self.width_strides = (2, *col_strides)
        self.row_strides = (2, *row_strides)

    def page_rows(self, height: int) -> int:
        """Memory rows for input ``height`` (each stride rounds up, as the convolutions do)."""
        for s in self.row_strides:
            height = (height + s - 1) // s
        return height


@register_model("paragraph_transformer", ParagraphTransformerConfig)
class ParagraphTransformer(ResnetTransformer):
    """``resnet_transformer`` over page images: the memory is the page's 2-D feature map, flattened, and
    the decoder writes the lines top to bottom with the charset's line break between them.

    Shapes for a page stem of height 128 (:class:`textrec.models.paragraph.PageStem`) and B pages::

        pages (B, 1, 128, W <= max_width)   each page scaled to fit, paper below and right of it
        trunk (default strides)     (B, c3, 16, W/8)    8 x 8 px cells
        1x1 conv + 2-D position     (B, d, 16, W/8)
        flatten                     (B, S = 16 * W/8, d) columns beyond a page's width are masked
        decoder over tokens (B, L)  (B, L, V)           L up to max_length; V = num_classes + 3

    The classes are :data:`textrec.charset.PAGE_CHARSET`'s (the line charset + the line break, 81 with
    the blank) when the data says so: ``num_classes`` comes from the data, as for every model.
    """

    uses_lm = False
    task = "page"

    def __init__(self, config: ParagraphTransformerConfig, *, num_classes: int, height: int) -> None:
        super().__init__(config, num_classes=num_classes, height=height)
        if num_classes == PAGE_CHARSET.num_classes:
            self.charset = PAGE_CHARSET

    def make_encoder(self, config: ResnetTransformerConfig) -> ResNetTrunk:
        cfg: ParagraphTransformerConfig = config  # type: ignore[assignment]
        return PageTrunk(cfg.channels, cfg.blocks, cfg.row_strides, cfg.col_strides)

    def _max_steps(self, widths: torch.Tensor) -> torch.Tensor:
        """Characters a page may decode at most: one per memory cell of its width (about twice what
        the densest synthetic page writes at the default strides), and never more than ``max_length``.
        """
        trunk: PageTrunk = self.encoder  # type: ignore[assignment]
        cells = trunk.out_widths(widths.to(torch.long)) * trunk.page_rows(self.height)
        return torch.clamp(cells, max=self.config.max_length)
