"""The model artifact ``model.pt``: everything needed to turn an image into text, in one file.

A torch-saved dict of tensors and plain Python values only, so it loads with
``torch.load(..., weights_only=True)`` and never runs code from the file::

    {"format": "textrec-model", "version": 1,
     "model_name", "model_config": dict, "task": "line" | "page", "num_classes", "height", "state_dict",
     "charset": str, "stem": dict, "decoder": DecoderSpec.to_dict(), "lm": dict | None,
     "word_lm": dict | None, "metrics": dict, "created": ISO time}

The decoder entry is ``{"kind", "beam", "lm_weight", "insertion_bonus", "word_weight"}``; artifacts
written before ``insertion_bonus`` or ``word_weight`` existed lack them and read as 0
(:meth:`textrec.decoding.DecoderSpec.from_dict`). ``lm`` is the character n-gram LM and ``word_lm``
the word LM it carries (:attr:`textrec.decoding.CharNgramLM.words`): the lexicon as one string and
its log-probabilities as one float32 tensor, ~0.6 MB for 50k words. Artifacts without ``word_lm``
decode without words.

``task`` is the model's (:attr:`textrec.models.LineModel.task`): ``page`` for a paragraph model, which
reads whole pages and whose ``stem`` entry is then a page stem's settings
(:class:`textrec.models.paragraph.PageStem`). Artifacts written before ``task`` existed read as ``line``.

Training writes it; :class:`textrec.recognizer.Recognizer`, evaluation and serving read it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from textrec.charset import Charset
from textrec.decoding import DecoderSpec
from textrec.io import atomic_open

if TYPE_CHECKING:
    from textrec.models.registry import LineModel

ARTIFACT_FORMAT = "textrec-model"
ARTIFACT_VERSION = 1
REQUIRED_KEYS = ("model_name", "model_config", "num_classes", "height", "state_dict", "charset", "stem",
                 "decoder")


class ArtifactError(RuntimeError):
    """A model artifact is missing, unreadable or malformed; the message names the file."""


def _plain(value: Any) -> Any:
    """Dataclasses and objects with ``to_dict`` -> plain dicts (what weights_only loading accepts)."""
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _decoder_spec(decoder: DecoderSpec | dict[str, Any] | None) -> DecoderSpec:
    """A spec, or its dict (as artifacts store it), or None for greedy."""
    return decoder if isinstance(decoder, DecoderSpec) else DecoderSpec.from_dict(decoder or {})


def artifact_dict(model: LineModel, *, charset: Charset, stem: Any,
                  decoder: DecoderSpec | dict[str, Any] | None = None, lm: Any = None,
                  metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The artifact as a dict (what :func:`save_artifact` writes); ``decoder`` None means greedy. The
    word LM that ``lm`` carries, if any, is stored beside it as ``word_lm``."""
    num_classes = int(model.num_classes)
    if num_classes < charset.num_classes:
        raise ValueError(f"model has {num_classes} output classes but the charset needs {charset.num_classes}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "model_name": str(model.name),
        "model_config": _plain(model.config),
        "task": str(model.task),
        "num_classes": num_classes,
        "height": int(model.height),
        "state_dict": state,
        "charset": charset.chars,
        "stem": _plain(stem),
        "decoder": _decoder_spec(decoder).to_dict(),
        "lm": _plain(lm),
        "word_lm": _plain(getattr(lm, "words", None)),
        "metrics": _plain(metrics or {}),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def save_artifact(path: str | os.PathLike, model: LineModel, *, charset: Charset, stem: Any,
                  decoder: DecoderSpec | dict[str, Any] | None = None, lm: Any = None,
                  metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model.pt`` atomically. ``stem`` and ``lm`` may be objects with ``to_dict`` or dicts."""
    data = artifact_dict(model, charset=charset, stem=stem, decoder=decoder, lm=lm, metrics=metrics)
    with atomic_open(path, "wb") as f:
        torch.save(data, f)
    return Path(path)


def read_artifact(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw artifact dict, checked; ``path`` may be a local path or an s3:// URI."""
    from textrec import storage

    try:
        with storage.local_path(path) as local:
            if local.is_dir():
                local = local / "model.pt"
            if not local.is_file():
                raise ArtifactError(f"{path}: no model artifact (expected a model.pt file)")
            data = torch.load(local, map_location=map_location, weights_only=True)
    except storage.StorageError as e:
        raise ArtifactError(f"{path}: no model artifact ({e})") from e
    except ArtifactError:
        raise
    except Exception as e:  # torch raises several types for foreign or truncated files
        raise ArtifactError(f"{path}: not a readable textrec model artifact ({e})") from e
    if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: not a textrec model artifact (format "
                            f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
    if data.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{path}: artifact version {data.get('version')}, this textrec reads {ARTIFACT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ArtifactError(f"{path}: model artifact lacks {', '.join(missing)}")
    data.setdefault("task", "line")  # artifacts written before paragraph models
    if data["task"] not in ("line", "page"):
        raise ArtifactError(f"{path}: unknown task {data['task']!r} (expected 'line' or 'page')")
    try:
        data["decoder"] = _decoder_spec(data["decoder"]).to_dict()  # older artifacts: defaults filled in
    except ValueError as e:
        raise ArtifactError(f"{path}: bad decoder entry ({e})") from e
    word_lm = data.get("word_lm")
    if word_lm is not None and not (isinstance(word_lm, dict) and word_lm.get("kind") == "unigram"
                                    and {"words", "log_probs", "oov_log_prob"} <= word_lm.keys()):
        raise ArtifactError(f"{path}: bad word_lm entry (expected a unigram word LM: kind, words, "
                            f"log_probs, oov_log_prob)")
    return data


def load_artifact(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                  ) -> tuple[LineModel, dict[str, Any]]:
    """(model in eval mode, the artifact's other entries)."""
    from textrec.models import create_model

    data = read_artifact(path, map_location)
    info = {k: v for k, v in data.items() if k != "state_dict"}
    model = create_model(data["model_name"], num_classes=int(data["num_classes"]), height=int(data["height"]),
                         **dict(data["model_config"]))
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as e:
        raise ArtifactError(f"{path}: weights do not fit model {data['model_name']!r} ({e})") from e
    if model.task != data["task"]:
        raise ArtifactError(f"{path}: the artifact says task {data['task']!r} but model {data['model_name']!r} "
                            f"reads {model.task}s")
    model.to(map_location).eval()
    return model, info
