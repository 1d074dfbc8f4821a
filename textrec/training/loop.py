"""The training loop: one process on a CPU or N ranks on GPUs, with exact resume.

    metrics = train(load_config("configs/cpu.yaml"), Path("runs/cpu"))

What happens, in order:

1. The process group starts if the launcher set ``WORLD_SIZE`` > 1 (see :mod:`.distributed`).
2. Data is prepared (a synthetic pool is rendered once and cached) and the model is built from the
   registry with the same seed on every rank; dropout then draws from a per-rank seed.
3. Each epoch: width-bucketed batches (this rank's share), bf16 autocast on CUDA, gradient clipping,
   a per-step LR schedule; ``OUT/checkpoints/last.pt`` every ``loop.checkpoint_every_steps`` steps and
   at the end of the epoch; validation CER on every rank's share, summed over ranks (and on
   ``real_val``, labelled real lines, when ``data.real_val`` names some: it then picks the best checkpoint).
4. Rank 0 runs the callbacks (progress, time budget, early stopping, best checkpoint, tracking); a stop
   request from any of them reaches every rank before the next step.
5. At the end the best weights are reloaded, the decoder is chosen on ``real_val`` when present, else
   on val (greedy, or beam search: for a model that ``uses_lm``, with a character LM fitted on the
   training texts and, at ``decode.word_weights``, a word lexicon), the test splits are scored, and
   rank 0 writes ``OUT/model.pt`` and ``OUT/metrics.json``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from textrec import config as configlib
from textrec.artifact import save_artifact
from textrec.decoding import CharNgramLM, DecoderSpec
from textrec.io import write_json, write_yaml
from textrec.metrics import edit_counts
from textrec.models.registry import LineModel
from textrec.rundir import RunDir
from textrec.training import distributed
from textrec.training.callbacks import BestCheckpoint, Callback, EarlyStopping, ProgressBar, TimeBudget
from textrec.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from textrec.training.config import TrainConfig
from textrec.training.data import (
    BucketBatchSampler,
    Collate,
    LabelledLines,
    LineSet,
    TrainData,
    build_data,
    charset_and_stem,
    eval_batches,
)

STOP_CHECK_EVERY = 10  # steps between the all-rank stop votes (one tiny all-reduce each)


class LossModule(nn.Module):
    """Makes ``model.loss`` the forward pass, so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: LineModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, widths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor) -> torch.Tensor:
        return self.model.loss(images, widths, targets, target_lengths)


