"""``line_cnn_lstm``: a compact ResNet-style CNN, a bidirectional LSTM and CTC (the default model).

Shapes for the default height of 40 and a batch of B lines padded to width W::

    images (B, 1, 40, W)
    conv 3x3 /2                     (B, c0, 20, W/2)   cheap first step: no full-resolution feature maps
    residual block /2               (B, c1, 10, W/4)
    residual block /2 rows          (B, c2,  5, W/4)   keep width: CTC needs >= 2 frames per character
    residual block /2 rows          (B, c3,  3, W/4)
    conv (3 x 1) -> rows = 1        (B, d, 1, W/4) -> (T = W/4, B, d)
    BiLSTM x layers, + linear(d)    (T, B, 2 * hidden)  the shortcut: see below
    linear                          (T, B, num_classes) -> log-softmax

The sizes were chosen by measurement on 2 CPU cores: most of the time goes to convolutions at the
higher resolutions and to the LSTM, so the network halves both directions at once early, spends its
channels where maps are small, and keeps ~1.3M parameters (see docs/benchmarks.md).

The shortcut adds a linear map of the conv features to the LSTM output. Without it, CTC training of
this model sat for ~300 steps (batch 24, synthetic lines) on the plateau where every frame is blank
before characters began to appear; with it, the convolutions learn characters from the first steps and
the LSTM adds context on top, for ~50k parameters.

Padding must not leak into a line's result: every convolution's input is zeroed beyond the line's
width at that scale (so a padded line sees exactly the zeros a lone line's own conv padding gives), and
the backward LSTM reads each line reversed within its own length. In eval mode a line therefore gives
the same output alone or in a batch of wider lines. The bidirectional LSTM is two plain LSTMs plus an
index gather (no packed sequences), so ``torch.jit.script(model)`` gives a Python-free forward for any
batch and width; ``torch.export`` fixes the width, because it unrolls ``nn.LSTM`` over time steps.
Serving loads the state dict into this class (``textrec.recognizer``), so it needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from textrec.charset import Charset
from textrec.decoding import CharNgramLM, DecoderSpec, Recognition, ctc_decode
from textrec.models.registry import GREEDY, LineModel, register_model


@dataclass(frozen=True)
class LineCnnLstmConfig:
    channels: tuple[int, int, int, int] = (16, 48, 96, 128)  # first conv, then the three residual stages
    blocks: tuple[int, int, int] = (1, 1, 1)  # residual blocks per stage
    features: int = 192  # per-frame features after the rows are collapsed
    lstm_hidden: int = 128
    lstm_layers: int = 2
    dropout: float = 0.2
    shortcut: bool = True  # add a linear map of the conv features to the LSTM output

    def __post_init__(self) -> None:
        # YAML and JSON give lists; keep the dataclass hashable and comparable
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if len(self.channels) != 4 or len(self.blocks) != 3 or min(self.blocks) < 1:
            raise ValueError(f"channels need 4 sizes (first conv + 3 stages) and blocks 3 counts >= 1, "
                             f"got channels={self.channels} blocks={self.blocks}")
        if self.lstm_layers < 1 or self.lstm_hidden < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"line_cnn_lstm: bad LSTM settings in {self}")


def _conv_width(w: torch.Tensor, stride: int) -> torch.Tensor:
    """Valid width after a 3x3 conv with padding 1: ceil(w / stride)."""
    return (w + stride - 1) // stride if stride > 1 else w


def _width_mask(widths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, 1, size) float mask, 1 inside each line's width."""
    cols = torch.arange(size, device=widths.device)
    return (cols[None, :] < widths[:, None]).to(torch.float32)[:, None, None, :]


