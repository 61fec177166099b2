from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Diagnostic(_message.Message):
    __slots__ = ("severity", "code", "file", "line", "column", "resource", "field", "message")
    class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SEVERITY_UNSPECIFIED: _ClassVar[Diagnostic.Severity]
        ERROR: _ClassVar[Diagnostic.Severity]
        WARNING: _ClassVar[Diagnostic.Severity]
    SEVERITY_UNSPECIFIED: Diagnostic.Severity
    ERROR: Diagnostic.Severity
    WARNING: Diagnostic.Severity
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    severity: Diagnostic.Severity
    code: str
    file: str
    line: int
    column: int
    resource: str
    field: str
    message: str
    def __init__(self, severity: _Optional[_Union[Diagnostic.Severity, str]] = ..., code: _Optional[str] = ..., file: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., resource: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ProxyClassStatus(_message.Message):
    __slots__ = ("key", "versions", "streams")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    key: str
    versions: _containers.ScalarMap[str, str]
    streams: int
    def __init__(self, key: _Optional[str] = ..., versions: _Optional[_Mapping[str, str]] = ..., streams: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("rejected_files", "diagnostics", "proxy_classes", "services")
    REJECTED_FILES_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    PROXY_CLASSES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    rejected_files: _containers.RepeatedScalarFieldContainer[str]
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    proxy_classes: _containers.RepeatedCompositeFieldContainer[ProxyClassStatus]
    services: int
    def __init__(self, rejected_files: _Optional[_Iterable[str]] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., proxy_classes: _Optional[_Iterable[_Union[ProxyClassStatus, _Mapping]]] = ..., services: _Optional[int] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("version", "message", "at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    message: str
    at: str
    def __init__(self, version: _Optional[str] = ..., message: _Optional[str] = ..., at: _Optional[str] = ...) -> None: ...

class TypeSync(_message.Message):
    __slots__ = ("type_url", "state", "version_sent", "version_acked", "last_nack", "push_pending", "resources")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_FIELD_NUMBER: _ClassVar[int]
    PUSH_PENDING_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    state: str
    version_sent: str
    version_acked: str
    last_nack: Nack
    push_pending: bool
    resources: int
    def __init__(self, type_url: _Optional[str] = ..., state: _Optional[str] = ..., version_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., last_nack: _Optional[_Union[Nack, _Mapping]] = ..., push_pending: _Optional[bool] = ..., resources: _Optional[int] = ...) -> None: ...

class ProxyStatus(_message.Message):
    __slots__ = ("node_id", "cluster", "role", "labels", "peer", "protocol", "connected_since", "proxy_class", "stream_id", "types")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    PROXY_CLASS_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster: str
    role: str
    labels: _containers.ScalarMap[str, str]
    peer: str
    protocol: str
    connected_since: str
    proxy_class: str
    stream_id: int
    types: _containers.RepeatedCompositeFieldContainer[TypeSync]
    def __init__(self, node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., role: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., peer: _Optional[str] = ..., protocol: _Optional[str] = ..., connected_since: _Optional[str] = ..., proxy_class: _Optional[str] = ..., stream_id: _Optional[int] = ..., types: _Optional[_Iterable[_Union[TypeSync, _Mapping]]] = ...) -> None: ...

class ListProxiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProxiesResponse(_message.Message):
    __slots__ = ("proxies",)
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[ProxyStatus]
    def __init__(self, proxies: _Optional[_Iterable[_Union[ProxyStatus, _Mapping]]] = ...) -> None: ...

class GetProxyConfigRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ResourceConfig(_message.Message):
    __slots__ = ("name", "version", "json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    json: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class TypedConfig(_message.Message):
    __slots__ = ("type_url", "version_sent", "version_acked", "resources")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    version_sent: str
    version_acked: str
    resources: _containers.RepeatedCompositeFieldContainer[ResourceConfig]
    def __init__(self, type_url: _Optional[str] = ..., version_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[ResourceConfig, _Mapping]]] = ...) -> None: ...

class GetProxyConfigResponse(_message.Message):
    __slots__ = ("proxy", "types")
    PROXY_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    proxy: ProxyStatus
    types: _containers.RepeatedCompositeFieldContainer[TypedConfig]
    def __init__(self, proxy: _Optional[_Union[ProxyStatus, _Mapping]] = ..., types: _Optional[_Iterable[_Union[TypedConfig, _Mapping]]] = ...) -> None: ...

class GetConfigStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfigFile(_message.Message):
    __slots__ = ("path", "digest")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    path: str
    digest: str
    def __init__(self, path: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class GetConfigStatusResponse(_message.Message):
    __slots__ = ("config_version", "files", "diagnostics", "rejected_files", "reloaded_at", "reloads", "loaded")
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FILES_FIELD_NUMBER: _ClassVar[int]
    RELOADED_AT_FIELD_NUMBER: _ClassVar[int]
    RELOADS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    config_version: str
    files: _containers.RepeatedCompositeFieldContainer[ConfigFile]
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    rejected_files: _containers.RepeatedScalarFieldContainer[str]
    reloaded_at: str
    reloads: int
    loaded: bool
    def __init__(self, config_version: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ConfigFile, _Mapping]]] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., rejected_files: _Optional[_Iterable[str]] = ..., reloaded_at: _Optional[str] = ..., reloads: _Optional[int] = ..., loaded: _Optional[bool] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "at", "node_id", "stream_id", "type_url", "version", "message", "dropped")
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    kind: str
    at: str
    node_id: str
    stream_id: int
    type_url: str
    version: str
    message: str
    dropped: int
    def __init__(self, kind: _Optional[str] = ..., at: _Optional[str] = ..., node_id: _Optional[str] = ..., stream_id: _Optional[int] = ..., type_url: _Optional[str] = ..., version: _Optional[str] = ..., message: _Optional[str] = ..., dropped: _Optional[int] = ...) -> None: ...
