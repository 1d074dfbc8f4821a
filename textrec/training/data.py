"""Lines -> padded batches: datasets over line stores or a live renderer, width buckets, collate.

Determinism is what makes exact resume and DDP simple here. The batch sampler's order is a pure
function of (seed, epoch), and a line's augmentation (or, for rendered lines, its text, font and
distortions) of (seed, epoch, index). The sampler hands the dataset ``(epoch, index)`` keys, so
DataLoader workers need no per-epoch state and may persist across epochs.

Batches are formed inside chunks of lines sorted by width (``bucket_batches`` batches per chunk), so
a batch holds lines of similar width and little of each batch is padding; the batch order is then
shuffled so training still sees widths in random order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from textrec.charset import Charset
from textrec.data.store import LineStore
from textrec.data.text import corpus_key
from textrec.io import FileLock
from textrec.stem import LineStem, pad_images

Key = int | tuple[int, int]  # a line index, or (epoch, index) for lines that change per epoch


@dataclass
class Batch:
    images: torch.Tensor  # (B, 1, H, Wmax) float32, ink ~1, zero padding = paper
    widths: torch.Tensor  # (B,) long: each image's width before padding
    targets: torch.Tensor  # (B, Lmax) long: class indices, padded with the blank (0)
    target_lengths: torch.Tensor  # (B,) long
    texts: list[str]

    def to(self, device: torch.device | str) -> Batch:
        nb = torch.device(device).type == "cuda"
        return Batch(self.images.to(device, non_blocking=nb), self.widths.to(device, non_blocking=nb),
                     self.targets.to(device, non_blocking=nb),
                     self.target_lengths.to(device, non_blocking=nb), self.texts)

    def __len__(self) -> int:
        return len(self.texts)


def collate(batch: list[tuple[torch.Tensor, str]], charset: Charset, pad_width_to: int = 1) -> Batch:
    """Zero-pad images to the widest, rounded up to a multiple of ``pad_width_to``, and targets to the
    longest.

    >>> b = collate([(torch.ones(1, 8, 10), "ab"), (torch.ones(1, 8, 14), "c")], Charset())
    >>> tuple(b.images.shape), b.widths.tolist(), b.targets.tolist(), b.target_lengths.tolist()
    ((2, 1, 8, 14), [10, 14], [[54, 55], [56, 0]], [2, 1])
    >>> tuple(collate([(torch.ones(1, 8, 10), "ab")], Charset(), pad_width_to=16).images.shape)
    (1, 1, 8, 16)
    """
    if not batch:
        raise ValueError("collate: empty batch")
    heights = {img.shape[-2] for img, _ in batch}
    if len(heights) != 1:
        raise ValueError(f"collate: images of different heights {sorted(heights)}; the stem should "
                         "scale every line to one height")
    images, widths = pad_images([img for img, _ in batch], pad_width_to)
    encoded = [charset.encode(text, normalise=False) for _, text in batch]
    targets = torch.zeros(len(batch), max(1, max(len(e) for e in encoded)), dtype=torch.long)
    for j, e in enumerate(encoded):
        targets[j, : len(e)] = torch.tensor(e, dtype=torch.long)
    return Batch(images, widths, targets,
                 torch.tensor([len(e) for e in encoded], dtype=torch.long), [t for _, t in batch])


class Collate:
    """A picklable ``collate_fn`` bound to a charset (DataLoader workers need to pickle it)."""

    def __init__(self, charset: Charset, pad_width_to: int = 1) -> None:
        self.charset, self.pad_width_to = charset, pad_width_to

    def __call__(self, batch: list[tuple[torch.Tensor, str]]) -> Batch:
        return collate(batch, self.charset, self.pad_width_to)


def _split_key(key: Key) -> tuple[int, int]:
    return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))


class StoreLines(Dataset):
    """The lines of one split across one or more line stores, through the stem.

    With ``augment`` the stem's random distortions are drawn from ``rng([seed, epoch, index])``.
    """

    def __init__(self, stores: Sequence[LineStore], split: str, stem: LineStem, *, augment: bool = False,
                 seed: int = 0, limit: int | None = None) -> None:
        self.stores = list(stores)
        self.stem, self.augment, self.seed = stem, augment, seed
        self.items: list[tuple[int, int]] = []
        for s, store in enumerate(self.stores):
            if split in store.splits:
                self.items += [(s, int(i)) for i in store.indices(split)]
        if limit is not None:
            self.items = self.items[:limit]
        self._lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)

    def text(self, i: int) -> str:
        s, j = self.items[i]
        return self.stores[s].texts[j]

    @property
    def texts(self) -> list[str]:
        return [self.text(i) for i in range(len(self))]

    def raw(self, i: int) -> tuple[np.ndarray, str]:
        s, j = self.items[i]
        return self.stores[s][j]

    def lengths(self, epoch: int = 0) -> np.ndarray:
        """Widths after the stem: what the batch padding depends on. A stem that scales lines by their
        core (``stem.core``) gives widths the stored ones do not predict (a quarter of each batch was
        padding), so there each line's width is measured once per set (:meth:`LineStem.output_width`,
        unaugmented, ~1 ms a line); otherwise the stored width scaled to the stem's height serves."""
        if self._lengths is None:
            if self.stem.config.core > 0:
                widths = [self.stem.output_width(self.stores[s].image(j)) for s, j in self.items]
            else:
                h = self.stem.config.height
                widths = [self.stores[s].widths[j] * h / max(1, self.stores[s].heights[j])
                          for s, j in self.items]
            self._lengths = np.array(widths, dtype=np.float64)
        return self._lengths

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, str]:
        epoch, i = _split_key(key)
        image, text = self.raw(i)
        rng = np.random.default_rng([self.seed, epoch, i]) if self.augment else None
        return self.stem(image, rng=rng, augment=self.augment), text


