"""Why an agent refuses configuration.

:class:`ConfigRejected` is raised while a forwarding table is built from xDS
resources that cannot be applied. Its text becomes the NACK's
``error_detail``, so it names the resource and the field, and the previous
table stays in force.
"""

from __future__ import annotations


class ConfigRejected(Exception):
    """A resource the agent cannot apply: ``resource`` (kind and name), ``field``, why."""

    def __init__(self, resource: str, field: str, message: str) -> None:
        self.resource = resource
        self.field = field
        self.message = message
        super().__init__(f"{resource}: {field}: {message}")
