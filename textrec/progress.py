"""When progress bars draw, and how often: one policy for every command.

A bar redraws in place on a terminal. Into a pipe, a log file or a pod's log each redraw becomes a line of
its own, so a download of a dozen files prints dozens of lines. Off a terminal, MLflow's artifact bars are
turned off and textrec's own bars redraw at most every ``LOG_INTERVAL_S`` seconds: still a heartbeat in a
log, not a flood.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

LOG_INTERVAL_S = 10
MLFLOW_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def quiet_when_piped(stream: TextIO | None = None, environ: os._Environ | dict | None = None) -> bool:
    """Turn bars down when ``stream`` (default stderr) is not a terminal; returns whether it was not.

    Settings the user has made in the environment win: only unset variables are filled in.
    """
    stream = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return False
    env.setdefault(MLFLOW_BARS, "false")
    env.setdefault("TQDM_MININTERVAL", str(LOG_INTERVAL_S))
    return True
