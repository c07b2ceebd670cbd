"""Where a C-MOVE answered with a status alone "goes": a listener of our own on loopback.

pynetdicom lets a C-MOVE handler answer with a status only after it has named a destination
and pynetdicom has associated with it (naming none is answered A801 Move Destination
Unknown). A request refused by the AE policy, or whose identifier is invalid, must neither
reach the real destination nor, when refused, let the caller tell known destinations from
unknown ones by A801. Such answers name this listener instead: it accepts any association
for Verification, pynetdicom releases it at once, and nothing is ever sent to it.
"""

from __future__ import annotations

import logging

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from app.dimse.contexts import VERIFICATION
from app.dimse.nodelay import set_no_delay

# Loopback: nobody else can reach it, and it needs no setting.
HOST = "127.0.0.1"

log = logging.getLogger(__name__)


class AnswerOnly:
    def __init__(self, ae_title: str) -> None:
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(VERIFICATION)
        # Only our own C-MOVE handler calls it (as our AE title), briefly: another local
        # process cannot hold it full for long, nor use it for anything.
        self.ae.require_calling_aet = [ae_title]
        self.ae.maximum_associations = 50
        self.ae.acse_timeout = 5
        self.ae.network_timeout = 5
        self._server: ThreadedAssociationServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Host and port to name as the destination; start() first."""
        if self._server is None:
            raise RuntimeError("the answer-only listener is not running")
        return HOST, int(self._server.server_address[1])

    def start(self) -> None:
        self._server = self.ae.start_server(
            (HOST, 0), block=False, evt_handlers=[(evt.EVT_CONN_OPEN, set_no_delay)]
        )
        log.debug("answer-only C-MOVE listener on %s:%d", *self.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