class ResBlock(nn.Module):
    """Two 3x3 convs with batch norm and a shortcut; inputs are masked so padding stays zero."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.stride_w = stride[1]
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = None
        if c_in != c_out or stride != (1, 1):
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        widths = _conv_width(widths, self.stride_w)
        y = F.relu(self.bn1(self.conv1(x)))
        mask = _width_mask(widths, y.shape[-1])
        y = self.bn2(self.conv2(y * mask))
        y = F.relu(y + (x if self.short is None else self.short(x)))
        return y * mask, widths


class ResNetTrunk(nn.Module):
    """Conv 3x3 /2, then three residual stages: /2 both ways, /2 rows, /2 rows and ``last_stride_w``
    columns. Every step keeps the padding beyond each line's width at zero."""

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...], last_stride_w: int = 1) -> None:
        super().__init__()
        c0 = channels[0]
        self.stem = nn.Sequential(nn.Conv2d(1, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        layers: list[ResBlock] = []
        c_in = c0
        self.width_strides = (2, 2, 1, last_stride_w)
        for c, n, stride in zip(channels[1:], blocks, [(2, 2), (2, 1), (2, last_stride_w)], strict=True):
            layers.append(ResBlock(c_in, c, stride))
            layers.extend(ResBlock(c, c) for _ in range(n - 1))
            c_in = c
        self.blocks = nn.ModuleList(layers)

    @staticmethod
    def out_rows(height: int) -> int:
        for _ in range(4):  # the first conv and each stage halve the rows (rounding up)
            height = (height + 1) // 2
        return height

    def out_widths(self, widths: torch.Tensor) -> torch.Tensor:
        for s in self.width_strides:
            widths = _conv_width(widths, s)
        return widths

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W), (B,) -> (B, c3, ~H/16, ~W/(4 * last_stride_w)), valid widths (B,)."""
        widths = widths.to(torch.long)
        x = images * _width_mask(widths, images.shape[-1])  # the caller's padding may not be zeros
        # Not channels-last: ~20 % faster on CPU, but torch 2.13's oneDNN path corrupted memory for
        # some small channel counts and widths (double free in backward), so the default layout stays.
        x = self.stem(x)  # (B, c0, H/2, W/2)
        widths = _conv_width(widths, 2)
        x = x * _width_mask(widths, x.shape[-1])
        for block in self.blocks:
            x, widths = block(x, widths)
        return x, widths


class MaskedBiLSTM(nn.Module):
    """Bidirectional multi-layer LSTM over padded (T, B, D) input; the backward direction reads each
    sequence reversed within its own length, so padding never reaches a valid frame."""

    def __init__(self, d_in: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        dims = [d_in] + [2 * hidden] * (layers - 1)
        self.fwd = nn.ModuleList(nn.LSTM(d, hidden) for d in dims)
        self.bwd = nn.ModuleList(nn.LSTM(d, hidden) for d in dims)
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def _reverse_index(lengths: torch.Tensor, t: int) -> torch.Tensor:
        steps = torch.arange(t, device=lengths.device)[:, None]  # (T, 1)
        rev = lengths[None, :] - 1 - steps  # (T, B)
        return torch.where(rev >= 0, rev, steps.expand_as(rev))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        idx = self._reverse_index(lengths, x.shape[0])
        for i, (f, b) in enumerate(zip(self.fwd, self.bwd, strict=True)):
            if i:
                x = self.drop(x)
            gather = idx[:, :, None].expand(-1, -1, x.shape[2])
            out_f, _ = f(x)  # (T, B, H): causal, so trailing padding cannot reach valid frames
            out_b, _ = b(torch.gather(x, 0, gather))
            out_b = torch.gather(out_b, 0, idx[:, :, None].expand(-1, -1, out_b.shape[2]))
            x = torch.cat([out_f, out_b], dim=2)  # (T, B, 2H)
        return x


@register_model("line_cnn_lstm", LineCnnLstmConfig)
class LineCnnLstm(LineModel):
    """ResNet-style conv encoder -> BiLSTM -> linear over charset + blank, trained with CTC."""

    uses_lm = True  # CTC prefix beam search fuses a character LM (shallow fusion)

    def __init__(self, config: LineCnnLstmConfig, *, num_classes: int, height: int) -> None:
        super().__init__(config, num_classes=num_classes, height=height)
        if height < 16:
            raise ValueError(f"line_cnn_lstm needs input height >= 16, got {height}")
        self.encoder = ResNetTrunk(config.channels, config.blocks)
        rows = ResNetTrunk.out_rows(height)
        self.collapse = nn.Sequential(nn.Conv2d(config.channels[3], config.features, (rows, 1), bias=False),
                                      nn.BatchNorm2d(config.features), nn.ReLU()
                                      )
        self.drop = nn.Dropout(config.dropout)
        self.rnn = MaskedBiLSTM(config.features, config.lstm_hidden, config.lstm_layers, config.dropout)
        self.shortcut = nn.Linear(config.features, 2 * config.lstm_hidden) if config.shortcut else None
        self.head = nn.Linear(2 * config.lstm_hidden, num_classes)

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """Frames per line for input widths: ceil(ceil(w / 2) / 2), about w / 4."""
        return self.encoder.out_widths(widths.to(torch.long))

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W), (B,) -> log_probs (T, B, C), out_lengths (B,)."""
        x, widths = self.encoder(images, widths)  # (B, c3, H/16, W/4)
        x = self.collapse(x).squeeze(2)  # (B, d, T)
        x = self.drop(x.permute(2, 0, 1))  # (T, B, d)
        y = self.rnn(x, widths)  # (T, B, 2 * hidden)
        x = y if self.shortcut is None else y + self.shortcut(x)
        logits = self.head(self.drop(x))  # (T, B, C)
        # float32 even under bf16 autocast: CPU autocast leaves log_softmax in bf16 (8 mantissa bits),
        # and CTC sums these log-probabilities over hundreds of frames
        return F.log_softmax(logits.float(), dim=-1), widths

    def loss(self, images: torch.Tensor, widths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
        """CTC negative log-likelihood, summed per line and averaged over lines. Lines too long for
        their frames (impossible alignments) contribute zero rather than infinity."""
        self.check_input(images, widths)
        log_probs, lengths = self(images, widths)
        nll = F.ctc_loss(log_probs, targets.to(torch.long), lengths, target_lengths.to(torch.long),
                         blank=0, reduction="sum", zero_infinity=True)
        return nll / images.shape[0]

    @torch.no_grad()
    def recognise(self, images: torch.Tensor, widths: torch.Tensor, decoder: DecoderSpec = GREEDY,
                  lm: CharNgramLM | None = None, *, charset: Charset | None = None) -> list[Recognition]:
        """Decode a batch: greedy, or CTC prefix beam search with ``lm`` fused in (``decoder.lm_weight``)."""
        self.check_input(images, widths)
        self.check_decoder(decoder, lm)
        charset = self.resolve_charset(charset)
        was_training = self.training
        self.eval()
        try:
            log_probs, lengths = self(images, widths)
        finally:
            self.train(was_training)
        return ctc_decode(log_probs, lengths, charset, decoder, lm)
