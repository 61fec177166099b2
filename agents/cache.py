"""Static stability: the last applied configuration, on disk.

After every applied update the agent writes the resources it applied, with
their versions, to ``<cache-dir>/xds-config.json``; at start it reads them
back and applies them before it first connects, so an agent restarted while
the control plane is down proxies traffic at once. The versions go into the
first requests of the stream, so a control plane with the same configuration
has nothing to resend and nothing is applied twice.

The file is replaced atomically (written to a temporary file in the same
directory, flushed to disk, renamed over the old one, and the directory
synced): a crash leaves the old file or the new one, never a torn one. It is
JSON holding each resource as its serialized ``Any`` in base64, and the node
fields that decide what the control plane sends (role, labels, bind
address); a file written for another class of node is not used. A file that
cannot be read or decoded is reported and ignored, never fatal.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from google.protobuf import any_pb2

from controlplane.xds.types import RESOURCE_TYPES, push_rank

log = structlog.get_logger(__name__)

FILE_NAME = "xds-config.json"
FORMAT = "pilotfish-agent-config/1"


@dataclass(frozen=True, slots=True)
class TypeConfig:
    """The applied resources of one type and the versions the server gave them."""

    version: str = ""
    """SotW ``version_info``, or the delta ``system_version_info`` (informational)."""
    resources: Mapping[str, Any] = field(default_factory=dict)
    """Decoded messages by name."""
    resource_versions: Mapping[str, str] = field(default_factory=dict)
    """Delta per-resource versions (empty over SotW)."""


@dataclass(frozen=True, slots=True)
class HeldConfig:
    """Every applied type, by type URL."""

    types: Mapping[str, TypeConfig] = field(default_factory=dict)

    def resources(self) -> dict[str, Mapping[str, Any]]:
        return {url: held.resources for url, held in self.types.items()}


class ConfigCache:
    def __init__(self, directory: Path, node: Mapping[str, Any]) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self._node = dict(node)

    def load(self) -> HeldConfig | None:
        """The configuration saved for this node, or None (missing, unreadable, another node)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("agent_cache_unreadable", path=str(self.path), error=str(exc))
            return None
        try:
            return self._decode(json.loads(text))
        except _Unusable as exc:
            log.warning("agent_cache_ignored", path=str(self.path), reason=str(exc))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("agent_cache_corrupt", path=str(self.path), error=repr(exc))
        return None

    def save(self, config: HeldConfig) -> bool:
        """Replace the saved configuration atomically; False (logged) when it cannot be written."""
        document = {
            "format": FORMAT,
            "node": self._node,
            "types": {
                url: _encode_type(url, held)
                for url, held in sorted(config.types.items(), key=lambda item: push_rank(item[0]))
            },
        }
        data = json.dumps(document, indent=1, sort_keys=False).encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".xds-config.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            _sync_directory(self.directory)
        except OSError as exc:
            log.warning("agent_cache_not_written", path=str(self.path), error=str(exc))
            return False
        return True

    def _decode(self, document: Any) -> HeldConfig:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise _Unusable(f"not a {FORMAT} file")
        if document.get("node") != self._node:
            raise _Unusable("written for another role, labels or bind address")
        types: dict[str, TypeConfig] = {}
        for url, held in dict(document["types"]).items():
            kind = RESOURCE_TYPES.get(url)
            if kind is None:
                raise _Unusable(f"unknown resource type {url}")
            resources: dict[str, Any] = {}
            versions: dict[str, str] = {}
            for entry in held["resources"]:
                body = any_pb2.Any()
                body.ParseFromString(base64.b64decode(entry["any"], validate=True))
                message = kind.decode(body)
                name = kind.name_of(message)
                resources[name] = message
                if entry.get("version"):
                    versions[name] = str(entry["version"])
            types[url] = TypeConfig(str(held.get("version", "")), resources, versions)
        return HeldConfig(types)


class _Unusable(Exception):
    pass


def _encode_type(url: str, held: TypeConfig) -> dict[str, Any]:
    entries = []
    for name, message in sorted(held.resources.items()):
        body = any_pb2.Any()
        body.Pack(message)
        entry = {"name": name, "any": base64.b64encode(body.SerializeToString()).decode()}
        if name in held.resource_versions:
            entry["version"] = held.resource_versions[name]
        entries.append(entry)
    return {"version": held.version, "resources": entries}


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
