"""Field-by-field schema of the Istio networking resources and the Kubernetes Service.

The config validator uses this table to reject fields that do not exist (with a
did-you-mean suggestion), to type-check values, and to check enum values.

Where it comes from:

* Istio resources (``VirtualService``, ``DestinationRule``, ``Gateway``,
  ``ServiceEntry``, ``WorkloadEntry``): the ``istio.networking.v1alpha3`` protobuf
  definitions in the ``istio/api`` repository (``networking/v1alpha3/*.proto``) plus
  ``istio.type.v1beta1.WorkloadSelector`` (``type/v1beta1/selector.proto``). The
  ``v1`` and ``v1beta1`` API versions serve the same messages. Field names are the
  protobuf JSON names (lowerCamelCase), which is what operators write in YAML.
  Deprecated fields that Istio still accepts are listed too.
* Kubernetes ``Service``: ``ServiceSpec``/``ServicePort`` from ``k8s.io/api``
  (``core/v1/types.go``) and ``ObjectMeta`` from ``k8s.io/apimachinery``
  (``pkg/apis/meta/v1/types.go``), using their JSON tags.

Naming: a message or enum nested in another is named ``Outer.Inner`` as in the
proto files. Unprefixed names belong to ``istio.networking.v1alpha3``; names from
other packages carry a package prefix (``type.v1beta1.``, ``core.v1.``,
``meta.v1.``), except ``ServiceSpec`` and ``ObjectMeta``, which are unique already.

Type strings used in :class:`FieldSpec`:

* scalars: ``string``, ``bool``, ``int32``, ``uint32``, ``int64``, ``uint64``,
  ``double``, ``float``. Protobuf wrapper types (``UInt32Value``, ``BoolValue``,
  ``DoubleValue``...) are written as their scalar. Protobuf ``bytes`` is written as
  ``string`` (JSON carries it base64-encoded); Kubernetes timestamps are ``string``.
* ``duration``: ``google.protobuf.Duration``, written like ``"1.5s"`` or ``"100ms"``.
* ``struct``: free-form JSON/YAML (``google.protobuf.Struct``, ``FieldsV1``...).
* ``int-or-string``: Kubernetes ``IntOrString`` (e.g. ``targetPort``).
* ``enum:<EnumName>``: the accepted value names are ``ENUMS[<EnumName>]``.
* ``message:<MessageName>``: the fields are ``MESSAGES[<MessageName>]``.
* ``map:<value type>``: an object with string keys, e.g. ``map:string``,
  ``map:uint32``, ``map:message:StringMatch``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Type of one field: a type string (see module docstring), list-ness and oneof group."""

    type: str
    repeated: bool = False
    oneof: str | None = None  # name of the proto oneof group the field belongs to, if any


def _f(type_: str, *, repeated: bool = False, oneof: str | None = None) -> FieldSpec:
    return FieldSpec(type_, repeated=repeated, oneof=oneof)


def _list(type_: str) -> FieldSpec:
    return FieldSpec(type_, repeated=True)


_STR = FieldSpec("string")
_STRS = FieldSpec("string", repeated=True)
_BOOL = FieldSpec("bool")
_INT32 = FieldSpec("int32")
_UINT32 = FieldSpec("uint32")
_INT64 = FieldSpec("int64")
_UINT64 = FieldSpec("uint64")
_DOUBLE = FieldSpec("double")
_DURATION = FieldSpec("duration")
_STRUCT = FieldSpec("struct")
_LABELS = FieldSpec("map:string")


def _msg(name: str) -> FieldSpec:
    return FieldSpec(f"message:{name}")


def _enum(name: str) -> FieldSpec:
    return FieldSpec(f"enum:{name}")


# ---------------------------------------------------------------------------
# istio.networking.v1alpha3: virtual_service.proto
# ---------------------------------------------------------------------------

