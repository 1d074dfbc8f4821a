"""``python -m serving serve|deploy|stop`` (see ``serving.cli``)."""

import sys

from serving.cli import main

sys.exit(main())
