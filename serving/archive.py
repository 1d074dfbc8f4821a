"""Package a textrec model artifact as a TorchServe model archive (``.mar``).

The model comes from the MLflow registry (``models:/textrec-line@champion``, ``models:/textrec-line/3``)
or from a local ``model.pt``. The archive's version is the registry version, and the archive carries
``textrec-source.json`` naming the model URI, registry name + version, run id and the SHA-256 of the
weights, so a served answer traces back to the exact training run.

    python -m serving.archive models:/textrec-line@champion --store .textrec/serve/model-store
    python -m serving.archive models:/textrec-line@champion --store DIR --task page   # textrec-page

A page archive holds the same ``model.pt`` as a line archive (page recognition is the segmenter in
front of the line model); only its ``model-config.yaml`` differs: ``handler: {task: page}``, one page
per call, and the page pixel limit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from serving.handler import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_TASK, SOURCE_FILE, TASKS
from textrec.data.download import sha256_of
from textrec.recognizer import DEFAULT_MAX_PAGE_PIXELS
from textrec.tracking import MODEL_NAME, PAGE_MODEL_NAME

HANDLER = Path(__file__).with_name("handler.py")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")
SERVED_NAMES = {"line": MODEL_NAME, "page": PAGE_MODEL_NAME}  # the name each task is served under
# A page is many lines, recognised together in one pass: one page per call already fills a batch, and
# batching pages would only make a small page wait for a large one.
PAGE_BATCH_SIZE = 1


class ArchiveError(RuntimeError):
    """A model cannot be found or archived; the message names it."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model artifact came from: enough to trace a served version back to its run."""

    model_path: Path
    version: str
    model_uri: str
    registered_name: str | None = None
    run_id: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model_path"] = self.model_path.name
        d["sha256"] = sha256(self.model_path)
        return d


@dataclass(frozen=True)
class ArchiveOptions:
    """What TorchServe needs to know about serving the model (written to the archive's model-config.yaml)."""

    batch_size: int = 8
    max_batch_delay_ms: int = 5
    workers: int = 1
    response_timeout_s: int = 60
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    task: str = DEFAULT_TASK  # "line" or "page": what one request is
    max_page_pixels: int = DEFAULT_MAX_PAGE_PIXELS

    def __post_init__(self) -> None:
        for name in ("batch_size", "workers", "response_timeout_s", "max_image_bytes", "max_pixels",
                     "max_page_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"ArchiveOptions.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_batch_delay_ms < 0:
            raise ValueError(f"ArchiveOptions.max_batch_delay_ms must be >= 0, got {self.max_batch_delay_ms}")
        if self.task not in TASKS:
            raise ValueError(f"ArchiveOptions.task must be one of {list(TASKS)}, got {self.task!r}")

    def for_task(self, task: str) -> ArchiveOptions:
        """These options for serving ``task`` instead: a page archive reads one page per call, a line
        archive made from page options gets the default batch size back. Limits and workers carry over."""
        if task == self.task:
            return self
        return replace(self, task=task, batch_size=PAGE_BATCH_SIZE if task == "page" else ArchiveOptions.batch_size)

    def model_config(self) -> dict:
        handler = {"task": self.task, "max_image_bytes": self.max_image_bytes, "max_pixels": self.max_pixels,
                   "max_page_pixels": self.max_page_pixels}
        return {"minWorkers": self.workers, "maxWorkers": self.workers, "batchSize": self.batch_size,
                "maxBatchDelay": self.max_batch_delay_ms, "responseTimeout": self.response_timeout_s,
                "handler": handler}


sha256 = sha256_of  # the file's hex SHA-256 (textrec.data.download)


def archive_name(model_name: str, version: str, archive_format: str = "default") -> str:
    """``textrec-line-v3.mar`` (or the folder ``textrec-line-v3`` for ``no-archive``)."""
    return f"{model_name}-v{version}" + ("" if archive_format == "no-archive" else ".mar")


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    m = _MODELS_URI.match(uri)
    if not m:
        raise ArchiveError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def resolve_model(model: str | os.PathLike, dest: Path, *, version: str | None = None) -> ModelSource:
    """A local model.pt plus its provenance, from a ``models:/`` URI or a local path (file or folder)."""
    text = str(model)
    if text.startswith("models:/"):
        return _resolve_registered(text, dest, version)
    path = local_model_file(text)
    return ModelSource(model_path=path.absolute(), version=version or local_version(path),
                       model_uri=str(path.absolute()))


def local_model_file(model: str | os.PathLike) -> Path:
    """``model.pt`` itself, or the one inside a run folder."""
    path = Path(model)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ArchiveError(f"{model}: no such model file (expected a model.pt or a folder holding one)")
    return path


def local_version(model_pt: Path) -> str:
    """The version of an unregistered model.pt: the start of its SHA-256, so the same file archives
    (and deploys) as the same version, and a changed file as a new one."""
    return sha256(model_pt)[:12]


def lookup_version(uri: str) -> tuple[str, str, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, registry version, run id)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from textrec.tracking import TrackingError, resolve_tracking_uri

    name, alias, number = parse_models_uri(uri)
    try:
        tracking_uri = resolve_tracking_uri()
    except TrackingError as e:
        raise ArchiveError(f"{uri}: {e}") from e
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as e:
        raise ArchiveError(f"{uri}: not found in the registry at {tracking_uri}: {e.message}") from e
    return name, str(mv.version), mv.run_id


def _resolve_registered(uri: str, dest: Path, version: str | None) -> ModelSource:
    """Download a registered model version; the registry version becomes the archive version."""
    name, number, run_id = lookup_version(uri)
    # Download the version just looked up, so a champion that moves meanwhile cannot mix two versions.
    path = _download_version(name, number, dest)
    return ModelSource(model_path=path, version=version or number, model_uri=uri, registered_name=name,
                       run_id=run_id)


def _download_version(name: str, version: str, dest: Path) -> Path:
    """model.pt of a registered version (textrec.tracking knows where the logged model keeps it)."""
    from textrec import tracking

    try:
        return tracking.download_model(name, version, dest)
    except tracking.TrackingError as e:
        raise ArchiveError(str(e)) from e


def build_archive(source: ModelSource, model_store: str | os.PathLike, *, model_name: str | None = None,
                  options: ArchiveOptions = ArchiveOptions(), archive_format: str = "default",
                  overwrite: bool = False) -> Path:
    """Write ``<model_store>/<model_name>-v<version>.mar`` atomically; returns its path. The model name
    defaults to the one the options' task is served under (``SERVED_NAMES``)."""
    model_name = model_name or SERVED_NAMES[options.task]
    if not _VERSION.match(source.version):
        raise ArchiveError(f"version {source.version!r}: expected letters, digits, '.', '_' or '-'")
    store = Path(model_store)
    store.mkdir(parents=True, exist_ok=True)
    final = store / archive_name(model_name, source.version, archive_format)
    if final.exists() and not overwrite:
        raise ArchiveError(f"{final} already exists (pass overwrite=True to replace it)")
    # Build inside the store so the last step is a rename on one filesystem.
    with tempfile.TemporaryDirectory(prefix=".archive-", dir=store) as tmp:
        tmp = Path(tmp)
        extra = tmp / "in" / SOURCE_FILE
        extra.parent.mkdir()
        extra.write_text(json.dumps(source.to_dict(), indent=2, sort_keys=True) + "\n")
        config = tmp / "in" / "model-config.yaml"
        config.write_text(yaml.safe_dump(options.model_config(), sort_keys=False))
        (tmp / "out").mkdir()
        _run_archiver(tmp, model_name, source, extra, config, archive_format)
        built = tmp / "out" / (model_name + ("" if archive_format == "no-archive" else ".mar"))
        _replace(built, final)
    return final


def _run_archiver(tmp: Path, model_name: str, source: ModelSource, extra: Path, config: Path,
                  archive_format: str) -> None:
    cmd = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", model_name,
           "--version", source.version, "--serialized-file", str(source.model_path),
           "--handler", str(HANDLER), "--extra-files", str(extra), "--config-file", str(config),
           "--export-path", str(tmp / "out"), "--archive-format", archive_format]
    # The archiver stages files in $TMPDIR/<model_name>: give it a private TMPDIR so that two
    # archives of the same model built at once cannot trample each other.
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ArchiveError(f"torch-model-archiver failed for {source.model_path}: "
                           f"{(proc.stderr or proc.stdout).strip()[-2000:]}")