_VIRTUAL_SERVICE: dict[str, dict[str, FieldSpec]] = {
    "VirtualService": {
        "hosts": _STRS,
        "gateways": _STRS,
        "http": _list("message:HTTPRoute"),
        "tls": _list("message:TLSRoute"),
        "tcp": _list("message:TCPRoute"),
        "exportTo": _STRS,
    },
    "Destination": {
        "host": _STR,
        "subset": _STR,
        "port": _msg("PortSelector"),
    },
    "HTTPRoute": {
        "name": _STR,
        "match": _list("message:HTTPMatchRequest"),
        "route": _list("message:HTTPRouteDestination"),
        "redirect": _msg("HTTPRedirect"),
        "directResponse": _msg("HTTPDirectResponse"),
        "delegate": _msg("Delegate"),
        "rewrite": _msg("HTTPRewrite"),
        "timeout": _DURATION,
        "retries": _msg("HTTPRetry"),
        "fault": _msg("HTTPFaultInjection"),
        "mirror": _msg("Destination"),
        "mirrors": _list("message:HTTPMirrorPolicy"),
        # Deprecated (UInt32Value). Istio's CRD accepts it both under its JSON name and
        # under the original proto name (kubebuilder altName).
        "mirrorPercent": _UINT32,
        "mirror_percent": _UINT32,
        "mirrorPercentage": _msg("Percent"),
        "corsPolicy": _msg("CorsPolicy"),
        "headers": _msg("Headers"),
    },
    "Delegate": {
        "name": _STR,
        "namespace": _STR,
    },
    "Headers": {
        "request": _msg("Headers.HeaderOperations"),
        "response": _msg("Headers.HeaderOperations"),
    },
    "Headers.HeaderOperations": {
        "set": _LABELS,
        "add": _LABELS,
        "remove": _STRS,
    },
    "TLSRoute": {
        "match": _list("message:TLSMatchAttributes"),
        "route": _list("message:RouteDestination"),
    },
    "TCPRoute": {
        "match": _list("message:L4MatchAttributes"),
        "route": _list("message:RouteDestination"),
    },
    "HTTPMatchRequest": {
        "name": _STR,
        "uri": _msg("StringMatch"),
        "scheme": _msg("StringMatch"),
        "method": _msg("StringMatch"),
        "authority": _msg("StringMatch"),
        "headers": _f("map:message:StringMatch"),
        "port": _UINT32,
        "sourceLabels": _LABELS,
        "gateways": _STRS,
        "queryParams": _f("map:message:StringMatch"),
        "ignoreUriCase": _BOOL,
        "withoutHeaders": _f("map:message:StringMatch"),
        "sourceNamespace": _STR,
        "statPrefix": _STR,
    },
    "HTTPRouteDestination": {
        "destination": _msg("Destination"),
        "weight": _INT32,
        "headers": _msg("Headers"),
    },
    "RouteDestination": {
        "destination": _msg("Destination"),
        "weight": _INT32,
    },
    "L4MatchAttributes": {
        "destinationSubnets": _STRS,
        "port": _UINT32,
        "sourceSubnet": _STR,
        "sourceLabels": _LABELS,
        "gateways": _STRS,
        "sourceNamespace": _STR,
    },
    "TLSMatchAttributes": {
        "sniHosts": _STRS,
        "destinationSubnets": _STRS,
        "port": _UINT32,
        "sourceLabels": _LABELS,
        "gateways": _STRS,
        "sourceNamespace": _STR,
    },
    "HTTPRedirect": {
        "uri": _STR,
        "authority": _STR,
        "port": _f("uint32", oneof="redirect_port"),
        "derivePort": _f("enum:HTTPRedirect.RedirectPortSelection", oneof="redirect_port"),
        "scheme": _STR,
        "redirectCode": _UINT32,
        "prefixRewrite": _STR,
    },
    "HTTPDirectResponse": {
        "status": _UINT32,
        "body": _msg("HTTPBody"),
    },
    "HTTPBody": {
        "string": _f("string", oneof="specifier"),
        "bytes": _f("string", oneof="specifier"),  # proto bytes, base64 in YAML/JSON
    },
    "HTTPRewrite": {
        "uri": _STR,
        "authority": _STR,
        "uriRegexRewrite": _msg("RegexRewrite"),
    },
    "RegexRewrite": {
        "match": _STR,
        "rewrite": _STR,
    },
    "StringMatch": {
        "exact": _f("string", oneof="match_type"),
        "prefix": _f("string", oneof="match_type"),
        "regex": _f("string", oneof="match_type"),
    },
    "HTTPRetry": {
        "attempts": _INT32,
        "perTryTimeout": _DURATION,
        "retryOn": _STR,
        "retryRemoteLocalities": _BOOL,
        "retryIgnorePreviousHosts": _BOOL,
        "backoff": _DURATION,
    },
    "CorsPolicy": {
        "allowOrigin": _STRS,  # deprecated in favour of allowOrigins
        "allowOrigins": _list("message:StringMatch"),
        "allowMethods": _STRS,
        "allowHeaders": _STRS,
        "exposeHeaders": _STRS,
        "maxAge": _DURATION,
        "allowCredentials": _BOOL,
        "unmatchedPreflights": _enum("CorsPolicy.UnmatchedPreflights"),
    },
    "HTTPFaultInjection": {
        "delay": _msg("HTTPFaultInjection.Delay"),
        "abort": _msg("HTTPFaultInjection.Abort"),
    },
    "HTTPFaultInjection.Delay": {
        "percent": _INT32,  # deprecated in favour of percentage
        "fixedDelay": _f("duration", oneof="http_delay_type"),
        "exponentialDelay": _f("duration", oneof="http_delay_type"),
        "percentage": _msg("Percent"),
    },
    "HTTPFaultInjection.Abort": {
        "httpStatus": _f("int32", oneof="error_type"),
        "grpcStatus": _f("string", oneof="error_type"),
        "http2Error": _f("string", oneof="error_type"),
        "percentage": _msg("Percent"),
    },
    "HTTPMirrorPolicy": {
        "destination": _msg("Destination"),
        "percentage": _msg("Percent"),
    },
    "PortSelector": {
        "number": _UINT32,
    },
    "Percent": {
        "value": _DOUBLE,
    },
}

