"""tsd-study: a reproduction of TSD (Song, Liu, Wang, CVPR 2020) as an mmdetection 3.x plugin plus study tooling."""

__version__ = "0.1.0"
