"""The image every component runs in: ``TEXTREC_IMAGE`` at compile time, else the release's image.

The image already holds textrec and kfp, so components install nothing when their pod starts
(``install_kfp_package=False``).
"""

from textrec import component_image

COMPONENT_IMAGE = component_image()