# ---------------------------------------------------------------------------
# istio.networking.v1alpha3: destination_rule.proto
# ---------------------------------------------------------------------------

_DESTINATION_RULE: dict[str, dict[str, FieldSpec]] = {
    "DestinationRule": {
        "host": _STR,
        "trafficPolicy": _msg("TrafficPolicy"),
        "subsets": _list("message:Subset"),
        "exportTo": _STRS,
        "workloadSelector": _msg("type.v1beta1.WorkloadSelector"),
    },
    "TrafficPolicy": {
        "loadBalancer": _msg("LoadBalancerSettings"),
        "connectionPool": _msg("ConnectionPoolSettings"),
        "outlierDetection": _msg("OutlierDetection"),
        "tls": _msg("ClientTLSSettings"),
        "portLevelSettings": _list("message:TrafficPolicy.PortTrafficPolicy"),
        "tunnel": _msg("TrafficPolicy.TunnelSettings"),
        "proxyProtocol": _msg("TrafficPolicy.ProxyProtocol"),
        "retryBudget": _msg("TrafficPolicy.RetryBudget"),
    },
    "TrafficPolicy.PortTrafficPolicy": {
        "port": _msg("PortSelector"),
        "loadBalancer": _msg("LoadBalancerSettings"),
        "connectionPool": _msg("ConnectionPoolSettings"),
        "outlierDetection": _msg("OutlierDetection"),
        "tls": _msg("ClientTLSSettings"),
    },
    "TrafficPolicy.TunnelSettings": {
        "protocol": _STR,
        "targetHost": _STR,
        "targetPort": _UINT32,
    },
    "TrafficPolicy.ProxyProtocol": {
        "version": _enum("TrafficPolicy.ProxyProtocol.VERSION"),
    },
    "TrafficPolicy.RetryBudget": {
        "percent": _DOUBLE,
        "minRetryConcurrency": _UINT32,
        "budgetInterval": _DURATION,
    },
    "Subset": {
        "name": _STR,
        "labels": _LABELS,
        "trafficPolicy": _msg("TrafficPolicy"),
    },
    "LoadBalancerSettings": {
        "simple": _f("enum:LoadBalancerSettings.SimpleLB", oneof="lb_policy"),
        "consistentHash": _f("message:LoadBalancerSettings.ConsistentHashLB", oneof="lb_policy"),
        "localityLbSetting": _msg("LocalityLoadBalancerSetting"),
        "zoneAwareLbSetting": _msg("ZoneAwareLoadBalancerSetting"),
        "warmupDurationSecs": _DURATION,
        "warmup": _msg("WarmupConfiguration"),
    },
    "LoadBalancerSettings.ConsistentHashLB": {
        "httpHeaderName": _f("string", oneof="hash_key"),
        "httpCookie": _f(
            "message:LoadBalancerSettings.ConsistentHashLB.HTTPCookie", oneof="hash_key"
        ),
        "useSourceIp": _f("bool", oneof="hash_key"),
        "httpQueryParameterName": _f("string", oneof="hash_key"),
        "ringHash": _f(
            "message:LoadBalancerSettings.ConsistentHashLB.RingHash", oneof="hash_algorithm"
        ),
        "maglev": _f(
            "message:LoadBalancerSettings.ConsistentHashLB.MagLev", oneof="hash_algorithm"
        ),
        "minimumRingSize": _UINT64,  # deprecated in favour of ringHash.minimumRingSize
    },
    "LoadBalancerSettings.ConsistentHashLB.RingHash": {
        "minimumRingSize": _UINT64,
    },
    "LoadBalancerSettings.ConsistentHashLB.MagLev": {
        "tableSize": _UINT64,
    },
    "LoadBalancerSettings.ConsistentHashLB.HTTPCookie": {
        "name": _STR,
        "path": _STR,
        "ttl": _DURATION,
        "attributes": _list("message:LoadBalancerSettings.ConsistentHashLB.HTTPCookie.Attribute"),
    },
    "LoadBalancerSettings.ConsistentHashLB.HTTPCookie.Attribute": {
        "name": _STR,
        "value": _STR,
    },
    "WarmupConfiguration": {
        "duration": _DURATION,
        "minimumPercent": _DOUBLE,
        "aggression": _DOUBLE,
    },
    "ConnectionPoolSettings": {
        "tcp": _msg("ConnectionPoolSettings.TCPSettings"),
        "http": _msg("ConnectionPoolSettings.HTTPSettings"),
    },
    "ConnectionPoolSettings.TCPSettings": {
        "maxConnections": _INT32,
        "connectTimeout": _DURATION,
        "tcpKeepalive": _msg("ConnectionPoolSettings.TCPSettings.TcpKeepalive"),
        "maxConnectionDuration": _DURATION,
        "idleTimeout": _DURATION,
    },
    "ConnectionPoolSettings.TCPSettings.TcpKeepalive": {
        "probes": _UINT32,
        "time": _DURATION,
        "interval": _DURATION,
    },
    "ConnectionPoolSettings.HTTPSettings": {
        "http1MaxPendingRequests": _INT32,
        "http2MaxRequests": _INT32,
        "maxRequestsPerConnection": _INT32,
        "maxRetries": _INT32,
        "idleTimeout": _DURATION,
        "h2UpgradePolicy": _enum("ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy"),
        "useClientProtocol": _BOOL,
        "maxConcurrentStreams": _INT32,
        "http2KeepAlive": _msg("ConnectionPoolSettings.HTTPSettings.ConnectionKeepalive"),
    },
    "ConnectionPoolSettings.HTTPSettings.ConnectionKeepalive": {
        "interval": _DURATION,
        "timeout": _DURATION,
    },
    "OutlierDetection": {
        "consecutiveErrors": _INT32,  # deprecated in favour of consecutive5xxErrors
        "splitExternalLocalOriginErrors": _BOOL,
        "consecutiveLocalOriginFailures": _UINT32,
        "consecutiveGatewayErrors": _UINT32,
        "consecutive5xxErrors": _UINT32,
        "interval": _DURATION,
        "baseEjectionTime": _DURATION,
        "maxEjectionPercent": _INT32,
        "minHealthPercent": _INT32,
        "outlierDetectionHttpErrorCodes": _list("uint32"),
    },
    "ClientTLSSettings": {
        "mode": _enum("ClientTLSSettings.TLSmode"),
        "clientCertificate": _STR,
        "privateKey": _STR,
        "caCertificates": _STR,
        "credentialName": _STR,
        "subjectAltNames": _STRS,
        "sni": _STR,
        "insecureSkipVerify": _BOOL,
        "caCrl": _STR,
    },
    "LocalityLoadBalancerSetting": {
        "distribute": _list("message:LocalityLoadBalancerSetting.Distribute"),
        "failover": _list("message:LocalityLoadBalancerSetting.Failover"),
        "failoverPriority": _STRS,
        "enabled": _BOOL,
    },
    "LocalityLoadBalancerSetting.Distribute": {
        "from": _STR,
        "to": _f("map:uint32"),
    },
    "LocalityLoadBalancerSetting.Failover": {
        "from": _STR,
        "to": _STR,
    },
    "ZoneAwareLoadBalancerSetting": {
        "enabled": _BOOL,
        "failover": _list("message:ZoneAwareLoadBalancerSetting.Failover"),
        "failoverPriority": _STRS,
        "minClusterSize": _UINT64,
    },
    "ZoneAwareLoadBalancerSetting.Failover": {
        "from": _STR,
        "to": _STR,
    },
    # istio.type.v1beta1 (type/v1beta1/selector.proto)
    "type.v1beta1.WorkloadSelector": {
        "matchLabels": _LABELS,
    },
}

