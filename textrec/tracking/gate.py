"""The promotion gate: ``champion`` moves to a challenger only if it reads the same lines better.

:func:`promote` compares the challenger's test CER with the champion's on the *same* evaluation set
(every version records the hash of the set it was scored on); a champion scored on another set is
re-evaluated on the challenger's set, or not promoted over, with the reason said. When both were also
scored on the same labelled real set (``real_val``, same hash), their ``real_val_cer`` decides instead:
real handwriting says more than synthetic lines. The decision names the metric that decided.
:func:`register_challenger` is the pipeline's register step: log the model, register it, decide.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from textrec.tracking.lineage import log_model_evaluation, log_training_data
from textrec.tracking.registry import CHAMPION, MODEL_NAME, alias_version, download_model, log_line_version
from textrec.tracking.runs import (
    TAG_DATASET,
    TAG_EVAL_SET,
    TAG_GIT,
    TAG_PIPELINE_RUN,
    TAG_REAL_VAL_CER,
    TAG_REAL_VAL_SET,
    TAG_TEST_CER,
    StepTracking,
    git_commit,
    mlflow_client,
    set_lineage,
    step_run,
)


@dataclass(frozen=True)
class Decision:
    """What the promotion gate decided about one challenger version, and why."""

    promoted: bool
    reason: str
    model_name: str
    version: str
    challenger_cer: float
    champion_version: str | None = None
    champion_cer: float | None = None
    margin: float = 0.0
    metric: str = "test_cer"  # what challenger_cer and champion_cer are: test_cer or real_val_cer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(challenger_cer: float, champion_cer: float, margin: float) -> tuple[bool, str]:
    """Promote when the challenger's CER is lower than the champion's by more than ``margin``.

    >>> compare(0.10, 0.20, 0.05)[0], compare(0.18, 0.20, 0.05)[0], compare(0.20, 0.20, 0.0)[0]
    (True, False, False)
    """
    gain = champion_cer - challenger_cer
    if gain > margin:
        return True, (f"challenger CER {challenger_cer:.4f} beats the champion's {champion_cer:.4f} by "
                      f"{gain:.4f} (> margin {margin:.4f})")
    return False, (f"challenger CER {challenger_cer:.4f} does not beat the champion's {champion_cer:.4f} "
                   f"by more than the margin {margin:.4f}; the champion stays")


def promote(model_name: str, version: str, *, challenger_cer: float, eval_hash: str,
            margin: float = 0.0, reevaluate: Callable[[Path], float] | None = None,
            tracking_uri: str | None = None, real_val_cer: float | None = None,
            real_val_hash: str = "") -> Decision:
    """The promotion gate: move ``champion`` to ``version`` if it beats the champion on the same set.

    With ``real_val_cer`` and ``real_val_hash`` (the challenger's CER on a labelled real set) and a
    champion that recorded a CER on the set of that same hash, those two CERs decide, by ``margin``.
    Otherwise the test CERs do: the champion's counts only if it was measured on the evaluation set
    with hash ``eval_hash``; if not, ``reevaluate(champion_model_pt) -> cer`` measures it on the
    challenger's set, and without ``reevaluate`` the gate refuses to promote and says why. The
    decision (and the metric that made it) is recorded on the version.
    """
    client = mlflow_client(tracking_uri)
    client.set_model_version_tag(model_name, version, TAG_TEST_CER, f"{challenger_cer:.6f}")
    client.set_model_version_tag(model_name, version, TAG_EVAL_SET, eval_hash)
    real = bool(real_val_hash) and real_val_cer is not None and math.isfinite(real_val_cer) and real_val_cer >= 0
    if real:
        client.set_model_version_tag(model_name, version, TAG_REAL_VAL_SET, real_val_hash)
        client.set_model_version_tag(model_name, version, TAG_REAL_VAL_CER, f"{real_val_cer:.6f}")
    champ = alias_version(client, model_name, CHAMPION)
    base: dict[str, Any] = {"model_name": model_name, "version": str(version), "challenger_cer": challenger_cer,
                            "margin": margin}
    if champ is None or str(champ.version) == str(version):
        first = {**base, "challenger_cer": real_val_cer, "metric": "real_val_cer"} if real else base
        decision = Decision(True, f"no champion yet: version {version} becomes the champion", **first)
    elif (real and real_val_cer is not None and champ.tags.get(TAG_REAL_VAL_SET) == real_val_hash
          and TAG_REAL_VAL_CER in champ.tags):
        decision = _on_real_set(champ, base, real_val_cer, real_val_hash)
    else:
        decision = _against_champion(client, champ, base, eval_hash, reevaluate, tracking_uri)
        if real:
            decision = replace(decision, reason=f"{decision.reason} (on test CER: the champion has "
                                           f"no CER on the real set {real_val_hash[:12]})")
    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
    client.set_model_version_tag(model_name, version, "textrec.promoted", str(decision.promoted).lower())
    client.set_model_version_tag(model_name, version, "textrec.promotion_reason", decision.reason[:5000])
    client.set_model_version_tag(model_name, version, "textrec.promotion_metric", decision.metric)
    return decision


def _on_real_set(champ, base: dict[str, Any], real_val_cer: float, real_hash: str) -> Decision:
    """Challenger and champion were both scored on the labelled real set ``real_hash``: its CER decides."""
    cv = str(champ.version)
    champ_cer = float(champ.tags[TAG_REAL_VAL_CER])
    promoted, why = compare(real_val_cer, champ_cer, base["margin"])
    return Decision(promoted, f"version {base['version']} vs champion version {cv} on the real set "
                              f"{real_hash[:12]} (real_val_cer): {why}",
                    **{**base, "challenger_cer": real_val_cer}, champion_version=cv, champion_cer=champ_cer,
                    metric="real_val_cer")


def _against_champion(client, champ, base: dict[str, Any], eval_hash: str,
                      reevaluate: Callable[[Path], float] | None, tracking_uri: str | None) -> Decision:
    name, cv = base["model_name"], str(champ.version)
    champ_hash = champ.tags.get(TAG_EVAL_SET, "")
    note = ""
    if champ_hash == eval_hash and TAG_TEST_CER in champ.tags:
        champ_cer = float(champ.tags[TAG_TEST_CER])
    elif reevaluate is None:
        why = ("was evaluated on a different set" if champ_hash else "has no recorded evaluation set")
        return Decision(False, f"champion version {cv} {why} (hash {champ_hash[:12] or 'none'}, this set "
                               f"{eval_hash[:12]}): CERs are not comparable, so the champion stays; "
                               "re-evaluate it on this set to compare", champion_version=cv, **base)
    else:
        with tempfile.TemporaryDirectory(prefix="textrec-champion-") as tmp:
            champ_cer = float(reevaluate(download_model(name, cv, tmp, tracking_uri=tracking_uri)))
        note = f" (champion re-evaluated on this set: it was scored on {champ_hash[:12] or 'an unknown set'})"
    promoted, why = compare(base["challenger_cer"], champ_cer, base["margin"])
    return Decision(promoted, f"version {base['version']} vs champion version {cv}: {why}{note}",
                    champion_version=cv, champion_cer=champ_cer, **base)


def register_challenger(model_pt: str | os.PathLike, stores: Sequence[str | os.PathLike], *, test_cer: float,
                        eval_hash: str, model_name: str = MODEL_NAME, margin: float = 0.0,
                        step: StepTracking = StepTracking(),  # noqa: B008 (frozen)
                        decision_path: str | os.PathLike | None = None, real_val_cer: float | None = None,
                        real_val_hash: str = "", train_run_id: str = "", task: str = "line") -> Decision:
    """Log and register the model (alias ``challenger``), then let the gate decide ``champion``.

    The model is logged from the training run ``train_run_id`` (empty: this step's run) at its best
    epoch, so the registered version's source run is the run that trained it; that run gets
    ``stores`` as its training data, and this step's run the test split with the model, whose
    LoggedModel gets ``test_cer`` (and ``real_val_cer``) tied to that split
    (:mod:`textrec.tracking.lineage`).

    With ``real_val_cer``/``real_val_hash`` (the evaluate step's score on a labelled real set; an empty
    hash means none) a champion scored on the same real set is compared on it. Otherwise a champion
    scored on another test set is re-scored on the test split of ``stores``. The decision is logged
    with the step's run as ``decision.json`` and, with ``decision_path``, written there too.

    ``task="page"``: ``stores`` are page stores, a re-scored champion is scored by page CER on their
    test split, and the logged pyfunc reads pages.
    """
    import mlflow

    from textrec.data.store import describe_stores
    from textrec.evaluate import evaluate, split_samples
    from textrec.io import write_json

    def reevaluate(champion_pt: Path) -> float:
        if task == "page":
            from itertools import chain

            from textrec.evaluate_pages import evaluate_pages, store_pages

            return evaluate_pages(champion_pt, chain.from_iterable(store_pages(p) for p in stores)).cer
        return evaluate(champion_pt, split_samples(stores)).cer

    def content_hash_of() -> str:
        if task == "page":
            from textrec.data.pages import PageStore
            from textrec.data.store import combine_hashes

            return combine_hashes(PageStore(p).content_hash for p in stores)
        return str(describe_stores(stores)["content_hash"])

    uri = step.uri
    real = bool(real_val_hash) and real_val_cer is not None and real_val_cer >= 0
    with step_run("register", step.pipeline_run_id, tracking_uri=uri, experiment=step.experiment) as run_id:
        content_hash = content_hash_of()
        tags = {TAG_PIPELINE_RUN: step.pipeline_run_id, TAG_GIT: git_commit(), TAG_DATASET: content_hash}
        source_run = train_run_id or run_id
        logged = log_line_version(model_pt, source_run, model_name=model_name, tags=tags, tracking_uri=uri,
                                  task=task)
        version = logged.version
        log_training_data(source_run, stores, content_hash, tracking_uri=uri)
        log_model_evaluation(run_id, logged.model_id, stores, eval_hash, {"test_cer": test_cer}, tracking_uri=uri,
                             extra_metrics={"real_val_cer": real_val_cer} if real else None)
        decision = promote(model_name, version, challenger_cer=test_cer, eval_hash=eval_hash,
                           margin=margin, reevaluate=reevaluate, tracking_uri=uri,
                           real_val_cer=real_val_cer, real_val_hash=real_val_hash)
        scores = {"promoted": float(decision.promoted), "challenger_cer": test_cer}
        if real and real_val_cer is not None:
            scores["challenger_real_val_cer"] = real_val_cer
        mlflow.log_metrics(scores)
        mlflow.log_dict(decision.to_dict(), "decision.json")
        if decision_path:
            write_json(decision_path, decision.to_dict())
        set_lineage(run_id, {"textrec.model_version": version,
                             "textrec.promoted": str(decision.promoted).lower()}, tracking_uri=uri)
    return decision
