"""Many lightweight Envoy-like xDS streams in one process, for bench/propagation.py.

A client *worker* is a child process that runs one grpc.aio event loop and
holds a few thousand ADS streams (up to ``per_channel`` streams share one gRPC
channel, so one TCP connection). The coordinator drives it over a
``multiprocessing`` pipe with small dict commands (see :func:`worker_main`).

Each stream behaves like an Envoy sidecar on ADS: it subscribes to CDS and LDS
on the wildcard, follows the clusters' EDS names and the listeners' RDS names,
and ACKs every response. Two implementations of that behaviour:

* ``light`` (default): :class:`SotwLight` and :class:`DeltaLight`. They keep
  per stream only versions, nonces and references to *shared* immutable
  catalogs, and decode a response's resources once per process per distinct
  content (:class:`Memo`, keyed by the response bytes without the nonce).
  Requests are pre-serialized bytes; a SotW EDS ACK is the concatenation of a
  small header and the serialized 3,000-name list, which protobuf parses as
  one message. This is what makes 10,000 streams fit on a 2-core machine.
* ``core``: the project's own sans-IO cores (:class:`SotwClient`,
  :class:`DeltaClient` with ``follow=True``), one per stream, decoding and
  holding every resource per stream. Faithful but heavy (about 60 ms of CPU
  and several MB per stream for a 1,000-service mesh): a cross-check for
  small N.

A stream counts as *ready* once it has received and ACKed CDS, EDS, LDS and
RDS (every followed name answered), and as *applied* once it has received and
ACKed the EDS response carrying the armed target: cluster ``cluster`` whose
endpoint ``address`` has load-balancing weight ``weight``. Times are
``time.time()`` taken once the response is decoded and applied, before its ACK
is written (Envoy, too, applies a response and then ACKs it; awaiting the write
would add the client's own send queue, up to a 150 KB SotW ACK, to the figure).
A stream then yields once before writing its ACK, so that the streams of the
same process, which stand in for separate Envoys, apply what has reached them
first instead of waiting behind each other's ACK writes.

The same worker also holds streams to the bare fan-out peer
(bench/fanout_peer.py): a stream says hello, is welcomed, and later receives
``seq:<n>`` messages, each answered with an ack.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from controlplane.server import event_loop
from controlplane.xds.client import SotwClient
from controlplane.xds.delta_client import DeltaClient
from controlplane.xds.snapshot import resource_references
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, RESOURCE_TYPES, ROUTE

ADS_SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
ADS_DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
FANOUT_SUBSCRIBE = "/bench.Fanout/Subscribe"
FANOUT_TRIGGER = "/bench.Fanout/Trigger"
WELCOME = b"welcome"

DEPENDENT = {CLUSTER: ENDPOINT, LISTENER: ROUTE}
MiB = 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per channel object
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 64 * MiB),
]


@dataclass(frozen=True, slots=True)
class Target:
    """What an applied update looks like: ``cluster``'s ``address`` at ``weight``."""

    cluster: str
    address: str
    weight: int


def make_node(node_id: str) -> base_pb2.Node:
    node = base_pb2.Node(id=node_id, cluster="bench", user_agent_name="envoy")
    node.metadata.fields["pilotfish.io/role"].CopyFrom(struct_pb2.Value(string_value="sidecar"))
    return node


# --------------------------------------------------------------------------- shared decoding


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def content_key(raw: bytes, nonce: str) -> bytes:
    """``raw`` without its nonce field (field 5 in both response types).

    Streams of one proxy class get the same content under per-stream nonces; this
    key lets a process decode each distinct content once.
    """
    value = nonce.encode()
    encoded = b"\x2a" + _varint(len(value)) + value
    at = raw.rfind(encoded)
    return raw if at < 0 else raw[:at] + raw[at + len(encoded) :]


_serials = itertools.count(1)