# ---------------------------------------------------------------------------
# istio.networking.v1alpha3: gateway.proto
# ---------------------------------------------------------------------------

_GATEWAY: dict[str, dict[str, FieldSpec]] = {
    "Gateway": {
        "servers": _list("message:Server"),
        "selector": _LABELS,
    },
    "Server": {
        "port": _msg("Port"),
        "bind": _STR,
        "hosts": _STRS,
        "tls": _msg("ServerTLSSettings"),
        "defaultEndpoint": _STR,
        "name": _STR,
    },
    "Port": {
        "number": _UINT32,
        "protocol": _STR,
        "name": _STR,
        "targetPort": _UINT32,  # deprecated
    },
    "ServerTLSSettings": {
        "httpsRedirect": _BOOL,
        "mode": _enum("ServerTLSSettings.TLSmode"),
        "serverCertificate": _STR,
        "privateKey": _STR,
        "caCertificates": _STR,
        "caCrl": _STR,
        "credentialName": _STR,
        "credentialNames": _STRS,
        "caCertCredentialName": _STR,
        "tlsCertificates": _list("message:ServerTLSSettings.TLSCertificate"),
        "subjectAltNames": _STRS,
        "verifyCertificateSpki": _STRS,
        "verifyCertificateHash": _STRS,
        "minProtocolVersion": _enum("ServerTLSSettings.TLSProtocol"),
        "maxProtocolVersion": _enum("ServerTLSSettings.TLSProtocol"),
        "cipherSuites": _STRS,
        "insecureSkipVerify": _BOOL,
    },
    "ServerTLSSettings.TLSCertificate": {
        "serverCertificate": _STR,
        "privateKey": _STR,
        "caCertificates": _STR,
    },
}

