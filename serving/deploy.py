"""Serve a model version if it is not served already: on the local TorchServe, or on a cluster.

- ``serve()`` is what ``make serve`` runs: start the local TorchServe with a model (default: the
  registry's champion) served twice, as ``textrec-line`` (one line per request) and ``textrec-page``
  (one page per request: the segmenter in front of the same model file), or roll the running one to it.
- ``deploy_model()`` is the deploy step: it compares the version a model URI would be served as with
  the served one and changes nothing when they are equal. ``target="local"`` swaps versions live in
  the local TorchServe (``serving.torchserve``), every name it serves together; ``target="cluster"``
  uploads the archive to the model store and has ``cluster.rollout`` patch the serving Deployment,
  which rolls its pods.

Archiving and uploading stay here (they are serving logic); ``cluster.rollout`` only talks to
Kubernetes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from serving.champion import CHAMPION_URI, PAGE_CHAMPION_URI, use_champion_registry
from serving.config import ServeConfig
from serving.torchserve import DEFAULT_WORKDIR, ServeError, TorchServeProcess
from textrec.tracking import CHAMPION, MODEL_NAME, PAGE_MODEL_NAME

TARGETS = ("local", "cluster")
RUNTIMES = ("torchserve", "kserve")
OIP_SUBDIR = "oip"  # the OIP server's folder inside the serving folder (serving.oip_process)


@dataclass(frozen=True)
class DeployResult:
    """What ``deploy_model`` did: ``changed`` is False (with a reason) when the champion had not moved."""

    changed: bool
    reason: str
    version: str | None = None
    previous: str | None = None
    archive: str | None = None
    target: str = "local"
    models: tuple[str, ...] = ()  # the served names rolled (locally: the line model, and pages if served)

    def to_dict(self) -> dict:
        return asdict(self)


def model_version(model_uri: str) -> str:
    """The version ``model_uri`` would be served as: the registry version behind a ``models:/`` URI
    (looked up, not downloaded), or the content version of a local model.pt."""
    from serving.archive import local_model_file, local_version, lookup_version

    if str(model_uri).startswith("models:/"):
        return lookup_version(str(model_uri))[1]
    return local_version(local_model_file(model_uri))


def deploy_model(model_uri: str = CHAMPION_URI, *, target: str = "local", version: str | None = None,
                 workdir: str | os.PathLike = DEFAULT_WORKDIR, model_name: str = MODEL_NAME,
                 workers: int = 1, model_store_uri: str | None = None, namespace: str = "default",
                 deployment: str = "textrec-serving", apps_api: Any = None, custom_api: Any = None,
                 archive_options: Any = None, tasks: Sequence[str] | None = None,
                 runtime: str | None = None) -> DeployResult:
    """Serve ``model_uri`` if it is not served already.

    ``target="local"``: every local server running from ``workdir`` moves (``runtime``: only that one,
    which must run). TorchServe: archive into its store and swap versions live, for each of ``tasks``
    (``"line"`` as ``model_name``, ``"page"`` as ``textrec-page``; default: the tasks it serves now, so
    a roll moves lines and pages together). The OIP server (``workdir/oip``): keep the model.pt in its
    folder and have it load that, answering with the old version until the new one is in.
    ``target="cluster"``: the serving workload says which runtime it runs (``cluster.rollout``): for
    TorchServe upload the archive to ``model_store_uri`` (s3://... or a path), for the OIP server (a
    Deployment's ``oip`` container, or a KServe InferenceService) the model.pt; then patch the workload
    so Kubernetes rolls new pods onto the new version (``apps_api``/``custom_api``: an ``AppsV1Api`` /
    ``CustomObjectsApi``, by default the ones ``cluster.client`` sets up).
    """
    from serving.archive import ArchiveOptions

    if target not in TARGETS:
        raise ValueError(f"deploy_model: target must be 'local' or 'cluster', got {target!r}")
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"deploy_model: runtime must be one of {', '.join(RUNTIMES)} (or unset), got {runtime!r}")
    if target == "cluster" and not model_store_uri:
        raise ValueError("deploy_model(target='cluster') needs model_store_uri (s3://bucket/prefix)")
    wanted = version or model_version(model_uri)
    options = archive_options or ArchiveOptions(workers=workers)
    if target == "local":
        return _deploy_local_servers(model_uri, wanted, workdir=Path(workdir), model_name=model_name,
                                     workers=workers, options=options, tasks=tasks, runtime=runtime)
    return _deploy_cluster(model_uri, wanted, model_name=model_name, model_store_uri=str(model_store_uri),
                           namespace=namespace, name=deployment, apps_api=apps_api, custom_api=custom_api,
                           options=options)


def _deploy_local_servers(model_uri: str, wanted: str, *, workdir: Path, runtime: str | None,
                          **torchserve: Any) -> DeployResult:
    """Roll each local server that runs from ``workdir`` (TorchServe there, the OIP server in
    ``workdir/oip``), or only ``runtime``'s; one result saying what became of each."""
    from serving.oip_process import OipServerProcess

    oip = OipServerProcess(workdir=workdir / OIP_SUBDIR)
    running = {"torchserve": _torchserve_running(workdir), "kserve": oip.pid() is not None}
    chosen = [runtime] if runtime else [r for r, up in running.items() if up]
    if not chosen or not running[chosen[0]]:
        what = {"torchserve": f"TorchServe from {workdir} (`make serve`)",
                "kserve": f"OIP server from {oip.workdir} (`make serve RUNTIME=kserve`)"}
        raise ServeError("no local server to deploy to: no " + " and no ".join(what[r] for r in (chosen or RUNTIMES))
                         + " is running")
    results = [_deploy_local(model_uri, wanted, workdir=workdir, **torchserve) if r == "torchserve"
               else _deploy_oip_local(model_uri, wanted, OipServerProcess.from_workdir(oip.workdir))
               for r in chosen]
    if len(results) == 1:
        return results[0]
    first = results[0]
    return DeployResult(any(r.changed for r in results), "; ".join(r.reason for r in results), first.version,
                        first.previous, first.archive, models=tuple(m for r in results for m in r.models))


def _torchserve_running(workdir: Path) -> bool:
    try:
        return TorchServeProcess.from_workdir(workdir).pid() is not None
    except ServeError:  # never started here
        return False


def _deploy_oip_local(model_uri: str, wanted: str, server: Any) -> DeployResult:
    """Have the local OIP server load ``model_uri``: the model.pt goes into ``oip/models/<version>``
    (a restart serves it from there), older versions but the previous one are removed."""
    import shutil

    from serving.archive import resolve_model

    name = server.config.model_name
    served = str(server.served()["version"])
    if served == wanted:
        return DeployResult(False, f"{model_uri} is version {wanted}, which the OIP server already serves",
                            wanted, served, models=(name,))
    models = server.workdir / "models"
    dest = models / wanted
    source = resolve_model(model_uri, dest, version=wanted)
    if not source.model_path.is_relative_to(dest):  # a local file: keep a copy the server owns
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.model_path, dest / "model.pt")
        source = replace(source, model_path=dest / "model.pt")
    previous = server.swap(source.model_path, source.version, source=source.to_dict())
    for old in models.iterdir():
        if old.name not in (source.version, previous):
            shutil.rmtree(old, ignore_errors=True)
    return DeployResult(True, f"the OIP server now serves {model_uri} as version {source.version} ({name})",
                        source.version, previous, str(source.model_path), models=(name,))