class Catalog:
    """Immutable ``{name: dependent names}`` of one full-state type, shared by streams."""

    __slots__ = ("_wire", "dependent", "members", "refs", "serial")

    def __init__(self, dependent: str, members: Mapping[str, frozenset[str]]) -> None:
        self.serial = next(_serials)
        self.dependent = dependent
        self.members = dict(members)
        self.refs = frozenset().union(*self.members.values()) if self.members else frozenset()
        self._wire: bytes | None = None

    @property
    def names_wire(self) -> bytes:
        """``resource_names`` of a SotW request for the dependent type, serialized."""
        if self._wire is None:
            request = discovery_pb2.DiscoveryRequest(resource_names=sorted(self.refs))
            self._wire = request.SerializeToString()
        return self._wire


class _Bounded(collections.OrderedDict[Any, Any]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


class Memo:
    """Per-process caches: decoded catalogs, catalog transitions and target checks."""

    def __init__(self) -> None:
        self.empty = {CLUSTER: Catalog(ENDPOINT, {}), LISTENER: Catalog(ROUTE, {})}
        self._full = _Bounded(64)
        self._delta = _Bounded(256)
        self._diffs = _Bounded(256)
        self._targets = _Bounded(256)
        self._requests = _Bounded(1024)
        self.decodes = 0
        self.hits = 0

    @staticmethod
    def _refs(type_url: str, body: Any) -> tuple[str, frozenset[str]]:
        kind = RESOURCE_TYPES[type_url]
        message = kind.decode(body)
        dependent = DEPENDENT[type_url]
        names = frozenset(name for url, name in resource_references(message) if url == dependent)
        return kind.name_of(message), names

    def full_state(self, type_url: str, key: bytes, response: Any) -> Catalog:
        found = self._full.get((type_url, key))
        if found is not None:
            self.hits += 1
            return found  # type: ignore[no-any-return]
        self.decodes += 1
        members = dict(self._refs(type_url, body) for body in response.resources)
        return self._full.put((type_url, key), Catalog(DEPENDENT[type_url], members))  # type: ignore[no-any-return]

    def delta_apply(self, base: Catalog, type_url: str, key: bytes, response: Any) -> Catalog:
        found = self._delta.get((base.serial, key))
        if found is not None:
            self.hits += 1
            return found  # type: ignore[no-any-return]
        self.decodes += 1
        members = dict(base.members)
        for item in response.resources:
            name, refs = self._refs(type_url, item.resource)
            members[item.name or name] = refs
        for name in response.removed_resources:
            members.pop(name, None)
        return self._delta.put((base.serial, key), Catalog(DEPENDENT[type_url], members))  # type: ignore[no-any-return]

    def delta_change(self, dependent: str, have: frozenset[str], want: Catalog) -> bytes:
        """A delta request moving the ``dependent`` subscription from ``have`` to ``want``."""
        key = (dependent, id(have), want.serial)
        found = self._diffs.get(key)
        if found is not None and found[0] is have:
            return found[1]  # type: ignore[no-any-return]
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=dependent,
            resource_names_subscribe=sorted(want.refs - have),
            resource_names_unsubscribe=sorted(have - want.refs),
        )
        wire = request.SerializeToString()
        self._diffs.put(key, (have, wire))
        return wire

    def sotw_request(self, type_url: str, version: str, nonce: str, names_wire: bytes) -> bytes:
        """A SotW request (an ACK, mostly) repeating ``names_wire``; one shared object per
        distinct request in this process, as the streams' nonces are per-stream counters
        that run alike (a SotW EDS ACK is 150 KB to build)."""
        key = (type_url, version, nonce, id(names_wire))
        found = self._requests.get(key)
        if found is not None and found[0] is names_wire:
            return found[1]  # type: ignore[no-any-return]
        request = _sotw_header(type_url, version, nonce) + names_wire
        self._requests.put(key, (names_wire, request))
        return request

    def carries(self, key: bytes, raw: bytes, bodies: Iterable[Any], target: Target) -> bool:
        """Whether an EDS response carries ``target`` (decoded once per content)."""
        found = self._targets.get((key, target))
        if found is not None:
            return found  # type: ignore[no-any-return]
        result = target.cluster.encode() in raw and any(_carries(body, target) for body in bodies)
        return self._targets.put((key, target), result)  # type: ignore[no-any-return]