# ---------------------------------------------------------------------------
# istio.networking.v1alpha3: service_entry.proto, workload_entry.proto, sidecar.proto
# ---------------------------------------------------------------------------

_SERVICE_ENTRY: dict[str, dict[str, FieldSpec]] = {
    "ServiceEntry": {
        "hosts": _STRS,
        "addresses": _STRS,
        "ports": _list("message:ServicePort"),
        "location": _enum("ServiceEntry.Location"),
        "resolution": _enum("ServiceEntry.Resolution"),
        "endpoints": _list("message:WorkloadEntry"),
        "workloadSelector": _msg("WorkloadSelector"),
        "exportTo": _STRS,
        "subjectAltNames": _STRS,
    },
    "ServicePort": {
        "number": _UINT32,
        "protocol": _STR,
        "name": _STR,
        "targetPort": _UINT32,
    },
    "WorkloadEntry": {
        "address": _STR,
        "ports": _f("map:uint32"),
        "labels": _LABELS,
        "network": _STR,
        "locality": _STR,
        "weight": _UINT32,
        "serviceAccount": _STR,
    },
    # Defined in sidecar.proto; used by ServiceEntry.workloadSelector.
    "WorkloadSelector": {
        "labels": _LABELS,
    },
}

# ---------------------------------------------------------------------------
# Kubernetes core/v1 Service and meta/v1 ObjectMeta
# ---------------------------------------------------------------------------