def _replace(built: Path, final: Path) -> None:
    """Put ``built`` (a ``.mar`` or an unpacked folder) at ``final``, replacing what is there.

    textrec.io's atomic writers make one file; an unpacked archive is a folder, which cannot replace
    another in one rename, so the old folder steps aside first and comes back if the swap fails."""
    if built.is_file() or not final.exists():
        os.replace(built, final)
        return
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)  # left by a crash in the middle of an earlier swap
    os.replace(final, old)
    try:
        os.replace(built, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def archive_model(model: str | os.PathLike, model_store: str | os.PathLike, *, version: str | None = None,
                  model_name: str | None = None, options: ArchiveOptions = ArchiveOptions(),
                  archive_format: str = "default", overwrite: bool = False) -> Path:
    """Resolve ``model`` (``models:/...`` or a local model.pt) and archive it into ``model_store``."""
    with tempfile.TemporaryDirectory(prefix="textrec-archive-") as tmp:
        source = resolve_model(model, Path(tmp), version=version)
        return build_archive(source, model_store, model_name=model_name, options=options,
                             archive_format=archive_format, overwrite=overwrite)


def read_source(archive: str | os.PathLike) -> dict:
    """The provenance record (``textrec-source.json``) and TorchServe manifest of an archive."""
    archive = Path(archive)
    try:
        if archive.is_dir():
            source = json.loads((archive / SOURCE_FILE).read_text())
            manifest = json.loads((archive / "MAR-INF" / "MANIFEST.json").read_text())
        else:
            with zipfile.ZipFile(archive) as z:
                source = json.loads(z.read(SOURCE_FILE))
                manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ArchiveError(f"{archive}: not a textrec model archive ({e})") from e
    return {**source, "manifest": manifest}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.archive", description=__doc__.splitlines()[0])
    p.add_argument("model", help="models:/NAME@ALIAS, models:/NAME/VERSION, or a local model.pt")
    p.add_argument("--store", type=Path, required=True, help="model store folder")
    p.add_argument("--version", default=None, help="archive version (default: the registry version)")
    p.add_argument("--task", choices=TASKS, default=DEFAULT_TASK,
                   help="what one request is (a page archive is served as " + SERVED_NAMES["page"] + ")")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default {ArchiveOptions.batch_size} (pages: {PAGE_BATCH_SIZE})")
    p.add_argument("--max-batch-delay-ms", type=int, default=ArchiveOptions.max_batch_delay_ms)
    p.add_argument("--archive-format", choices=["default", "no-archive"], default="default")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    opts = ArchiveOptions(max_batch_delay_ms=a.max_batch_delay_ms).for_task(a.task)
    if a.batch_size is not None:
        opts = replace(opts, batch_size=a.batch_size)
    try:
        path = archive_model(a.model, a.store, version=a.version, options=opts,
                             archive_format=a.archive_format, overwrite=a.overwrite)
    except (ArchiveError, OSError) as e:
        print(f"serving.archive: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
