"""The image every component runs in: ``TEXTREC_IMAGE`` at compile time, else the release's image.

The image already holds textrec and kfp, so components install nothing when their pod starts
(``install_kfp_package=False``).
"""

import os

from textrec import __version__

COMPONENT_IMAGE = os.environ.get("TEXTREC_IMAGE") or f"ghcr.io/textrec/textrec-component:{__version__}"