_KUBERNETES: dict[str, dict[str, FieldSpec]] = {
    "ServiceSpec": {
        "ports": _list("message:core.v1.ServicePort"),
        "selector": _LABELS,
        "clusterIP": _STR,
        "clusterIPs": _STRS,
        "type": _enum("core.v1.ServiceType"),
        "externalIPs": _STRS,
        "sessionAffinity": _enum("core.v1.ServiceAffinity"),
        "loadBalancerIP": _STR,
        "loadBalancerSourceRanges": _STRS,
        "externalName": _STR,
        "externalTrafficPolicy": _enum("core.v1.ServiceExternalTrafficPolicy"),
        "healthCheckNodePort": _INT32,
        "publishNotReadyAddresses": _BOOL,
        "sessionAffinityConfig": _msg("core.v1.SessionAffinityConfig"),
        "ipFamilies": _list("enum:core.v1.IPFamily"),
        "ipFamilyPolicy": _enum("core.v1.IPFamilyPolicy"),
        "allocateLoadBalancerNodePorts": _BOOL,
        "loadBalancerClass": _STR,
        "internalTrafficPolicy": _enum("core.v1.ServiceInternalTrafficPolicy"),
        "trafficDistribution": _enum("core.v1.ServiceTrafficDistribution"),
    },
    "core.v1.ServicePort": {
        "name": _STR,
        "protocol": _enum("core.v1.Protocol"),
        "appProtocol": _STR,
        "port": _INT32,
        "targetPort": _f("int-or-string"),
        "nodePort": _INT32,
    },
    "core.v1.SessionAffinityConfig": {
        "clientIP": _msg("core.v1.ClientIPConfig"),
    },
    "core.v1.ClientIPConfig": {
        "timeoutSeconds": _INT32,
    },
    "ObjectMeta": {
        "name": _STR,
        "generateName": _STR,
        "namespace": _STR,
        "selfLink": _STR,
        "uid": _STR,
        "resourceVersion": _STR,
        "generation": _INT64,
        "creationTimestamp": _STR,  # RFC 3339 timestamp
        "deletionTimestamp": _STR,  # RFC 3339 timestamp
        "deletionGracePeriodSeconds": _INT64,
        "labels": _LABELS,
        "annotations": _LABELS,
        "ownerReferences": _list("message:meta.v1.OwnerReference"),
        "finalizers": _STRS,
        "managedFields": _list("message:meta.v1.ManagedFieldsEntry"),
    },
    "meta.v1.OwnerReference": {
        "apiVersion": _STR,
        "kind": _STR,
        "name": _STR,
        "uid": _STR,
        "controller": _BOOL,
        "blockOwnerDeletion": _BOOL,
    },
    "meta.v1.ManagedFieldsEntry": {
        "manager": _STR,
        "operation": _enum("meta.v1.ManagedFieldsOperationType"),
        "apiVersion": _STR,
        "time": _STR,  # RFC 3339 timestamp
        "fieldsType": _STR,
        "fieldsV1": _STRUCT,
        "subresource": _STR,
    },
}

