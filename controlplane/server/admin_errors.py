"""The error ``pilotfish serve`` reports when the HTTP admin address cannot be used.

Apart from :mod:`controlplane.server.http_admin`, so that the command line can
catch it without importing the HTTP admin: a server started with
``--admin-address off`` never imports it nor prometheus-client.
"""

from __future__ import annotations

from controlplane.server.grpc_server import AddressInUseError, ServerStartError


class AdminStartError(ServerStartError):
    """The HTTP admin address cannot be used."""

    def __init__(self, cause: ServerStartError) -> None:
        super().__init__(str(cause))
        self.in_use = isinstance(cause, AddressInUseError)