def _deploy_local(model_uri: str, wanted: str, *, workdir: str | os.PathLike, model_name: str, workers: int,
                  options: Any, tasks: Sequence[str] | None) -> DeployResult:
    from serving.archive import SERVED_NAMES, build_archive, resolve_model

    server = TorchServeProcess.from_workdir(workdir)
    if server.pid() is None:
        raise ServeError(f"no TorchServe is running from {workdir}; start one with `make serve`")
    names = {**SERVED_NAMES, "line": model_name}
    chosen = list(tasks) if tasks else [t for t, name in names.items() if server.versions(name)] or ["line"]
    served = {t: server.default_version(names[t]) for t in chosen}
    models = tuple(names[t] for t in chosen)
    if all(v == wanted for v in served.values()):
        return DeployResult(False, f"{model_uri} is version {wanted}, which is already served", wanted,
                            served[chosen[0]], models=models)
    with tempfile.TemporaryDirectory(prefix="textrec-deploy-") as tmp:
        source = resolve_model(model_uri, Path(tmp), version=wanted)
        mars = {t: build_archive(source, server.config.model_store, model_name=names[t],
                                 options=options.for_task(t), overwrite=True) for t in chosen}
    previous = server.swap_models({names[t]: mar.name for t, mar in mars.items()}, source.version,
                                  workers=workers)
    return DeployResult(True, f"now serving {model_uri} as version {source.version} ({', '.join(models)})",
                        source.version, previous[names[chosen[0]]], str(mars[chosen[0]]), models=models)