def lr_factor(schedule: str, progress: float, warmup: float) -> float:
    """The LR multiplier at ``progress`` (0 -> 1 over the run).

    onecycle: from 1/25 up to 1 over the warmup fraction, then down to 1/1000, both along half cosines;
    cosine: linear warmup from 0, then a half cosine to 0; constant: 1.

    >>> [round(lr_factor("onecycle", p, 0.2), 3) for p in (0.0, 0.2, 0.6, 1.0)]
    [0.04, 1.0, 0.5, 0.001]
    """
    p = min(1.0, max(0.0, progress))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        if p < warmup:
            return max(p / warmup, 1e-3)
        return 0.5 * (1.0 + math.cos(math.pi * (p - warmup) / (1.0 - warmup)))
    start, end = 1 / 25, 1e-3
    if p < warmup:
        return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * p / warmup))
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * (p - warmup) / (1.0 - warmup)))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                   time_progress: Callable[[], float] = lambda: 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule. Progress is the fraction of steps done or, with a time budget, the fraction
    of the budget used if that is larger: a run that will not finish its epochs in time still anneals
    its learning rate before the budget ends instead of stopping at full LR."""
    o, total = cfg.optim, max(1, total_steps)

    def factor(step: int) -> float:
        return lr_factor(o.schedule, max(step / total, time_progress()), o.warmup)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Holds everything a run needs; :meth:`fit` runs it. Callbacks see this object."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *, callbacks: Sequence[Callback] = (),
                 resume: str | os.PathLike | None = None) -> None:
        self._created = time.perf_counter()
        self.config = cfg
        self.out_dir = Path(out_dir)
        self.run = RunDir(self.out_dir)
        self.env = distributed.setup()
        self.device = self.env.device
        self.is_main = self.env.is_main
        self.rank, self.world_size = self.env.rank, self.env.world_size
        if cfg.loop.threads > 0:
            torch.set_num_threads(cfg.loop.threads)
        self.amp = self.device.type == "cuda" and cfg.loop.amp in ("auto", "bf16")
        self.charset, self.stem = charset_and_stem(cfg)  # lines, or pages (data.kind) with a line break
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.data: TrainData = build_data(cfg, self.out_dir, self.charset, self.stem, self.env, log=self.log)
        # Real handwriting, when the run has some, judges the checkpoints; synthetic val otherwise.
        self.monitor = "real_val_cer" if "real_val" in self.data.evals else "val_cer"
        self._build_model()
        self.sampler = BucketBatchSampler(self.data.train.lengths, cfg.data.batch_size, seed=cfg.data.seed,
                                          bucket_batches=cfg.data.bucket_batches, rank=self.rank,
                                          world_size=self.world_size)
        self.loader = self._loader(self.data.train, self.sampler, persistent=True)
        self.steps_per_epoch = len(self.sampler.rank_batches(0))
        self.total_steps = cfg.loop.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr,
                                           weight_decay=cfg.optim.weight_decay)
        self._time_used = 0.0  # seconds trained as last agreed by all ranks (see _agree_stop)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.total_steps, self.time_progress)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 needs no loss scaling
        self.epoch = 0  # epochs finished
        self.step = 0  # optimiser steps taken (this rank; equal on all ranks)
        self.step_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self._elapsed_before = 0.0
        self._t0 = time.perf_counter()
        self._rank_rng: list[dict[str, Any]] | None = None
        self.callbacks: list[Callback] = self._default_callbacks() + list(callbacks) if self.is_main else []
        path = resolve_resume(resume, self.out_dir)
        if path is not None:
            self.load_checkpoint(path)

    # --- setup ----------------------------------------------------------------------------------------

    def _build_model(self) -> None:
        from textrec.models import create_model

        cfg = self.config
        seed_everything(cfg.loop.seed)  # identical initial weights on every rank
        self.model = create_model(cfg.model.name, num_classes=self.charset.num_classes, height=cfg.stem.height,
                                  **cfg.model.options).to(self.device)
        self.net: nn.Module = LossModule(self.model)
        if self.env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        seed_everything(cfg.loop.seed + 7919 * (self.rank + 1))  # dropout etc. differ per rank
        self.num_parameters = sum(p.numel() for p in self.model.parameters())

    def _loader(self, dataset: LineSet, batch_sampler: Any, *, persistent: bool) -> DataLoader:
        workers = self.config.data.num_workers
        # A LineSet is a map-style dataset (__len__ + __getitem__), which is all DataLoader uses.
        return DataLoader(cast(Dataset, dataset), batch_sampler=batch_sampler, num_workers=workers,
                          collate_fn=Collate(self.charset, self.config.data.pad_width_to),
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=persistent and workers > 0,
                          # a private generator: worker seeding must not draw from the global RNG
                          generator=torch.Generator().manual_seed(self.config.loop.seed))

    def _default_callbacks(self) -> list[Callback]:
        loop = self.config.loop
        cbs: list[Callback] = [BestCheckpoint(self.monitor)]
        if loop.patience > 0:
            cbs.append(EarlyStopping(loop.patience, monitor=self.monitor))
        if loop.max_minutes > 0:
            cbs.append(TimeBudget(loop.max_minutes))
        if loop.progress:
            cbs.append(ProgressBar())
        return cbs

    # --- small services for callbacks -----------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.is_main:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)

    def elapsed(self) -> float:
        """Seconds trained, counted across resumes."""
        return self._elapsed_before + time.perf_counter() - self._t0

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.log(f"stopping: {reason}")

    def epochs_done(self) -> float:
        """Epochs trained, with the fraction of an unfinished one."""
        return round(self.epoch + self.step_in_epoch / max(1, self.steps_per_epoch), 4)

    def steps_this_epoch(self) -> int:
        return len(self.sampler)

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def time_progress(self) -> float:
        """Fraction of ``loop.max_minutes`` used, as last agreed by all ranks; 0 without a budget."""
        budget = self.config.loop.max_minutes * 60.0
        return self._time_used / budget if budget > 0 else 0.0

    def _agree_stop(self) -> bool:
        """All ranks agree on stopping and on the training time so far (so the time-aware LR stays
        identical on every rank)."""
        stop, used = distributed.all_reduce_max([float(self.stop_reason is not None), self.elapsed()], self.device)
        self._time_used = used
        return stop > 0

    # --- checkpoints ----------------------------------------------------------------------------------

    def _gather_rng(self) -> None:
        """Collect every rank's generator states (a collective: all ranks call it together)."""
        self._rank_rng = distributed.gather_objects(rng_state())

    def checkpoint_state(self) -> dict[str, Any]:
        if self._rank_rng is None:
            self._rank_rng = [rng_state()]
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
            "history": self.history, "elapsed": self.elapsed(), "rng": self._rank_rng,
            "world_size": self.world_size, "config": configlib.to_dict(self.config),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
        }

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        if self.is_main:
            save_checkpoint(path, self.checkpoint_state())

    def _save_last(self) -> None:
        self._gather_rng()
        self.save_checkpoint(self.run.last)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = load_checkpoint(path)  # on the CPU: RNG states must stay there; load_state_dict moves the rest
        saved = state.get("config", {}).get("model", {})
        if saved and saved != configlib.to_dict(self.config.model):
            raise CheckpointError(f"{path}: checkpoint is of model {saved}, the config asks for "
                                  f"{configlib.to_dict(self.config.model)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.history = list(state["history"])
        self._elapsed_before = self._time_used = float(state["elapsed"])
        self._t0 = time.perf_counter()
        if state.get("config", {}).get("optim", {}) != configlib.to_dict(self.config.optim):
            self._take_optim_config()
        for cb in self.callbacks:
            if type(cb).__name__ in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][type(cb).__name__])
        rngs = state["rng"]
        if int(state["world_size"]) == self.world_size and len(rngs) == self.world_size:
            set_rng_state(rngs[self.rank])
        else:
            self.log(f"resuming {state['world_size']} ranks as {self.world_size}: generators reseeded")
            seed_everything(self.config.loop.seed + 7919 * (self.rank + 1) + self.step)
        self.log(f"resumed from {path} at epoch {self.epoch + 1}, step {self.step}")

    def _take_optim_config(self) -> None:
        """A checkpoint resumed under other ``optim`` settings (population-based training perturbs them)
        trains on with the config's learning rate and weight decay from the next step: the optimiser and
        schedule states restored from the checkpoint would otherwise keep the old ones. The schedule's
        position is kept; schedule, warmup and grad_clip are read from the config at each step anyway."""
        o = self.config.optim
        for group in self.optimizer.param_groups:
            group["initial_lr"], group["weight_decay"] = o.lr, o.weight_decay
        self.scheduler.base_lrs = [o.lr for _ in self.optimizer.param_groups]
        step = self.scheduler.last_epoch
        for group, fn in zip(self.optimizer.param_groups, self.scheduler.lr_lambdas, strict=True):
            group["lr"] = o.lr * fn(step)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # --- training -------------------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def train_step(self, batch: Any) -> float:
        b = batch.to(self.device)
        with self._autocast():
            loss = self.net(b.images, b.widths, b.targets, b.target_lengths)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.optim.grad_clip
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        # Gradients are already averaged over ranks, so every rank takes the same decision here.
        if torch.isfinite(norm):
            self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def train_epoch(self) -> dict[str, Any]:
        self.sampler.set_epoch(self.epoch, skip=self.step_in_epoch)
        self._emit("on_epoch_start", self.epoch)
        self.model.train()
        loss_sum, n_steps, lines, t0 = 0.0, 0, 0, time.perf_counter()
        every = self.config.loop.checkpoint_every_steps
        for batch in self.loader:
            loss = self.train_step(batch)
            self.step += 1
            self.step_in_epoch += 1
            loss_sum, n_steps, lines = loss_sum + loss, n_steps + 1, lines + len(batch)
            self._emit("on_step_end", self.step, loss, len(batch))
            if every > 0 and self.step % every == 0:
                self._save_last()
            if self.step % STOP_CHECK_EVERY == 0 and self._agree_stop():
                break
        seconds = time.perf_counter() - t0
        total_loss, total_steps, total_lines = distributed.all_reduce_sum([loss_sum, n_steps, lines], self.device)
        return {"train_loss": total_loss / max(1, total_steps), "train_lines": int(total_lines),
                "lines_per_s": total_lines / max(1e-9, seconds), "lr": self.optimizer.param_groups[0]["lr"]}

    def fit(self) -> list[dict[str, Any]]:
        """Train until the epochs are done or a callback asks to stop; returns the history."""
        self._emit("on_train_start")
        if self.epoch >= self.config.loop.epochs:
            self.log(f"all {self.config.loop.epochs} epochs already trained")
        while self.epoch < self.config.loop.epochs and not self._agree_stop():
            e = self.epoch
            metrics = self.train_epoch()
            finished = self.step_in_epoch >= self.steps_per_epoch
            # A stop mid-epoch (the time budget, say) still validates: the last weights, trained at the
            # lowest learning rate, are often the best ones. The position is kept for a resume.
            for split in ("val", "real_val"):
                if split in self.data.evals:
                    metrics.update({f"{split}_{k}": v for k, v in self.score(self.data.evals[split]).items()
                                    if k != "n"})
            metrics.update(epoch=self.epochs_done(), step=self.step, elapsed_s=self.elapsed())
            self.history.append(metrics)
            if finished:
                self.epoch, self.step_in_epoch = e + 1, 0
            self._gather_rng()
            self._emit("on_epoch_end", e, metrics)
            self.save_checkpoint(self.run.last)
            if not finished:
                break
        return self.history

    # --- evaluation -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def recognise_dataset(self, dataset: LineSet, decoder: DecoderSpec,
                          lm: CharNgramLM | None = None) -> tuple[list[str], list[str]]:
        """(predictions, truths) for this rank's share of ``dataset``."""
        self.model.eval()
        batches = eval_batches(dataset.lengths(0), self.config.loop.eval_batch_size, self.rank, self.world_size)
        preds, truths = [], []
        for batch in self._loader(dataset, batches, persistent=False):
            b = batch.to(self.device)
            with self._autocast():
                results = self.model.recognise(b.images, b.widths, decoder, lm)
            preds += [r.text for r in results]
            truths += batch.texts
        return preds, truths

    def score(self, dataset: LineSet, decoder: DecoderSpec | None = None,
              lm: CharNgramLM | None = None) -> dict[str, float]:
        """CER and WER over all ranks' shares (greedy unless ``decoder`` says otherwise): summed edits
        over summed reference lengths."""
        preds, truths = self.recognise_dataset(dataset, decoder or DecoderSpec(), lm)
        counts = [float(c) for c in edit_counts(preds, truths)] + [float(len(truths))]
        ce, cn, we, wn, n = distributed.all_reduce_sum(counts, self.device)
        return {"cer": ce / max(1.0, cn), "wer": we / max(1.0, wn), "n": int(n)}

    def load_best(self) -> None:
        """Every rank takes the weights of ``best.pt`` (read by rank 0 and broadcast)."""
        best = self.run.best
        state = None
        if self.is_main and best.is_file():
            state = {k: v.cpu() for k, v in load_checkpoint(best)["model"].items()}
        state = distributed.broadcast_object(state)
        if state is not None:
            self.model.load_state_dict(state)

    def choose_decoder(self) -> tuple[DecoderSpec, CharNgramLM | None, dict[str, float]]:
        """The decoder with the lowest CER on ``real_val`` (real handwriting) when the data has that set,
        else on ``val``: (spec, the LM it uses or None, CER of each one tried).

        With ``decode.lm_order`` 0 that is greedy. Otherwise beam search of width ``decode.beam`` is
        tried too: for a model that ``uses_lm``, with a character LM fitted on the training texts at
        each of ``decode.lm_weights``; for one that does not, as a single plain pass, since an LM
        weight would change nothing and its search (e.g. resnet_transformer's length-normalised
        beam over its own autoregressive decoder) can still find better lines than greedy. For a model
        that uses an LM, each of ``decode.word_weights`` then adds a word LM (``decode.lexicon``) to
        the best of those beam searches; a chosen word LM travels in the returned LM's ``words``.
        ``decode.choose=fixed`` keeps the configured weights instead of the lowest val CER (every
        decoder is still scored and logged), unless the run has ``real_val``, which decides as always.
        """
        from textrec.decoding import WordLM

        d = self.config.decode
        greedy = DecoderSpec()
        if d.lm_order <= 0:
            return greedy, None, {}
        split = "real_val" if "real_val" in self.data.evals else "val"
        dataset = self.data.evals[split]
        tried = {greedy.label(): self.score(dataset)["cer"]}
        best, best_cer = greedy, tried[greedy.label()]

        def attempt(cand: DecoderSpec, cand_lm: CharNgramLM | None) -> float | None:
            nonlocal best, best_cer
            try:
                tried[cand.label()] = c = self.score(dataset, cand, cand_lm)["cer"]
            except Exception as e:  # noqa: BLE001  (a decoder bug must not cost the trained model)
                self.log(f"decoder {cand.label()} failed on {split} ({type(e).__name__}: {e}); not used")
                return None
            if c < best_cer:
                best, best_cer = cand, c
            return c

        lm = None
        if self.model.uses_lm:
            lm = CharNgramLM.fit(self.data.lm_texts(), order=d.lm_order, charset=self.charset)
            candidates = [DecoderSpec("beam", d.beam, float(w)) for w in d.lm_weights]
        else:
            candidates = [DecoderSpec("beam", d.beam)]
        beams = {cand: c for cand in candidates if (c := attempt(cand, lm)) is not None}
        with_words = None
        if any(d.word_weights) and lm is not None and beams:
            base = min(beams, key=lambda cand: beams[cand])
            try:
                texts = self.data.lm_texts() if "texts" in d.lexicon else ()
                words = WordLM.build(d.lexicon, texts, size=d.lexicon_size, charset=self.charset)
            except Exception as e:  # noqa: BLE001  (a missing word list must not cost the trained model)
                self.log(f"word LM ({d.lexicon}) could not be built ({type(e).__name__}: {e}); not used")
            else:
                carrier = lm if base.lm_weight > 0 else CharNgramLM.uniform(self.charset)
                with_words = carrier.with_words(words)
                self.log(f"word LM: {len(words)} words ({d.lexicon}), tried with {base.label()}")
                for w in d.word_weights:
                    if w > 0:
                        attempt(DecoderSpec("beam", d.beam, base.lm_weight, base.insertion_bonus, float(w)),
                                with_words)
        elif any(d.word_weights):
            self.log(f"decode.word_weights not tried: {self.model.name} does not use a language model")
        self.log(f"decoders on {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in tried.items()))
        if d.choose == "fixed" and split == "val" and self.model.uses_lm:
            word = d.word_weights[0] if d.word_weights and with_words is not None else 0.0
            fixed = DecoderSpec("beam", d.beam, float(d.lm_weights[0]), 0.0, float(word))
            if fixed.label() in tried:  # it ran without error
                self.log(f"decoder {fixed.label()} as configured (decode.choose=fixed)")
                best = fixed
        if best.word_weight > 0:
            return best, with_words, tried
        return best, (lm if best.lm_weight > 0 else None), tried

    def finish(self) -> dict[str, Any]:
        """Best weights, decoder choice, test scores; rank 0 writes model.pt and metrics.json."""
        self.load_best()
        decoder, lm, tried = self.choose_decoder()
        last = self.history[-1] if self.history else {}
        metrics: dict[str, Any] = {
            "epochs": self.epochs_done(), "steps": self.step, "stopped": self.stop_reason or "completed",
            "lines_per_s": _mean([h["lines_per_s"] for h in self.history]),
            "train_loss": last.get("train_loss"), "wall_s": self.elapsed(), "parameters": self.num_parameters,
            "world_size": self.world_size, "device": self.device.type, "decoder": decoder.to_dict(),
            "val_decoders": tried,
        }
        for split, dataset in self.data.evals.items():
            scores = self.score(dataset, decoder, lm)
            metrics.update({f"{split}_cer": scores["cer"], f"{split}_wer": scores["wer"], f"{split}_n": scores["n"]})
            if decoder.kind != "greedy":
                metrics[f"{split}_cer_greedy"] = self.score(dataset)["cer"]
        metrics.setdefault("test_cer", None)
        metrics["selected_by"] = self.monitor  # what picked the best checkpoint
        real = self.data.evals.get("real_val")
        if isinstance(real, LabelledLines):
            metrics.update(real_val_hash=real.hash, real_val_source=self.config.data.real_val)
        metrics["wall_s"] = self.elapsed()  # training, counted across resumes
        metrics["process_wall_s"] = time.perf_counter() - self._created  # this process: data prep included
        if self.is_main:
            save_artifact(self.run.model, self.model, charset=self.charset, stem=self.stem,
                          decoder=decoder, lm=lm, metrics=metrics)
            write_json(self.run.metrics, metrics)
        self._emit("on_train_end", metrics)
        return metrics

    def close(self) -> None:
        for cb in self.callbacks:
            if isinstance(cb, ProgressBar):
                cb.close()
        self.loader = None  # type: ignore[assignment]  # stops persistent workers


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, callbacks: Sequence[Callback] = (),
          resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train, evaluate and write the run's files; returns the final metrics (on every rank).

    Writes ``OUT/model.pt``, ``OUT/metrics.json``, ``OUT/checkpoints/{best,last}.pt`` and
    ``OUT/config.yaml``. ``resume="auto"`` continues from ``OUT/checkpoints/last.pt`` when present.
    """
    trainer = Trainer(cfg, out_dir, callbacks=callbacks, resume=resume)
    try:
        if trainer.is_main:
            write_yaml(trainer.run.config, configlib.to_dict(cfg))
            trainer.log(f"training {cfg.model.name} ({trainer.num_parameters / 1e6:.2f} M parameters) on "
                        f"{trainer.world_size} x {trainer.device.type}, {len(trainer.data.train)} lines per epoch, "
                        f"{trainer.steps_per_epoch} steps per epoch per rank")
        trainer.fit()
        return trainer.finish()
    finally:
        trainer.close()
        distributed.cleanup()
