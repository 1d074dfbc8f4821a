"""Print the pinned requirements of an image, taken from pyproject.toml (where pins live).

    python docker/requirements.py component|serving pyproject.toml > requirements.txt

The images install these first and the project itself after (``pip install --no-deps``), so a
change to the sources rebuilds only the last, small layer. ``component`` is every runtime
dependency plus the ``server`` extra (the MLflow tracking server runs from that image). ``serving``
drops what only pipelines, tracking and data synthesis use, so the TorchServe image stays lean: the
handler imports only the recognition side of textrec.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Distributions the serving image never imports (pipelines, tracking, synthetic data).
SERVING_EXCLUDES = {"kfp", "kfp-kubernetes", "mlflow", "kubernetes", "wordfreq"}
SERVING_EXCLUDE_PREFIXES = ("fontpkg-",)


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower()


def requirements(kind: str, pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    deps: list[str] = list(project["dependencies"])
    if kind == "component":
        return deps + list(project.get("optional-dependencies", {}).get("server", []))
    if kind == "serving":
        return [d for d in deps
                if _name(d) not in SERVING_EXCLUDES and not _name(d).startswith(SERVING_EXCLUDE_PREFIXES)]
    raise ValueError(f"unknown image kind {kind!r}: expected 'component' or 'serving'")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: requirements.py component|serving PYPROJECT", file=sys.stderr)
        return 2
    try:
        print("\n".join(requirements(argv[1], Path(argv[2]))))
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"requirements.py: {argv[2]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