def _deploy_cluster(model_uri: str, wanted: str, *, model_name: str, model_store_uri: str,
                    namespace: str, name: str, apps_api: Any, custom_api: Any, options: Any) -> DeployResult:
    from cluster import rollout
    from serving.archive import archive_name, build_archive, resolve_model
    from textrec import storage

    workload = rollout.find_workload(name, namespace, apps_api=apps_api, custom_api=custom_api)
    where = f"{namespace}/{name} ({workload.describe()})"
    if workload.served_version == wanted:
        return DeployResult(False, f"{model_uri} is version {wanted}, which {where} already serves", wanted,
                            workload.served_version, target="cluster", models=(model_name,))
    store = model_store_uri.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="textrec-deploy-") as tmp:
        source = resolve_model(model_uri, Path(tmp) / "model", version=wanted)
        if workload.runtime == "torchserve":
            artifact = build_archive(source, Path(tmp) / "store", model_name=model_name, options=options)
            dest = f"{store}/{archive_name(model_name, source.version)}"
        else:  # the OIP server loads the model.pt itself
            artifact, dest = source.model_path, f"{store}/{model_name}-v{source.version}.pt"
        storage.upload(artifact, dest)  # the model is in the store before any pod is told to load it
    rollout.roll_out(workload, source, dest, apps_api=apps_api, custom_api=custom_api)
    return DeployResult(True, f"{where} rolling to {model_uri} version {source.version}", source.version,
                        workload.served_version, dest, target="cluster", models=(model_name,))


# --- `make serve` ---------------------------------------------------------------------------------


def serve(model: str | None = None, *, workdir: str | os.PathLike = DEFAULT_WORKDIR,
          config: ServeConfig | None = None, version: str | None = None, options: Any = None,
          timeout: float = 180.0) -> TorchServeProcess:
    """Start (or update) the local TorchServe with ``model`` (default: the registry's champion), served
    as the line model and the page model (``SERVED_NAMES``; by default pages are served by the page
    model champion, ``textrec-page@champion``, where one exists); ``options`` (an ``ArchiveOptions``) sets
    batching and the handler's limits, the page archive taking them through ``for_task("page")``."""
    from serving.archive import SERVED_NAMES, ArchiveOptions, build_archive, resolve_model

    workdir = Path(workdir)
    page_model = model
    if model is None:
        use_champion_registry()
        model = page_model = CHAMPION_URI
        if page_champion_exists():  # a page model is champion: it serves pages, the line champion lines
            page_model = PAGE_CHAMPION_URI
    models = {"line": model, "page": page_model}
    cfg = config or ServeConfig(model_store=workdir / "model-store", enable_model_api=True)
    server = TorchServeProcess(cfg, workdir)
    if server.pid() is not None:  # already up: roll it to this model instead (adding pages if missing)
        server = TorchServeProcess.from_workdir(workdir)
        if page_model == model:
            deploy_model(model, version=version, workdir=workdir, archive_options=options,
                         tasks=list(SERVED_NAMES), runtime="torchserve")
        else:
            for task in SERVED_NAMES:
                deploy_model(models[task], workdir=workdir, archive_options=options, tasks=[task],
                             runtime="torchserve")
        for name in SERVED_NAMES.values():
            server.wait_ready(name)
        return server
    options = options or ArchiveOptions(workers=cfg.workers_per_model)
    with tempfile.TemporaryDirectory(prefix="textrec-serve-") as tmp:
        line = resolve_model(model, Path(tmp) / "line", version=version or model_version(str(model)))
        sources = {"line": line, "page": line if page_model == model else
                   resolve_model(page_model, Path(tmp) / "page", version=model_version(str(page_model)))}
        mars = {name: build_archive(sources[task], cfg.model_store, model_name=name,
                                    options=options.for_task(task), overwrite=True).name
                for task, name in SERVED_NAMES.items()}
    server.start(mars, timeout=timeout)
    try:
        for name in mars:
            server.wait_ready(name, timeout=timeout)
    except ServeError:
        server.stop()
        raise
    return server


