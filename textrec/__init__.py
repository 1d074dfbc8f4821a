"""textrec: handwritten text recognition."""

import os

__version__ = "0.1.0"


def component_image() -> str:
    """The image pipeline steps and cluster jobs run in: ``TEXTREC_IMAGE``, else the release's."""
    return os.environ.get("TEXTREC_IMAGE") or f"ghcr.io/textrec/textrec-component:{__version__}"