class RenderedLines(Dataset):
    """Lines rendered on demand: line ``i`` of epoch ``e`` depends only on (seed, e, i).

    ``sample_text(rng) -> str`` and ``render(text, rng) -> (H, W) uint8`` come from the synthetic data
    module; the text is drawn from its own generator so the sampler can know every line's length
    (for width buckets) without rendering it. With ``vary_by_epoch`` each epoch sees new lines.
    """

    def __init__(self, n: int, sample_text: Callable[[np.random.Generator], str],
                 render: Callable[[str, np.random.Generator], np.ndarray], stem: LineStem, *,
                 seed: int = 0, augment: bool = False, vary_by_epoch: bool = True) -> None:
        self.n, self.sample_text, self.render, self.stem = n, sample_text, render, stem
        self.seed, self.augment, self.vary_by_epoch = seed, augment, vary_by_epoch

    def __len__(self) -> int:
        return self.n

    def _epoch(self, epoch: int) -> int:
        return epoch if self.vary_by_epoch else 0

    def text(self, i: int, epoch: int = 0) -> str:
        return self.sample_text(np.random.default_rng([self.seed, self._epoch(epoch), i, 0]))

    def lengths(self, epoch: int = 0) -> np.ndarray:
        return np.array([len(self.text(i, epoch)) for i in range(self.n)], dtype=np.float64)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, str]:
        epoch, i = _split_key(key)
        text = self.text(i, epoch)
        image = self.render(text, np.random.default_rng([self.seed, self._epoch(epoch), i, 1]))
        rng = np.random.default_rng([self.seed, epoch, i, 2]) if self.augment else None
        return self.stem(image, rng=rng, augment=self.augment), text


