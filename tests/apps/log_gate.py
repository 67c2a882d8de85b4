"""A logging handler that stops the thread logging one chosen record until the test lets
it go, the way a slow or stuck log handler (a full pipe, a remote syslog) would.

``GateHandler(match, folder)``: the first record whose message contains ``match`` makes
the logging thread write ``<folder>/blocked`` and wait (at most 20 s) for
``<folder>/gate`` to exist. Every other record passes at once: ``handle`` is overridden
so no handler lock is taken, and other threads keep logging meanwhile.
"""

import logging
import os
import time


class GateHandler(logging.Handler):
    def __init__(self, match: str, folder: str) -> None:
        super().__init__()
        self.match = match
        self.folder = folder
        self.used = False

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.used and self.match in record.getMessage():
            self.used = True
            open(os.path.join(self.folder, "blocked"), "w").close()
            gate = os.path.join(self.folder, "gate")
            deadline = time.monotonic() + 20
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)  # releases the GIL, as blocking I/O would
        return True

    def emit(self, record: logging.LogRecord) -> None:
        pass