def _carries(body: Any, target: Target) -> bool:
    assignment = endpoint_pb2.ClusterLoadAssignment()
    if not body.Unpack(assignment) or assignment.cluster_name != target.cluster:
        return False
    return weight_of(assignment, target.address) == target.weight


def weight_of(assignment: Any, address: str) -> int | None:
    for group in assignment.endpoints:
        for endpoint in group.lb_endpoints:
            if endpoint.endpoint.address.socket_address.address == address:
                return int(endpoint.load_balancing_weight.value)
    return None


# --------------------------------------------------------------------------- stream clients


class StreamClient(Protocol):
    method: str
    protocol: str
    ready: bool
    target: Target | int | None

    def start(self) -> list[bytes]: ...

    def on_response(self, raw: bytes) -> tuple[list[bytes], bool]:
        """The requests to write, and whether this response applied the armed target."""
        ...


@dataclass(slots=True)
class _SotwType:
    version: str = ""
    nonce: str = ""
    names_wire: bytes = b""
    names: frozenset[str] | None = None
    answered: bool = False


def _sotw_header(type_url: str, version: str, nonce: str) -> bytes:
    return discovery_pb2.DiscoveryRequest(
        version_info=version, type_url=type_url, response_nonce=nonce
    ).SerializeToString()


class SotwLight:
    """An Envoy-like SotW ADS stream that shares decoded state through a :class:`Memo`."""

    method = ADS_SOTW
    protocol = "sotw"
    __slots__ = ("_memo", "_node_wire", "_types", "ready", "target")

    def __init__(self, node: base_pb2.Node, memo: Memo) -> None:
        self._memo = memo
        self._node_wire = discovery_pb2.DiscoveryRequest(node=node).SerializeToString()
        self._types: dict[str, _SotwType] = {}
        self.ready = False
        self.target: Target | int | None = None

    def start(self) -> list[bytes]:
        self._types[CLUSTER] = _SotwType()
        self._types[LISTENER] = _SotwType()
        return [self._node_wire + _sotw_header(CLUSTER, "", ""), _sotw_header(LISTENER, "", "")]

    def on_response(self, raw: bytes) -> tuple[list[bytes], bool]:
        response = discovery_pb2.DiscoveryResponse.FromString(raw)
        type_url = response.type_url
        state = self._types[type_url]  # KeyError: a type never requested
        state.version, state.nonce, state.answered = response.version_info, response.nonce, True
        out = [self._memo.sotw_request(type_url, state.version, state.nonce, state.names_wire)]
        applied = False
        if type_url in DEPENDENT:
            key = content_key(raw, response.nonce)
            catalog = self._memo.full_state(type_url, key, response)
            dependent = self._types.setdefault(catalog.dependent, _SotwType())
            if dependent.names is None and not catalog.refs:
                dependent.names = catalog.refs  # nothing to follow: no request
            elif dependent.names is not catalog.refs and dependent.names != catalog.refs:
                dependent.names, dependent.names_wire = catalog.refs, catalog.names_wire
                dependent.answered = False
                out.append(
                    self._memo.sotw_request(
                        catalog.dependent, dependent.version, dependent.nonce, dependent.names_wire
                    )
                )
        elif type_url == ENDPOINT and isinstance(self.target, Target):
            key = content_key(raw, response.nonce)
            applied = self._memo.carries(key, raw, response.resources, self.target)
        if not self.ready:
            self.ready = all(
                s.answered or (s.names is not None and not s.names) for s in self._types.values()
            ) and all(url in self._types for url in (CLUSTER, LISTENER, ENDPOINT, ROUTE))
        return out, applied


