"""Loader fixture: raises at import time."""


def _initialise():
    raise RuntimeError("gm-kaboom-at-import")


_initialise()
application = None
