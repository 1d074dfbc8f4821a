"""What a training run is made of: one frozen dataclass per part, composed into :class:`TrainConfig`.

Each default is written once, here. ``configs/*.yaml`` only override them, and so do the dotted
command-line overrides (``--loop.epochs=3``, ``--model.options.hidden=256``); see :mod:`textrec.config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from textrec import config as configlib
from textrec.decoding import DEFAULT_BEAM, DEFAULT_LEXICON_SIZE, LEXICONS
from textrec.stem import StemConfig

DATA_MODES = ("pool", "online", "store")
DATA_KINDS = ("lines", "pages")  # what one training item is; pages train paragraph models
SCHEDULES = ("onecycle", "cosine", "constant")
AMP_MODES = ("auto", "bf16", "off")


@dataclass(frozen=True)
class DataConfig:
    """Where lines come from.

    ``mode``: ``store`` reads the line stores in ``stores`` (paths or s3:// URIs); ``pool`` renders
    ``train_lines`` synthetic lines once, with all cores, into a store under the run's cache folder and
    trains on it for several epochs with on-the-fly augmentation; ``online`` renders every training line
    afresh in the DataLoader workers (line i of epoch e is a pure function of seed, e and i).
    Validation and test lines are always a fixed synthetic store (``pool``/``online``) or the stores'
    own splits (``store``). ``optional_stores`` are added when they exist (IAM, say, or lines reviewed in
    ``textrec review``) and skipped otherwise; ``optional_weight`` is how many times each of their training
    lines counts per epoch (0.5: a fresh half of them each epoch; 3: each three times, augmented anew).
    ``real_val`` names a labelled set of real lines (a TSV of ``image<TAB>text`` rows, an IAM lines folder,
    or an s3:// URI of either; see :func:`textrec.evaluate.real_samples`): scored every epoch as
    ``real_val_cer``, it then picks the best checkpoint instead of the synthetic val CER.

    ``kind: pages`` trains a paragraph model (a model whose ``task`` is ``page``) on whole pages:
    ``store`` reads page stores (``textrec data synth --pages N``), ``pool`` renders ``pages`` synthetic
    pages once (``page``: :class:`textrec.data.pages.PageConfig` overrides) into the cache, split as
    for lines (90 % train, 5 % val, 5 % test, plus ``test_unseen_font`` pages); ``val_lines``,
    ``test_lines`` and ``unseen_font_lines`` then cap the pages of those splits. The stem fits each
    page into ``stem.height`` rows and ``stem.max_width`` columns (:class:`textrec.models.paragraph.PageStem`).
    """

    mode: str = "pool"
    stores: tuple[str, ...] = ()
    optional_stores: tuple[str, ...] = ()
    optional_weight: float = 1.0
    train_lines: int = 20000
    val_lines: int = 500
    test_lines: int = 500
    unseen_font_lines: int = 500
    seed: int = 0
    fonts_dirs: tuple[str, ...] = ()
    corpus: str = ""
    cache_dir: str = ""  # where pools are rendered (and s3:// stores copied); empty: $TEXTREC_CACHE/pools
    batch_size: int = 32
    bucket_batches: int = 32  # batches per width-sorted chunk: bigger cuts padding, smaller mixes more
    # Pad each batch's width up to a multiple of this. On CPU, oneDNN builds its convolution kernels for
    # each new input shape, so a run of batches of ever new widths trained ~25 % slower than one of a
    # few widths; the line models mask the padding, so it changes no line's output. 1: no rounding.
    pad_width_to: int = 1
    num_workers: int = 1
    synth_workers: int = 0  # processes that render a pool; 0: all cores
    synth: dict[str, Any] = field(default_factory=dict)  # SynthConfig overrides, e.g. data.synth.pen_p=0.3
    real_val: str = ""  # labelled real lines scored every epoch: TSV, IAM lines folder or s3:// URI; "": none
    kind: str = "lines"  # lines, or pages (whole pages for a paragraph model; see above)
    pages: int = 200  # kind=pages, mode=pool: synthetic pages rendered (train/val/test; unseen-font extra)
    page: dict[str, Any] = field(default_factory=dict)  # PageConfig overrides, e.g. data.page.scale=0.5

    def __post_init__(self) -> None:
        if self.mode not in DATA_MODES:
            raise ValueError(f"data.mode must be one of {DATA_MODES}, got {self.mode!r}")
        if self.mode == "store" and not (self.stores or self.optional_stores):
            raise ValueError("data.mode=store needs data.stores (paths or s3:// URIs of line stores)")
        if self.batch_size < 1 or self.bucket_batches < 1:
            raise ValueError("data.batch_size and data.bucket_batches must be at least 1")
        if not 1 <= self.pad_width_to <= 512:
            raise ValueError(f"data.pad_width_to must be in [1, 512] (1: no rounding), "
                             f"got {self.pad_width_to}")
        if self.kind == "pages" and self.pad_width_to != 1:
            raise ValueError("data.pad_width_to is for line models, which mask the padding; a page model "
                             "reads its whole padded page, so leave it at 1 with data.kind=pages")
        if not 0 < self.optional_weight <= 100:
            raise ValueError(f"data.optional_weight must be above 0 and at most 100, got {self.optional_weight}")
        if not isinstance(self.real_val, str) or (self.real_val and not self.real_val.strip()):
            raise ValueError(f"data.real_val must be a path or s3:// URI of a labelled set (or empty), "
                             f"got {self.real_val!r}")
        if self.synth:
            from textrec.data.synth import SynthConfig

            SynthConfig.from_mapping(self.synth)  # an unknown key or a bad value fails as the config loads
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {self.kind!r}")
        if self.kind == "pages":
            from textrec.data.pages import PageConfig

            PageConfig.from_mapping(self.page)
            if self.mode == "online":
                raise ValueError("data.kind=pages reads page stores (data.mode=store) or a rendered pool "
                                 "(data.mode=pool); data.mode=online renders lines only")
            if self.mode == "pool" and self.pages < 3:
                raise ValueError(f"data.pages must be at least 3 (train, val and test pages), got {self.pages}")
            if self.real_val or self.optional_stores:
                raise ValueError("data.real_val and data.optional_stores hold lines; with data.kind=pages "
                                 "put page stores in data.stores")


@dataclass(frozen=True)
class ModelConfig:
    """A registered architecture and its options (checked against the model's own config class)."""

    name: str = "line_cnn_lstm"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"  # per-step; onecycle warms up then anneals, cosine has linear warmup
    warmup: float = 0.1  # fraction of all steps
    grad_clip: float = 5.0  # max global grad norm; 0 disables

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"optim.warmup is a fraction of the steps in [0, 1), got {self.warmup}")


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 10
    max_minutes: float = 0.0  # stop cleanly (checkpoint, evaluate, artifact) after this; 0: no limit
    patience: int = 0  # epochs without a better val CER (real_val CER with data.real_val); 0: never stop
    checkpoint_every_steps: int = 200
    seed: int = 0
    amp: str = "auto"  # auto: bf16 autocast on CUDA, off on CPU
    threads: int = 0  # torch intra-op threads per process; 0: leave torch's default
    eval_batch_size: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"loop.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.epochs < 1:
            raise ValueError(f"loop.epochs must be at least 1, got {self.epochs}")


@dataclass(frozen=True)
class DecodeConfig:
    """Decoders tried on val at the end; the best one is recorded in the model artifact.

    Greedy always; with ``lm_order`` > 0 also beam search of width ``beam``: with an LM at each of
    ``lm_weights`` for a model that uses one (``LineModel.uses_lm``), a single plain pass otherwise.
    The character LM is fitted on the training texts, plus the running text of ``lm_corpus`` when set
    (loaded when the data is built, so a missing corpus fails before training). Each of
    ``word_weights`` then adds a word LM (``lexicon``: one of
    :data:`textrec.decoding.LEXICONS`, ``lexicon_size`` words from wordfreq) to the best of those LM
    weights. The chosen decoder is the one with the lowest CER on ``real_val`` when the data has that
    set (real handwriting), else on ``val``.
    """

    beam: int = DEFAULT_BEAM
    lm_order: int = 0  # character n-gram LM from the training texts; 0: no LM and no beam search, greedy only
    lm_weights: tuple[float, ...] = (0.3, 0.6)
    word_weights: tuple[float, ...] = ()  # word LM weights to try; (): no word LM
    lexicon: str = "wordfreq"  # the word LM's words: wordfreq, wordfreq+texts (training texts' too), texts
    lexicon_size: int = DEFAULT_LEXICON_SIZE  # most frequent wordfreq words kept
    # A corpus spec (as data.corpus takes) whose whole running text joins the training texts in the
    # character LM: prose teaches it which word follows which. "": the training texts alone.
    lm_corpus: str = ""
    # How the decoder is picked: "val", the lowest CER on real_val when the run has it, else on the
    # synthetic val; "fixed", the one beam search that lm_weights (one weight) and word_weights (at most
    # one) describe, for weights chosen on real handwriting (synthetic val text is not real prose, so
    # it undervalues a prose LM); a run with real_val still chooses on it. With lm_order 0: greedy.
    choose: str = "val"

    def __post_init__(self) -> None:
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or self.beam < 1:
            raise ValueError(f"decode.beam must be an integer >= 1, got {self.beam!r}")
        for name in ("lm_weights", "word_weights"):
            weights = getattr(self, name)
            if any(isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w < float("inf")
                   for w in weights):
                raise ValueError(f"decode.{name} must be >= 0, got {list(weights)} (finite numbers)")
        if self.lexicon not in LEXICONS:
            raise ValueError(f"decode.lexicon must be one of {', '.join(LEXICONS)}, got {self.lexicon!r}")
        size = self.lexicon_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"decode.lexicon_size must be an integer >= 1, got {size!r}")
        if self.choose not in ("val", "fixed"):
            raise ValueError(f"decode.choose must be val or fixed, got {self.choose!r}")
        if self.choose == "fixed" and self.lm_order > 0 and (len(self.lm_weights) != 1 or len(self.word_weights) > 1):
            raise ValueError("decode.choose=fixed needs one LM weight and at most one word weight, got "
                             f"lm_weights {list(self.lm_weights)}, word_weights {list(self.word_weights)}")
        if any(self.word_weights) and self.lm_order <= 0:
            raise ValueError("decode.word_weights need beam search: set decode.lm_order > 0 too")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stem: StemConfig = field(default_factory=StemConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def check_model_options(cfg: ModelConfig) -> None:
    """Unknown model names and option keys fail before any data is rendered."""
    from textrec.models import model_config

    cls = model_config(cfg.name)  # KeyError listing the known models
    configlib.from_dict(cls, cfg.options, where="model.options.")


def load_config(source: str | os.PathLike | Mapping[str, Any] | None = None,
                overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults <- YAML file (or its parsed mapping) <- overrides (``--loop.epochs=3`` or ``loop.epochs=3``)."""
    cfg = configlib.load(TrainConfig, source, overrides)
    check_model_options(cfg.model)
    return cfg