def deploy_step(model_uri: str, *, promoted: bool, target: str, model_store_uri: str = "", namespace: str = "",
                deployment: str = "textrec-serving", task: str = "line") -> DeployResult:
    """The pipeline's deploy step: serve ``model_uri`` when the gate ``promoted`` it and ``target`` is not
    ``"none"``; otherwise change nothing and say why. It decides from the register step's outputs rather
    than sitting inside pipeline conditions, so every runner (Kubeflow, kfp.local) runs it the same way
    and a run's log always says what became of serving. ``namespace`` empty: the pod's own.

    ``task="page"`` (a ``textrec-page`` model): locally only TorchServe's page endpoint moves; on a
    cluster the workload named ``deployment`` (a serving release for pages). A line model moves the
    local page endpoint too (it reads pages through the segmenter) unless a page model is champion."""
    if target == "none":
        return DeployResult(False, f"serving_target is 'none': {model_uri} is registered, not served",
                            target=target)
    if target not in TARGETS:
        raise ValueError(f"deploy step: serving_target must be 'cluster', 'local' or 'none', got {target!r}")
    if task not in ("line", "page"):
        raise ValueError(f"deploy step: task must be 'line' or 'page', got {task!r}")
    if not promoted:
        return DeployResult(False, f"{model_uri} was not promoted: the served champion stays", target=target)
    # The name it is served under (what clients ask for and the chart's model.name), not the registered
    # name, which may be any (say textrec-line-eu).
    from serving.archive import SERVED_NAMES

    served = SERVED_NAMES[task]
    if target == "local":
        if task == "page":
            return deploy_model(model_uri, target="local", tasks=["page"], runtime="torchserve")
        return deploy_model(model_uri, target="local",
                            tasks=["line"] if registered_name(model_uri) and page_champion_exists() else None)
    from cluster.client import current_namespace

    return deploy_model(model_uri, target="cluster", model_store_uri=model_store_uri, model_name=served,
                        namespace=namespace or current_namespace(), deployment=deployment)


def registered_name(model_uri: str) -> str | None:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` -> NAME (None for a local model)."""
    if not str(model_uri).startswith("models:/"):
        return None
    return str(model_uri)[len("models:/"):].split("/")[0].split("@")[0] or None


def page_champion_exists() -> bool:
    """Whether the registry has a page model champion (``textrec-page@champion``): then it, not the
    line champion through the segmenter, is what serves pages."""
    from mlflow.exceptions import MlflowException

    from textrec.tracking import TrackingError, mlflow_client

    try:
        mlflow_client().get_model_version_by_alias(PAGE_MODEL_NAME, CHAMPION)
        return True
    except (MlflowException, TrackingError):  # no such model, or no registry to ask
        return False
