"""Put the model archive into the model store before TorchServe starts (run by the entrypoint).

    python /opt/textrec/fetch_model.py SOURCE MODEL_STORE NAME

SOURCE is an ``s3://bucket/key.mar`` URI (credentials and endpoint from the standard AWS variables) or
a local path, such as a file on a mounted PVC. The archive lands atomically as MODEL_STORE/NAME.mar and
is checked to be a zip file (what torch-model-archiver writes), so a wrong key fails here, with its
name, and not later inside TorchServe. A container restarted in the same pod finds the archive it
already fetched from the same SOURCE and skips the download.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

from textrec.io import atomic_write
from textrec.storage import StorageError, download


def fetch(source: str, store: Path, name: str) -> tuple[Path, bool]:
    """``(archive path, downloaded)``; ``downloaded`` is False when the same source was fetched before."""
    store.mkdir(parents=True, exist_ok=True)
    dest = store / f"{name}.mar"
    marker = store / f".{name}.source"
    if dest.is_file() and marker.is_file() and marker.read_text() == source:
        return dest, False
    marker.unlink(missing_ok=True)
    download(source, dest)  # lands atomically (textrec.storage)
    if dest.is_dir() or not zipfile.is_zipfile(dest):
        _remove(dest)  # TorchServe must not find it there after a restart
        raise ValueError(f"{source}: not a model archive (expected a .mar zip written by torch-model-archiver)")
    atomic_write(marker, source)
    return dest, True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: fetch_model.py SOURCE MODEL_STORE NAME", file=sys.stderr)
        return 2
    try:
        dest, downloaded = fetch(argv[1], Path(argv[2]), argv[3])
    except (StorageError, OSError, ValueError) as e:
        print(f"fetch_model: {e}", file=sys.stderr)
        return 1
    verb = "fetched" if downloaded else "already fetched"
    print(f"fetch_model: {verb} {argv[1]} -> {dest} ({dest.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