class LabelledLines(Dataset):
    """A labelled set of real lines (``data.real_val``) through the stem, never augmented.

    Rows are ``(image path, truth, name)`` (:func:`textrec.evaluate.labelled_rows`). Every image is
    read once here, so an unreadable one or a text the charset cannot write fails before training;
    ``hash`` is :func:`textrec.evaluate.eval_set_hash` of the set, the same hash the evaluate step and
    the promotion gate compute. Images are read again per item, so memory stays flat.
    """

    def __init__(self, rows: Sequence[tuple[Path, str, str]], stem: LineStem, charset: Charset, *,
                 source: str = "") -> None:
        from textrec.evaluate import eval_set_hash, read_rows

        self.paths = [Path(r[0]) for r in rows]
        self.names = [r[2] for r in rows]
        self.texts = [charset.normalise(r[1]) for r in rows]
        self.stem, self.source = stem, source
        widths: list[int] = []

        def read() -> Iterator[Any]:
            for sample in read_rows(list(rows), source or "labelled lines"):
                widths.append(stem.output_width(sample[0]))
                yield sample

        self.hash = eval_set_hash(read())
        self.widths = np.array(widths, dtype=np.float64)
        bad = [(n, t, charset.unknown(t)) for n, t in zip(self.names, self.texts, strict=True) if charset.unknown(t)]
        if bad:
            chars = "".join(sorted({c for _, _, u in bad for c in u}))
            name, text, _ = bad[0]
            raise ValueError(f"{source}: {len(bad)} of {len(rows)} lines hold characters the model cannot write "
                             f"({chars!r}), e.g. {name}: {text!r}; the charset is {charset.chars!r}. Fix or "
                             "drop those lines")

    def __len__(self) -> int:
        return len(self.paths)

    def lengths(self, epoch: int = 0) -> np.ndarray:
        """Each line's width after the stem (:meth:`LineStem.output_width`, measured as the set is read):
        what batch padding follows. Real lines' margins and, with ``stem.core``, their writing size make
        the stored width a poor guide to it."""
        return self.widths

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, str]:
        from textrec.recognizer import read_image

        _, i = _split_key(key)
        return self.stem(read_image(self.paths[i])), self.texts[i]


def bucket_batches(lengths: np.ndarray, batch_size: int, *, rng: np.random.Generator | None,
                   bucket_batches: int = 32) -> list[list[int]]:
    """Batches of indices with similar lengths; shuffled when ``rng`` is given, in width order if not.

    >>> bucket_batches(np.array([5, 1, 4, 2, 3]), 2, rng=None)
    [[1, 3], [4, 2], [0]]
    """
    n = len(lengths)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    chunk = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[k:k + batch_size].tolist() for k in range(0, len(part), batch_size)]
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


class BucketBatchSampler(Sampler[list[tuple[int, int]]]):
    """Width-bucketed, shuffled batches of (epoch, index) keys; this rank's share of them.

    Every rank computes the same batch list from (seed, epoch) and takes every ``world_size``-th
    batch, so all ranks run the same number of steps (the list is padded by wrapping around).
    ``skip`` drops the first batches of this rank's share: that is how a resumed run continues
    mid-epoch on exactly the batches it had not yet seen.
    """

    def __init__(self, lengths: np.ndarray | Callable[[int], np.ndarray], batch_size: int, *,
                 seed: int = 0, bucket_batches: int = 32, rank: int = 0, world_size: int = 1) -> None:
        self._lengths = lengths
        self.batch_size, self.seed, self.bucket = batch_size, seed, bucket_batches
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def lengths(self, epoch: int) -> np.ndarray:
        return self._lengths(epoch) if callable(self._lengths) else self._lengths

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def rank_batches(self, epoch: int) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = bucket_batches(self.lengths(epoch), self.batch_size, rng=rng, bucket_batches=self.bucket)
        per_rank = math.ceil(len(batches) / self.world_size)
        padded = [batches[k % len(batches)] for k in range(per_rank * self.world_size)]
        mine = padded[self.rank::self.world_size]
        self._cache = (epoch, mine)
        return mine

    def __len__(self) -> int:
        return max(0, len(self.rank_batches(self.epoch)) - self.skip)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.rank_batches(self.epoch)[self.skip:]:
            yield [(self.epoch, i) for i in batch]


