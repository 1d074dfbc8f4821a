"""The model registry: ``@register_model(name, ConfigClass)`` and ``create_model(name, ...)``.

Each architecture lives in its own file, owns a frozen dataclass of its defaults, and registers
itself here. The data side tells a model its input ``height`` and ``num_classes`` (charset + blank), so
those sizes are written once, in the data and stem settings, never in a model config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields, is_dataclass
from typing import Any

import torch
from torch import nn

from textrec.charset import DEFAULT_CHARSET, Charset
from textrec.decoding import CharNgramLM, DecoderSpec, Recognition

GREEDY = DecoderSpec()

_MODELS: dict[str, tuple[type[LineModel], type]] = {}
TASKS = ("line", "page")  # what one input image of a model is: a line, or a whole paragraph/page


class LineModel(nn.Module):
    """What every registered model offers; see the CTC and autoregressive models for the details.

    Attributes: ``name`` (registry name), ``config`` (frozen dataclass), ``num_classes`` (charset size
    + 1: index 0 is the CTC blank, characters are 1..num_classes-1), ``height`` (input rows) and
    ``charset`` used to spell decoded indices (the default charset when the sizes match; whoever loads
    a model with another charset sets it, or passes ``charset=`` to ``recognise``).

    Capability, declared by each model class: ``uses_lm``, whether its decoding fuses a character
    language model. Training fits an LM and tries LM weights only for such models, and nobody passes
    an LM to the others (their ``recognise`` refuses one).

    ``task`` says what one input image is: ``"line"`` (one line of text; the default) or ``"page"`` (a
    paragraph or page, read whole; its text holds line breaks, see :func:`textrec.charset.page_charset`).
    The model artifact records it, so a Recognizer knows whether the model reads lines or pages.
    """

    name: str = ""
    uses_lm: bool  # each registered model states it (register_model checks)
    task: str = "line"  # one of TASKS

    def __init__(self, config: Any, *, num_classes: int, height: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = int(num_classes)
        self.height = int(height)
        self.charset: Charset | None = DEFAULT_CHARSET if num_classes == DEFAULT_CHARSET.num_classes else None

    def loss(self, images: torch.Tensor, widths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
        """Mean over lines of each line's negative log-likelihood of its target (a scalar)."""
        raise NotImplementedError

    def recognise(self, images: torch.Tensor, widths: torch.Tensor, decoder: DecoderSpec = GREEDY,
                  lm: CharNgramLM | None = None, *, charset: Charset | None = None) -> list[Recognition]:
        """Images (B, 1, H, W) with valid widths (B,) -> one ``Recognition`` per line, decoded as
        ``decoder`` says; ``lm`` only for a model that ``uses_lm``."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """The config as plain types, for the model artifact (``create_model(name, **config_dict)``)."""
        return asdict(self.config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def resolve_charset(self, charset: Charset | None = None) -> Charset:
        charset = charset or self.charset
        if charset is None:
            raise ValueError(f"{self.name} has {self.num_classes} classes and no charset; pass charset=")
        if charset.num_classes != self.num_classes:
            raise ValueError(f"{self.name} has {self.num_classes} classes but the charset has "
                             f"{charset.num_classes} (characters + blank)")
        return charset

    def check_decoder(self, decoder: DecoderSpec, lm: CharNgramLM | None) -> None:
        """A decoder spec (not the loose keywords of old), and an LM only for a model that uses one."""
        if not isinstance(decoder, DecoderSpec):
            raise TypeError(f"{self.name}: decoder must be a textrec.decoding.DecoderSpec, got {decoder!r}")
        if lm is not None and not self.uses_lm:
            raise ValueError(f"{self.name} does not use a language model (uses_lm is False); pass lm=None")

    def check_input(self, images: torch.Tensor, widths: torch.Tensor) -> None:
        """Fail early, naming what was expected, rather than deep inside a convolution."""
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[2] != self.height:
            raise ValueError(f"{self.name}: expected images (B, 1, {self.height}, W), got {tuple(images.shape)}")
        if widths.shape != (images.shape[0],):
            raise ValueError(f"{self.name}: expected widths of shape ({images.shape[0]},), got {tuple(widths.shape)}")


def register_model(name: str, config_cls: type) -> Callable[[type[LineModel]], type[LineModel]]:
    """Class decorator: make a model available to :func:`create_model` under ``name``."""
    if not is_dataclass(config_cls):
        raise TypeError(f"model {name!r}: config class {config_cls!r} must be a dataclass")

    def wrap(cls: type[LineModel]) -> type[LineModel]:
        if not isinstance(cls.__dict__.get("uses_lm"), bool):
            raise TypeError(f"model {name!r}: {cls.__qualname__} must set the class attribute uses_lm "
                            "(a bool)")
        if cls.task not in TASKS:
            raise TypeError(f"model {name!r}: task must be one of {TASKS}, got {cls.task!r}")
        if name in _MODELS and _MODELS[name][0] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_MODELS[name][0].__qualname__}")
        cls.name = name
        _MODELS[name] = (cls, config_cls)
        return cls

    return wrap


def _lookup(name: str) -> tuple[type[LineModel], type]:
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models(None))}") from None


def list_models(task: str | None = "line") -> list[str]:
    """Registered model names of ``task`` (line models by default; None: every task), sorted.

    >>> list_models()
    ['line_cnn_lstm', 'resnet_transformer']
    >>> list_models("page")
    ['paragraph_transformer']
    """
    return sorted(name for name, (cls, _) in _MODELS.items() if task is None or cls.task == task)


def model_task(name: str) -> str:
    """What one input image of a registered model is: ``"line"`` or ``"page"`` (see :data:`TASKS`)."""
    return _lookup(name)[0].task


def model_config(name: str) -> type:
    """The frozen config dataclass of a registered model."""
    return _lookup(name)[1]


def create_model(name: str, *, num_classes: int, height: int, **config: Any) -> LineModel:
    """Build a registered model; ``config`` overrides fields of its config dataclass.

    >>> m = create_model("line_cnn_lstm", num_classes=80, height=40, lstm_hidden=64)
    >>> m.name, m.config.lstm_hidden, m.num_classes, m.height
    ('line_cnn_lstm', 64, 80, 40)
    >>> create_model("line_cnn_lstm", num_classes=80, height=40, hidden=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: model 'line_cnn_lstm' has no option 'hidden'; its options are: ...
    """
    cls, config_cls = _lookup(name)
    known = [f.name for f in fields(config_cls)]
    unknown = [k for k in config if k not in known]
    if unknown:
        raise TypeError(f"model {name!r} has no option {unknown[0]!r}; its options are: {', '.join(known)}")
    if num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be >= 2 (blank + characters), got {num_classes}")
    return cls(config_cls(**config), num_classes=num_classes, height=height)