class DeltaLight:
    """An Envoy-like delta ADS stream that shares decoded state through a :class:`Memo`."""

    method = ADS_DELTA
    protocol = "delta"
    __slots__ = (
        "_answered",
        "_catalogs",
        "_memo",
        "_node_wire",
        "_received",
        "_subs",
        "ready",
        "target",
    )

    def __init__(self, node: base_pb2.Node, memo: Memo) -> None:
        self._memo = memo
        self._node_wire = discovery_pb2.DeltaDiscoveryRequest(node=node).SerializeToString()
        self._catalogs: dict[str, Catalog] = {}
        self._subs: dict[str, frozenset[str]] = {ENDPOINT: frozenset(), ROUTE: frozenset()}
        self._received: dict[str, int] = {ENDPOINT: 0, ROUTE: 0}
        self._answered: set[str] = set()
        self.ready = False
        self.target: Target | int | None = None

    def start(self) -> list[bytes]:
        # Empty lists on LDS and CDS: the legacy wildcard, as Envoy sends it.
        return [
            self._node_wire
            + discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER).SerializeToString(),
            discovery_pb2.DeltaDiscoveryRequest(type_url=LISTENER).SerializeToString(),
        ]

    def on_response(self, raw: bytes) -> tuple[list[bytes], bool]:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        type_url = response.type_url
        out = [
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, response_nonce=response.nonce
            ).SerializeToString()
        ]
        self._answered.add(type_url)
        applied = False
        if type_url in DEPENDENT:
            key = content_key(raw, response.nonce)
            base = self._catalogs.get(type_url) or self._memo.empty[type_url]
            catalog = self._memo.delta_apply(base, type_url, key, response)
            self._catalogs[type_url] = catalog
            have = self._subs[catalog.dependent]
            if have is not catalog.refs and have != catalog.refs:
                out.append(self._memo.delta_change(catalog.dependent, have, catalog))
                self._subs[catalog.dependent] = catalog.refs
        elif type_url in self._received:
            self._received[type_url] += len(response.resources) + len(response.removed_resources)
            if type_url == ENDPOINT and isinstance(self.target, Target):
                key = content_key(raw, response.nonce)
                bodies = (
                    item.resource for item in response.resources if item.name == self.target.cluster
                )
                applied = self._memo.carries(key, raw, bodies, self.target)
        if not self.ready:
            self.ready = {CLUSTER, LISTENER} <= self._answered and all(
                self._received[url] >= len(self._subs[url]) for url in (ENDPOINT, ROUTE)
            )
        return out, applied


class CoreClient:
    """A stream driven by the project's sans-IO client core (heavy: one decode per stream)."""

    __slots__ = ("_core", "_kind", "method", "protocol", "ready", "target")

    def __init__(self, node: base_pb2.Node, protocol: str) -> None:
        self.protocol = protocol
        if protocol == "sotw":
            self._core: Any = SotwClient(node, follow=True)
            self._kind: Any = discovery_pb2.DiscoveryResponse
            self.method = ADS_SOTW
        else:
            self._core = DeltaClient(node, follow=True)
            self._kind = discovery_pb2.DeltaDiscoveryResponse
            self.method = ADS_DELTA
        self.ready = False
        self.target: Target | int | None = None

    def start(self) -> list[bytes]:
        return [
            self._core.subscribe(CLUSTER).SerializeToString(),
            self._core.subscribe(LISTENER).SerializeToString(),
        ]

    def on_response(self, raw: bytes) -> tuple[list[bytes], bool]:
        response = self._kind.FromString(raw)
        requests = self._core.on_response(response)
        for request in requests:
            if request.HasField("error_detail"):
                raise RuntimeError(f"NACK: {request.error_detail.message}")
        applied = False
        if response.type_url == ENDPOINT and isinstance(self.target, Target):
            held = self._core.resources(ENDPOINT).get(self.target.cluster)
            applied = held is not None and weight_of(held, self.target.address) == (
                self.target.weight
            )
        if not self.ready:
            subs = {url: self._core.subscription(url) for url in (ENDPOINT, ROUTE)}
            self.ready = all(
                len(self._core.resources(url)) >= 1 for url in (CLUSTER, LISTENER)
            ) and all(len(self._core.resources(url)) >= len(names) for url, names in subs.items())
            self.ready = self.ready and all(subs.values())
        return [r.SerializeToString() for r in requests], applied


