"""Files that must never tear: the one atomic writer of the project.

Every file a reader may open while it is being replaced (a model, a checkpoint, a store, a report,
a server's state file) is written to a temporary file beside its target and renamed over it only once
it is complete, so readers see the old file or the new one and a crash leaves the old one in place::

    with atomic_open("runs/cpu/model.pt", "wb") as f:
        torch.save(state, f)
    atomic_write("runs/cpu/metrics.json", json.dumps(metrics))
    with atomic_path("stores/synth.h5") as tmp:       # for writers that want a file name (h5py, PIL)
        write_store(tmp)

One permission policy for all of them: a new file reads like any other new file (0666 less the
umask), not like mkstemp's private 0600, so a server or pod running as another user can read it.
On any failure the temporary file is removed and the target is left as it was.

Where several processes would make the same file, :class:`FileLock` lets the first make it while the
others wait and then find it made.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: str | os.PathLike, *, suffix: str = ".tmp") -> Path:
    """A new empty temporary file in ``path``'s folder (created if missing), with the usual permissions.

    For writers that span several calls (a store written line by line): finish with :func:`publish`,
    or unlink the temporary file to abandon it. Everything else uses :func:`atomic_path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Flush ``tmp`` to disk and rename it over ``path`` (the step that makes a write visible)."""
    with open(tmp, "rb") as f:  # the data is on disk before the name points at it
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return Path(path)


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over ``path`` when the block ends without error.

    The block writes the file by name (``h5py.File(tmp, "w")``, ``image.save(tmp)``, a download).
    """
    tmp = temp_beside(path, suffix=suffix)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """An open temporary file beside ``path`` (``mode`` "w" or "wb"), renamed over ``path`` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
        yield f
        f.flush()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON (keys sorted; dates, paths and the like as strings), atomically."""
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as YAML in its own key order, atomically."""
    import yaml

    return atomic_write(path, yaml.safe_dump(data, sort_keys=False))


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dest`` so that ``dest`` is never seen half-copied."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


class FileLock:
    """An exclusive lock between processes on one machine (``flock`` on ``path``, created if missing).

    ``with FileLock(p):`` holds it for a block; ``acquire`` and ``release`` where the holder gives it up
    elsewhere (``release`` does nothing when it is not held). The lock file stays; the kernel drops the
    lock when its holder dies, so a killed process never leaves it taken."""

    def __init__(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.held = False
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock, waiting for it unless ``blocking`` is false; whether it is now held."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False

    def close(self) -> None:
        self.release()
        os.close(self.fd)

    def __enter__(self) -> FileLock:
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
