"""Figures for the course, in one consistent style.

* ``core``: the style, attention heatmaps and per-head grids;
* ``diagrams``: the encoder-decoder data flow and the shapes of attention;
* ``explorers``: ipywidgets explorers used in lessons 02-04 and 08;
* ``images``: attention over image patches (lesson 09).

Import everything from ``course_lib.viz``.
"""

from .core import *  # noqa: F403
from .diagrams import *  # noqa: F403
from .explorers import *  # noqa: F403
from .images import *  # noqa: F403