class FanoutClient:
    """A stream of the bare fan-out peer: hello, welcome, then ``seq:<n>`` and acks.

    The ack is 3 bytes, or ``ack`` when the bench sets it: as many bytes as the xDS
    client in the same place sent to ACK the update (see ``Worker.arm``)."""

    method = FANOUT_SUBSCRIBE
    protocol = "fanout"
    __slots__ = ("ack", "ready", "target")

    def __init__(self) -> None:
        self.ready = False
        self.target: Target | int | None = None
        self.ack = ACK

    def start(self) -> list[bytes]:
        return [b"hello"]

    def on_response(self, raw: bytes) -> tuple[list[bytes], bool]:
        if raw == WELCOME:
            self.ready = True
            return [], False
        seq = int(raw.split(b";", 1)[0].removeprefix(b"seq:"))
        return [self.ack], isinstance(self.target, int) and seq == self.target


# --------------------------------------------------------------------------- the worker


ACK = b"ack"


def sized_ack(size: int) -> bytes:
    """A fan-out ack of ``size`` bytes (at least the 3 of ``ack``)."""
    return ACK.ljust(size, b".")


@dataclass(slots=True)
class _Slot:
    client: Any
    protocol: str
    mirror: str = ""
    """For a fan-out stream: the protocol of the xDS stream in the same place."""
    sent: int = 0
    """Bytes this stream wrote in answer to what it received since armed."""
    ready_at: float | None = None
    applied_at: float | None = None
    init_bytes: int = 0
    bytes: int = 0
    error: str | None = None
    responses: int = 0
    armed: bool = False


