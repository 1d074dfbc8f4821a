"""The registered line model as an MLflow pyfunc: a table of line images in, their text out.

``mlflow.pyfunc.load_model("models:/textrec-line@champion").predict(df)`` and
``mlflow models serve -m models:/textrec-line@champion`` read images with the same
:class:`textrec.recognizer.Recognizer` (decoding, stem, decoder) that evaluation and TorchServe use,
so the registry cannot serve different answers from the rest of textrec.

- Input: a DataFrame with an ``image`` column of encoded PNG/JPEG bytes or their base64 text.
  JSON has no bytes, so a client of ``/invocations`` sends base64; the scoring server decodes a
  binary column before ``predict``, and base64 given to ``predict`` directly is decoded here.
- Output: a DataFrame with ``text`` and ``confidence``, one row per input row, in order.

The textrec ``model.pt`` (model, stem, charset, decoder) is the pyfunc's one artifact
(``artifacts/model.pt`` in the logged model), so :func:`textrec.tracking.download_model` and serving
fetch the very file the pyfunc reads. The textrec source travels with the model (``code_paths``),
so a machine without textrec installed loads it too.

This module imports mlflow at import time (the model class subclasses ``PythonModel``);
:mod:`textrec.tracking` imports it only inside the functions that log a model.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema
from PIL import Image

IMAGE, TEXT, CONFIDENCE = "image", "text", "confidence"
ARTIFACT_KEY = "model"  # the key of model.pt in the pyfunc's artifacts
LOGGED_NAME = "model"  # the logged model's name within its run
LINES = "lines"
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("binary", IMAGE)]),
                           outputs=Schema([ColSpec("string", TEXT), ColSpec("double", CONFIDENCE)]))
# A page model (``task: page``): per page its text (lines joined by newlines) and its lines as JSON,
# ``[{"box": [x0, y0, x1, y1], "text": ..., "confidence": ...}, ...]``, as the page endpoint answers.
PAGE_SIGNATURE = ModelSignature(inputs=Schema([ColSpec("binary", IMAGE)]),
                                outputs=Schema([ColSpec("string", TEXT), ColSpec("string", LINES)]))
# What a machine needs to run the logged model (textrec itself travels as code with it; MLflow adds
# itself). Pinned to what is installed here: pip then has nothing to infer (which costs ~8 s).
MODEL_REQUIREMENTS = ("torch", "numpy", "pandas", "pillow", "scipy", "pyyaml", "editdistance", "h5py")


class PyfuncInputError(ValueError):
    """A row of the input table is not an image; the message names the row."""


def image_bytes(value: Any, name: str) -> bytes:
    """One cell of the ``image`` column -> encoded image bytes: bytes as they are, text as base64."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        text = "".join(value.split())  # base64 as MLflow and many encoders write it has line breaks
        if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
            text = text.split(",", 1)[1]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise PyfuncInputError(f"{name}: text that is not base64 ({e}); send PNG/JPEG bytes or their "
                                   "base64") from e
    raise PyfuncInputError(f"{name}: expected PNG/JPEG bytes or base64 text, got {type(value).__name__}")


def check_images(model_input: Any, what: str) -> None:
    """A table with an ``image`` column, or PyfuncInputError saying what came instead."""
    if not isinstance(model_input, pd.DataFrame) or IMAGE not in model_input.columns:
        got = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
        raise PyfuncInputError(f"expected a table with an {IMAGE!r} column of PNG/JPEG {what} bytes or base64, "
                               f"got {got}")


class LineReader(PythonModel):
    """Reads line images with the textrec ``model.pt`` held in the pyfunc's artifacts."""

    def load_context(self, context: PythonModelContext) -> None:
        from textrec.recognizer import Recognizer

        self.recognizer = Recognizer.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        check_images(model_input, "line")
        names = [f"{IMAGE} row {i}" for i in range(len(model_input))]
        tensors = [self.recognizer.preprocess(image_bytes(v, n), n)
                   for v, n in zip(model_input[IMAGE], names, strict=True)]
        results = self.recognizer.recognise_tensors(tensors)
        return pd.DataFrame({TEXT: [r.text for r in results],
                             CONFIDENCE: [float(r.confidence) for r in results]},
                            columns=[TEXT, CONFIDENCE])


class PageReader(LineReader):
    """Reads page images (found lines, read top to bottom) with the textrec ``model.pt``."""

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        import json

        check_images(model_input, "page")
        texts, lines = [], []
        for i, value in enumerate(model_input[IMAGE]):
            name = f"{IMAGE} row {i}"
            reading = self.recognizer.recognise_page(image_bytes(value, name), name)
            texts.append(reading.text)
            lines.append(json.dumps(reading.to_json()["lines"]))
        return pd.DataFrame({TEXT: texts, LINES: lines}, columns=[TEXT, LINES])


def example_page_png() -> bytes:
    """A small synthetic page: three lines of strokes, the logged input example of a page model."""
    rng = np.random.default_rng(0)
    img = np.full((150, 220), 235, np.uint8)
    for top in (15, 60, 105):
        for x in range(10, 200, 9):
            a, b = top + int(rng.integers(0, 6)), top + int(rng.integers(18, 26))
            img[a:b, x:x + 3] = 30
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def example_line_png(width: int = 96) -> bytes:
    """A small synthetic line image (dark strokes on light paper), the logged input example."""
    rng = np.random.default_rng(0)
    img = np.full((32, width), 235, np.uint8)
    for x in range(4, width - 6, 9):
        top, bottom = int(rng.integers(5, 12)), int(rng.integers(20, 28))
        img[top:bottom, x:x + 3] = 30
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def input_example() -> pd.DataFrame:
    return pd.DataFrame({IMAGE: [example_line_png()]})


def pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in MODEL_REQUIREMENTS:
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def log_line_model(model_pt: str | os.PathLike, run_id: str, *, step: int = 0,
                   tags: Mapping[str, str] | None = None, task: str = "line") -> ModelInfo:
    """Log ``model.pt`` as a pyfunc LoggedModel whose source is run ``run_id`` (say, the training run),
    at ``step`` (its best epoch: the run's metrics of that step are linked to the model). ``task``
    ``"page"``: the pyfunc reads pages (:class:`PageReader`) instead of lines.

    The run need not be active: a later step logs the model of the run that trained it without
    reopening that run (which would move its end time). The model is checked to load first.
    """
    import textrec
    from textrec.artifact import read_artifact
    from textrec.rundir import MODEL

    if task not in ("line", "page"):
        raise ValueError(f"task must be 'line' or 'page', got {task!r}")
    page = task == "page"
    info = read_artifact(model_pt)
    with tempfile.TemporaryDirectory(prefix="textrec-pyfunc-") as tmp:
        if Path(model_pt).name != MODEL:  # the artifact keeps its file name: always artifacts/model.pt
            model_pt = shutil.copyfile(model_pt, Path(tmp) / MODEL)
        return Model.log(
            artifact_path=None, name=LOGGED_NAME, flavor=mlflow.pyfunc, run_id=run_id, step=int(step),
            python_model=PageReader() if page else LineReader(),
            artifacts={ARTIFACT_KEY: str(model_pt)}, code_paths=[str(Path(textrec.__file__).parent)],
            signature=PAGE_SIGNATURE if page else SIGNATURE,
            input_example=pd.DataFrame({IMAGE: [example_page_png()]}) if page else input_example(),
            pip_requirements=pip_requirements(),
            metadata={"textrec_model": info["model_name"], "charset": info["charset"], "task": task},
            tags={k: str(v) for k, v in (tags or {}).items()} or None)