def eval_batches(lengths: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Width-sorted batches for evaluation, this rank's share (every ``world_size``-th batch)."""
    return bucket_batches(lengths, batch_size, rng=None, bucket_batches=max(1, len(lengths)))[rank::world_size]


# ---------------------------------------------------------------------------------------------------
# Putting a run's data together


class LineSet(Protocol):
    """A dataset of (stem output, text) pairs that also knows each line's width for an epoch."""

    def __len__(self) -> int: ...
    def __getitem__(self, key: Any) -> tuple[torch.Tensor, str]: ...
    def lengths(self, epoch: int) -> np.ndarray: ...


@dataclass
class TrainData:
    """The training set (with ``lengths(epoch)`` for the sampler), named evaluation sets, LM texts."""

    train: LineSet
    evals: dict[str, LineSet]
    lm_texts: Callable[[], list[str]]
    describe: str = ""


class _RenderImage:
    """``render(text, rng) -> image`` from a LineRenderer (which also returns the font's name)."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, text: str, rng: np.random.Generator) -> np.ndarray:
        return self.renderer.render(text, rng)[0]


def _cache_dir(cfg: Any, out_dir: Path) -> Path:
    """``data.cache_dir``, else ``$TEXTREC_CACHE/pools`` (default ``~/.cache/textrec/pools``): outside the
    run folder, so a run's files stay small to upload, and runs of the same data share one pool."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir)
    return Path(os.environ.get("TEXTREC_CACHE", Path.home() / ".cache" / "textrec")) / "pools"


def _once_per_node(env: Any, make: Callable[[], Any]) -> None:
    """Run ``make`` on each node's first rank while the others wait (files are written atomically)."""
    from textrec.training import distributed

    if env.local_rank == 0:
        make()
    distributed.barrier()


def pool_path(cfg: Any, out_dir: Path) -> Path:
    """Where the synthetic pool for this data config lives; the name hashes what decides its content."""
    from textrec.data.fonts import discover_fonts
    from textrec.data.synth import SynthConfig

    d = cfg.data
    fonts = [f.name for f in discover_fonts([Path(p) for p in d.fonts_dirs])]  # installing a font renews it
    key = json.dumps({"n": _pool_size(d), "seed": d.seed, "fonts": fonts, "corpus": corpus_key(d.corpus),
                      "synth": SynthConfig.from_mapping(d.synth).recipe()}, sort_keys=True, default=str)
    return _cache_dir(cfg, out_dir) / f"pool-{hashlib.sha256(key.encode()).hexdigest()[:16]}.h5"


def _pool_size(d: Any) -> int:
    # synthesize() gives 90 % of its lines to train and 5 % each to val and test
    return max(d.train_lines * 10 // 9, 20 * max(d.val_lines, d.test_lines), 3)


def _render_pool(cfg: Any, path: Path, log: Callable[[str], None]) -> None:
    from textrec.data.synth import SynthConfig, synthesize

    d = cfg.data
    _render_once(path, "pool", f"{_pool_size(d)} synthetic lines", log, lambda: synthesize(
        _pool_size(d), path, seed=d.seed, fonts_dirs=[Path(p) for p in d.fonts_dirs],
        workers=d.synth_workers or None, corpus=d.corpus or None, config=SynthConfig.from_mapping(d.synth),
        progress=cfg.loop.progress))


def _render_once(path: Path, what: str, holding: str, log: Callable[[str], None], render: Callable[[], Any]) -> None:
    """``render()`` writes the synthetic ``what`` at ``path`` unless it is there. A finished one is used
    without a lock (its folder may be read-only); otherwise a lock file beside it lets one process render
    while another wanting the same one waits, saying so, and then uses it."""
    if not path.is_file():
        lock = FileLock(path.with_name(f".{path.name}.lock"))
        try:
            if not lock.acquire(blocking=False):
                log(f"waiting for another process to finish rendering the synthetic {what} {path}")
                lock.acquire()
            if not path.is_file():
                log(f"rendering a {what} of {holding} into {path}")
                render()
                return
        finally:
            lock.close()
    log(f"using the synthetic {what} {path}")


def _local_stores(uris: Sequence[str], cache: Path) -> list[Path]:
    """Local paths for line stores; s3:// URIs are downloaded into the cache once."""
    from textrec import storage

    out = []
    for uri in uris:
        if storage.is_s3(uri):
            dest = cache / "stores" / hashlib.sha256(uri.encode()).hexdigest()[:12] / Path(uri).name
            if not dest.is_file():
                storage.download(uri, dest)
            out.append(dest)
        else:
            if not Path(uri).is_file():
                raise FileNotFoundError(f"{uri}: no such line store (data.stores)")
            out.append(Path(uri))
    return out


def _present(uris: Sequence[str]) -> list[str]:
    from textrec import storage

    return [u for u in uris if storage.exists(u)]


def build_data(cfg: Any, out_dir: Path, charset: Charset, stem: LineStem, env: Any,
               log: Callable[[str], None] = print) -> TrainData:
    """The datasets of a run, for ``cfg.data.mode`` (see :class:`textrec.training.config.DataConfig`).

    Optional stores that exist add their training lines to the training set and their val/test
    splits as extra evaluation sets named ``<file stem>_<split>`` (``iam_test``, say).
    ``data.real_val`` adds the evaluation set ``real_val`` (labelled real lines, in every mode).
    ``data.kind=pages``: whole pages instead (:func:`build_page_data`).
    """
    if cfg.data.kind == "pages":
        return build_page_data(cfg, out_dir, stem, env, log)
    d = cfg.data
    cache = _cache_dir(cfg, out_dir)
    real_val = _real_val(cfg, cache, charset, stem, env) if d.real_val else None  # a bad one fails in seconds
    optional = _present(d.optional_stores)
    for uri in sorted(set(d.optional_stores) - set(optional)):
        log(f"optional line store {uri} not found; training without it")
    uris = (list(d.stores) if d.mode == "store" else []) + optional
    if d.mode == "pool":
        _once_per_node(env, lambda: _render_pool(cfg, pool_path(cfg, out_dir), log))
    _once_per_node(env, lambda: _local_stores(uris, cache))
    stores = [LineStore(p) for p in _local_stores(uris, cache)]
    main, extra = stores[: len(stores) - len(optional)], stores[len(stores) - len(optional):]
    if d.mode == "online":
        data = _online_data(cfg, stem)
        if extra:
            data.train = _Concat([data.train, _weighted(StoreLines(extra, "train", stem, augment=True, seed=d.seed),
                                                        d.optional_weight, d.seed)])
    else:
        if d.mode == "pool":
            main = [LineStore(pool_path(cfg, out_dir))]
        limits = {"val": d.val_lines, "test": d.test_lines, "test_unseen_font": d.unseen_font_lines}
        train: Any = StoreLines(main, "train", stem, augment=True, seed=d.seed,
                                limit=d.train_lines if d.mode == "pool" else None)
        if extra:
            train = _Concat([train, _weighted(StoreLines(extra, "train", stem, augment=True, seed=d.seed),
                                              d.optional_weight, d.seed)])
        evals = {s: StoreLines(main, s, stem, limit=n or None) for s, n in limits.items()}
        data = TrainData(train, {k: v for k, v in evals.items() if len(v)}, lambda: _texts(train),
                         f"{len(train)} training lines from {', '.join(str(s.path) for s in main + extra)}")
    for uri, store in zip(optional, extra, strict=True):
        for split in ("val", "test"):
            ds = StoreLines([store], split, stem)
            if len(ds):
                data.evals[f"{Path(uri).stem}_{split}"] = ds
    if real_val is not None:
        data.evals["real_val"] = real_val
    if cfg.decode.lm_corpus:
        data.lm_texts = _with_corpus(data.lm_texts, cfg.decode.lm_corpus, charset)
    if len(data.train) == 0:
        raise ValueError(f"no training lines (data.mode={d.mode}, stores={uris})")
    if "val" not in data.evals:
        raise ValueError(f"no validation lines (data.mode={d.mode}, stores={uris}); a 'val' split is needed")
    return data


def _real_val(cfg: Any, cache: Path, charset: Charset, stem: LineStem, env: Any) -> LabelledLines:
    """``data.real_val`` as an evaluation set; an s3:// set is fetched into the cache once per node."""
    from textrec.evaluate import labelled_rows

    source = cfg.data.real_val
    where = f"data.real_val={source}"
    try:
        _once_per_node(env, lambda: labelled_rows(source, cache_dir=cache))
        rows = labelled_rows(source, cache_dir=cache, download=False)
        return LabelledLines(rows, stem, charset, source=where)
    except (OSError, ValueError) as e:
        raise ValueError(str(e) if str(e).startswith(where) else f"{where}: {e}") from e


def _with_corpus(texts: Callable[[], list[str]], corpus: str, charset: Charset) -> Callable[[], list[str]]:
    """``texts`` followed by the running text of ``decode.lm_corpus``, read now: a missing or empty
    corpus fails before any training, not after it."""
    from textrec.data.text import corpus_lines

    try:
        lines = corpus_lines(corpus, charset=charset)
    except (OSError, ValueError) as e:
        raise ValueError(f"decode.lm_corpus={corpus}: {e}") from e
    return lambda: texts() + lines


def _texts(ds: Any) -> list[str]:
    if isinstance(ds, _Weighted):
        return _texts(ds.part)
    return [t for part in ds.parts for t in _texts(part)] if isinstance(ds, _Concat) else ds.texts


class _Concat(Dataset):
    """Datasets end to end, keeping (epoch, index) keys and ``lengths``."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def lengths(self, epoch: int = 0) -> np.ndarray:
        return np.concatenate([p.lengths(epoch) for p in self.parts])

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, str]:
        epoch, i = _split_key(key)
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][(epoch, i - int(self.offsets[k]))]


def _weighted(part: Any, weight: float, seed: int) -> Any:
    return part if weight == 1.0 or len(part) == 0 else _Weighted(part, weight, seed)


class _Weighted(Dataset):
    """A dataset whose items count ``weight`` times per epoch: ``round(n * weight)`` keys per epoch,
    read in order from an endless run of permutations of the n items (one permutation per pass, drawn
    from the seed and the pass's number). A weight below 1 thus sees the next part of the run each
    epoch, every item once before any twice; a weight above 1 sees every item about ``weight`` times
    per epoch, each pass augmented anew (the pass number is the augmentation's epoch)."""

    def __init__(self, part: Any, weight: float, seed: int) -> None:
        self.part, self.weight, self.seed = part, weight, seed
        self.n = max(1, round(len(part) * weight))
        self._plan: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """For each key of ``epoch``: its pass and the item it reads."""
        if self._plan is None or self._plan[0] != epoch:
            m = len(self.part)
            pos = epoch * self.n + np.arange(self.n)
            passes, within = pos // m, pos % m
            perms = {int(c): np.random.default_rng([self.seed, 7_919, int(c)]).permutation(m)
                     for c in np.unique(passes)}
            items = np.array([perms[int(c)][w] for c, w in zip(passes, within, strict=True)], dtype=np.int64)
            self._plan = (epoch, passes, items)
        return self._plan[1], self._plan[2]

    def lengths(self, epoch: int = 0) -> np.ndarray:
        return self.part.lengths(epoch)[self.plan(epoch)[1]]

    @property
    def texts(self) -> list[str]:
        return list(self.part.texts)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, str]:
        epoch, i = _split_key(key)
        passes, items = self.plan(epoch)
        return self.part[(int(passes[i]), int(items[i]))]


def _online_data(cfg: Any, stem: LineStem) -> TrainData:
    """Training lines rendered afresh each epoch; fixed rendered val/test sets (held-out fonts for
    ``test_unseen_font``)."""
    from textrec.data.fonts import discover_fonts, split_fonts
    from textrec.data.pen import split_pen_faces
    from textrec.data.synth import LineRenderer, SynthConfig
    from textrec.data.text import open_text_source

    d = cfg.data
    synth = SynthConfig.from_mapping(d.synth)
    train_fonts, held_out = split_fonts(discover_fonts([Path(p) for p in d.fonts_dirs]))
    train_faces, held_out_faces = split_pen_faces()
    source = open_text_source(d.corpus or None, iam_spacing_p=synth.iam_spacing_p)
    seen = _RenderImage(LineRenderer(synth, train_fonts, train_faces))
    train = RenderedLines(d.train_lines, source.sample, seen, stem, seed=d.seed, augment=True)
    evals: dict[str, LineSet] = {}
    for k, (split, n) in enumerate([("val", d.val_lines), ("test", d.test_lines),
                                    ("test_unseen_font", d.unseen_font_lines)], start=1):
        render = _RenderImage(LineRenderer(synth, held_out, held_out_faces)) if split == "test_unseen_font" \
            else seen
        if n > 0 and (held_out or split != "test_unseen_font"):
            evals[split] = RenderedLines(n, source.sample, render, stem, seed=d.seed + 1_000_003 * k,
                                         vary_by_epoch=False)

    def lm_texts() -> list[str]:
        return [train.text(i, 0) for i in range(len(train))]

    return TrainData(train, evals, lm_texts, f"online rendering, {len(train_fonts)} training fonts")


# ---------------------------------------------------------------------------------------------------
# Pages, for paragraph models (data.kind = pages)


def charset_and_stem(cfg: Any) -> tuple[Charset, LineStem]:
    """What the data gives a run's model: the line charset and stem, or, for ``data.kind=pages``, the
    page charset (with its line break) and the page stem. A model of the other task fails here, before
    any data is prepared."""
    from textrec.charset import DEFAULT_CHARSET, PAGE_CHARSET
    from textrec.models.paragraph import PageStem
    from textrec.models.registry import list_models, model_task

    pages = cfg.data.kind == "pages"
    want = "page" if pages else "line"
    if model_task(cfg.model.name) != want:
        raise ValueError(f"model {cfg.model.name!r} reads {model_task(cfg.model.name)}s but data.kind is "
                         f"{cfg.data.kind!r}; models that read {want}s: {', '.join(list_models(want))}")
    return (PAGE_CHARSET, PageStem(cfg.stem)) if pages else (DEFAULT_CHARSET, LineStem(cfg.stem))


class StorePages(Dataset):
    """The pages of one split of page stores, through the page stem; a page's text is its lines joined
    by the line break. With ``augment`` the stem's distortions draw from ``rng([seed, epoch, index])``."""

    def __init__(self, stores: Sequence[Any], split: str, stem: LineStem, *, augment: bool = False,
                 seed: int = 0, limit: int | None = None) -> None:
        self.stores = list(stores)
        self.stem, self.augment, self.seed = stem, augment, seed
        self.items = [(s, int(i)) for s, store in enumerate(self.stores) if split in store.splits
                      for i in store.indices(split)][:limit]

    def __len__(self) -> int:
        return len(self.items)

    def text(self, i: int) -> str:
        s, j = self.items[i]
        return self.stores[s].text(j)

    @property
    def texts(self) -> list[str]:
        return [self.text(i) for i in range(len(self))]

    def lengths(self, epoch: int = 0) -> np.ndarray:
        """Widths after fitting into the stem's height and width budget (before the ink crop)."""
        width_of = self.stem.width_of  # type: ignore[attr-defined]  # a PageStem
        return np.array([width_of(int(self.stores[s].heights[j]), int(self.stores[s].widths[j]))
                         for s, j in self.items], dtype=np.float64)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, str]:
        epoch, i = _split_key(key)
        s, j = self.items[i]
        rng = np.random.default_rng([self.seed, epoch, i]) if self.augment else None
        return self.stem(self.stores[s].image(j), rng=rng, augment=self.augment), self.stores[s].text(j)


def page_pool_path(cfg: Any, out_dir: Path) -> Path:
    """Where the synthetic page pool for this data config lives; the name hashes what decides its content."""
    from dataclasses import asdict

    from textrec.data.fonts import discover_fonts
    from textrec.data.pages import PageConfig
    from textrec.data.synth import SynthConfig

    d = cfg.data
    fonts = [f.name for f in discover_fonts([Path(p) for p in d.fonts_dirs])]
    key = json.dumps({"kind": "pages", "n": d.pages, "seed": d.seed, "fonts": fonts, "corpus": corpus_key(d.corpus),
                      "synth": SynthConfig.from_mapping(d.synth).recipe(),
                      "page": asdict(PageConfig.from_mapping(d.page))}, sort_keys=True, default=str)
    return _cache_dir(cfg, out_dir) / f"pages-{hashlib.sha256(key.encode()).hexdigest()[:16]}.h5"


def _render_page_pool(cfg: Any, path: Path, log: Callable[[str], None]) -> None:
    from textrec.data.pages import PageConfig, synthesize_pages
    from textrec.data.synth import SynthConfig

    d = cfg.data
    _render_once(path, "page pool", f"{d.pages} synthetic pages", log, lambda: synthesize_pages(
        d.pages, path, seed=d.seed, fonts_dirs=[Path(p) for p in d.fonts_dirs], workers=d.synth_workers or None,
        corpus=d.corpus or None, config=SynthConfig.from_mapping(d.synth), page_config=PageConfig.from_mapping(d.page),
        progress=cfg.loop.progress))


def build_page_data(cfg: Any, out_dir: Path, stem: LineStem, env: Any,
                    log: Callable[[str], None] = print) -> TrainData:
    """Page datasets: the train split (augmented), and val, test and test_unseen_font as evaluation
    sets (capped by ``data.val_lines``, ``test_lines``, ``unseen_font_lines``), from the page stores
    in ``data.stores`` or, with ``data.mode=pool``, from a rendered pool of ``data.pages`` pages."""
    from textrec.data.pages import PageStore

    d = cfg.data
    if d.mode == "pool":
        path = page_pool_path(cfg, out_dir)
        _once_per_node(env, lambda: _render_page_pool(cfg, path, log))
        paths = [path]
    else:
        cache = _cache_dir(cfg, out_dir)
        _once_per_node(env, lambda: _local_stores(d.stores, cache))
        paths = _local_stores(d.stores, cache)
    stores = [PageStore(p) for p in paths]
    train = StorePages(stores, "train", stem, augment=True, seed=d.seed)
    limits = {"val": d.val_lines, "test": d.test_lines, "test_unseen_font": d.unseen_font_lines}
    evals = {s: StorePages(stores, s, stem, limit=n or None) for s, n in limits.items()}
    data = TrainData(train, {k: v for k, v in evals.items() if len(v)}, lambda: train.texts,
                     f"{len(train)} training pages from {', '.join(str(p) for p in paths)}")
    where = f"data.kind=pages, data.mode={d.mode}, stores={[str(p) for p in paths]}"
    if len(train) == 0:
        raise ValueError(f"no training pages ({where})")
    if "val" not in data.evals:
        raise ValueError(f"no validation pages ({where}); a 'val' split is needed")
    if cfg.decode.lm_corpus:
        from textrec.charset import PAGE_CHARSET

        data.lm_texts = _with_corpus(data.lm_texts, cfg.decode.lm_corpus, PAGE_CHARSET)
    return data