@dataclass
class _Phase:
    slots: list[_Slot] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started: float = 0.0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    """Streams not yet ready (initial sync) or not yet applied (after arm)."""
    armed: bool = False
    closing: bool = False
    cpu_armed: float = 0.0
    """This process's CPU time (all threads) when the phase was armed..."""
    cpu_settled: float | None = None
    """...and when its last armed stream applied the update."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.memo = Memo()
        self.phase: _Phase | None = None

    async def connect(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        phase = self.phase = _Phase()
        phase.started = time.time()
        slots = asyncio.Semaphore(int(spec["sync_concurrency"]))
        protocols: list[str] = spec["protocols"]
        mirrors: list[str] = spec.get("mirrors") or protocols
        phase.waiting = len(protocols)
        for i, protocol in enumerate(protocols):
            if i % int(spec["per_channel"]) == 0:
                phase.channels.append(
                    grpc.aio.insecure_channel(spec["target"], options=CHANNEL_OPTIONS)
                )
            client: Any
            node = make_node(f"sidecar-{self.index}-{i}.bench")
            if protocol == "fanout":
                client = FanoutClient()
            elif spec["client"] == "core":
                client = CoreClient(node, protocol)
            else:
                client = (SotwLight if protocol == "sotw" else DeltaLight)(node, self.memo)
            slot = _Slot(client, protocol, mirrors[i])
            phase.slots.append(slot)
            phase.tasks.append(
                asyncio.create_task(self._run(phase, phase.channels[-1], slot, slots))
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(phase.settled.wait(), float(spec["timeout"]))
        # These processes stand in for Envoys, which have no garbage collector: keep a
        # full collection over thousands of streams' state out of the measurements.
        gc.collect()
        gc.freeze()
        return {
            "op": "ready",
            "streams": len(phase.slots),
            "ready": sum(s.ready_at is not None for s in phase.slots),
            "ready_at": [s.ready_at for s in phase.slots],
            "init_bytes": [s.init_bytes for s in phase.slots],
            "protocols": [s.protocol for s in phase.slots],
            "channels": len(phase.channels),
            "errors": self._errors(phase),
            "memo": {"decodes": self.memo.decodes, "hits": self.memo.hits},
        }

    def arm(self, target: Target | int, acks: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Arm every stream for ``target``; with ``acks`` (bytes by protocol), each
        fan-out stream acks with as many bytes as ``acks`` gives its mirror, else 3."""
        phase = self.phase
        assert phase is not None
        phase.settled.clear()
        phase.armed = True
        phase.waiting = 0
        payloads = {p: sized_ack(n) for p, n in (acks or {}).items()}
        for slot in phase.slots:
            if isinstance(slot.client, FanoutClient):
                slot.client.ack = payloads.get(slot.mirror, ACK)
            slot.sent = 0
            slot.bytes = 0
            slot.applied_at = None
            slot.responses = 0
            slot.client.target = target
            slot.armed = slot.error is None and slot.ready_at is not None
            phase.waiting += slot.armed
        phase.cpu_armed, phase.cpu_settled = time.process_time(), None
        if phase.waiting == 0:
            phase.settled.set()
        return {"op": "armed"}

    async def collect(self, timeout: float) -> dict[str, Any]:
        phase = self.phase
        assert phase is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(phase.settled.wait(), timeout)
        await asyncio.sleep(0.2)  # let stragglers' extra responses be counted
        for slot in phase.slots:
            slot.client.target = None
        phase.armed = False
        armed = [s for s in phase.slots if s.armed]
        settled = time.process_time() if phase.cpu_settled is None else phase.cpu_settled
        return {
            "op": "result",
            "cpu": settled - phase.cpu_armed,
            "applied_at": [s.applied_at for s in armed],
            "bytes": [s.bytes for s in armed],
            "sent": [s.sent for s in armed],
            "responses": [s.responses for s in armed],
            "protocols": [s.protocol for s in armed],
            "errors": dict(collections.Counter(s.error for s in armed if s.error is not None)),
        }

    async def close(self) -> dict[str, Any]:
        phase, self.phase = self.phase, None
        if phase is not None:
            phase.closing = True
            for task in phase.tasks:
                task.cancel()
            await asyncio.gather(*phase.tasks, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in phase.channels), return_exceptions=True)
        return {"op": "closed"}

    @staticmethod
    def _errors(phase: _Phase) -> dict[str, int]:
        return dict(collections.Counter(s.error for s in phase.slots if s.error is not None))

    def _settle_one(self, phase: _Phase) -> None:
        phase.waiting -= 1
        if phase.waiting <= 0:
            if phase.armed:
                phase.cpu_settled = time.process_time()
            phase.settled.set()

    async def _run(
        self, phase: _Phase, channel: grpc.aio.Channel, slot: _Slot, slots: asyncio.Semaphore
    ) -> None:
        client = slot.client
        await slots.acquire()
        holding = True
        call = channel.stream_stream(client.method)()
        try:
            for request in client.start():
                await call.write(request)
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    raise ConnectionError("the server ended the stream")
                requests, applied = client.on_response(raw)
                now = time.time()
                # Each stream stands in for a separate Envoy: let the others in this
                # process apply what has already reached them before this one spends
                # CPU on its ACK (a SotW EDS ACK is 150 KB to copy and frame).
                await asyncio.sleep(0)
                for request in requests:
                    await call.write(request)
                    if phase.armed:
                        slot.sent += len(request)
                slot.responses += 1
                if slot.ready_at is None:
                    slot.init_bytes += len(raw)
                    if client.ready:
                        slot.ready_at = now
                        slots.release()
                        holding = False
                        if not phase.armed:
                            self._settle_one(phase)
                else:
                    slot.bytes += len(raw)
                    if applied and slot.applied_at is None and slot.armed and phase.armed:
                        slot.applied_at = now
                        self._settle_one(phase)
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as exc:
            if not phase.closing:
                slot.error = _describe(exc)
                syncing = slot.ready_at is None and not phase.armed
                updating = phase.armed and slot.armed and slot.applied_at is None
                if syncing or updating:
                    self._settle_one(phase)
        finally:
            if holding:
                slots.release()


async def _serve(conn: Any, index: int) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(index)
    while True:
        try:
            command = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):
            command = {"op": "exit"}  # the coordinator is gone
        op = command["op"]
        if op == "connect":
            reply = await worker.connect(command)
        elif op == "arm":
            reply = worker.arm(command["target"], command.get("acks"))
        elif op == "collect":
            reply = await worker.collect(float(command["timeout"]))
        elif op == "close":
            reply = await worker.close()
        else:
            await worker.close()
            return
        conn.send(reply)


def worker_main(conn: Any, index: int, loop: str = "auto") -> None:
    """Entry point of a client worker process; runs until ``exit`` or the pipe closes.

    Ctrl-C is left to the coordinator, which tells workers to exit or terminates them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(_serve(conn, index), loop)