MESSAGES: dict[str, dict[str, FieldSpec]] = {
    **_VIRTUAL_SERVICE,
    **_DESTINATION_RULE,
    **_GATEWAY,
    **_SERVICE_ENTRY,
    **_KUBERNETES,
}

ENUMS: dict[str, tuple[str, ...]] = {
    # virtual_service.proto
    "HTTPRedirect.RedirectPortSelection": ("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"),
    "CorsPolicy.UnmatchedPreflights": ("UNSPECIFIED", "FORWARD", "IGNORE"),
    # destination_rule.proto
    "TrafficPolicy.ProxyProtocol.VERSION": ("V1", "V2"),
    "LoadBalancerSettings.SimpleLB": (
        "UNSPECIFIED",
        "LEAST_CONN",  # deprecated, still accepted
        "RANDOM",
        "PASSTHROUGH",
        "ROUND_ROBIN",
        "LEAST_REQUEST",
    ),
    "ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy": ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"),
    "ClientTLSSettings.TLSmode": ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"),
    # gateway.proto
    "ServerTLSSettings.TLSmode": (
        "PASSTHROUGH",
        "SIMPLE",
        "MUTUAL",
        "AUTO_PASSTHROUGH",
        "ISTIO_MUTUAL",
        "OPTIONAL_MUTUAL",
    ),
    "ServerTLSSettings.TLSProtocol": ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"),
    # service_entry.proto
    "ServiceEntry.Location": ("MESH_EXTERNAL", "MESH_INTERNAL"),
    "ServiceEntry.Resolution": ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"),
    # Kubernetes core/v1
    "core.v1.ServiceType": ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"),
    "core.v1.ServiceAffinity": ("ClientIP", "None"),
    "core.v1.ServiceExternalTrafficPolicy": ("Cluster", "Local"),
    "core.v1.ServiceInternalTrafficPolicy": ("Cluster", "Local"),
    "core.v1.ServiceTrafficDistribution": ("PreferClose", "PreferSameZone", "PreferSameNode"),
    "core.v1.IPFamily": ("IPv4", "IPv6"),
    "core.v1.IPFamilyPolicy": ("SingleStack", "PreferDualStack", "RequireDualStack"),
    "core.v1.Protocol": ("TCP", "UDP", "SCTP"),
    # Kubernetes meta/v1
    "meta.v1.ManagedFieldsOperationType": ("Apply", "Update"),
}

_ISTIO_NETWORKING_VERSIONS: tuple[str, ...] = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)

# Top-level resource kinds -> (accepted apiVersions, spec message name)
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "VirtualService": (_ISTIO_NETWORKING_VERSIONS, "VirtualService"),
    "DestinationRule": (_ISTIO_NETWORKING_VERSIONS, "DestinationRule"),
    "Gateway": (_ISTIO_NETWORKING_VERSIONS, "Gateway"),
    "ServiceEntry": (_ISTIO_NETWORKING_VERSIONS, "ServiceEntry"),
    "WorkloadEntry": (_ISTIO_NETWORKING_VERSIONS, "WorkloadEntry"),
    "Service": (("v1",), "ServiceSpec"),
}

# The top-level document shape. ``spec`` is checked against the kind's spec message
# from KINDS; ``status`` is written by controllers and is not checked.
TOP_LEVEL_FIELDS: dict[str, FieldSpec] = {
    "apiVersion": _STR,
    "kind": _STR,
    "metadata": _msg("ObjectMeta"),
    "spec": _STRUCT,
    "status": _STRUCT,
}

__all__ = ["ENUMS", "KINDS", "MESSAGES", "TOP_LEVEL_FIELDS", "FieldSpec"]
