"""What Istio's validation rejects among the fields Pilotfish reads is rejected too.

One case per rule of the "more lenient than Istio" list of issue 12, each with
its code, field (and so line) and hint.
"""

from __future__ import annotations

import pytest

from controlplane.config.document import read_text
from tests.config.helpers import FILE, doc

PORT = "ports: [{number: 80, name: http}]\n"
UNIX_SE = "hosts: [a.example.com]\n" + PORT + "resolution: STATIC\nendpoints: [{address: '%s'}]\n"
LB = "host: web\ntrafficPolicy:\n  loadBalancer:\n    simple: ROUND_ROBIN\n    warmup: %s\n"
SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: w}\nspec: %s\n"

CASES = [
    # duplicate port numbers or names in a ServiceEntry
    (
        doc(
            "ServiceEntry", "hosts: [a.b]\nports: [{number: 80, name: a}, {number: 80, name: b}]\n"
        ),
        "PF114",
        "spec.ports.1.number",
        "port 80 is used twice",
    ),
    (
        doc(
            "ServiceEntry", "hosts: [a.b]\nports: [{number: 80, name: a}, {number: 81, name: a}]\n"
        ),
        "PF114",
        "spec.ports.1.name",
        "port name 'a' is used twice",
    ),
    # host *
    (
        doc("ServiceEntry", "hosts: ['*']\n" + PORT + "resolution: DNS\n"),
        "PF114",
        "spec.hosts.0",
        "host '*' is not allowed in a ServiceEntry",
    ),
    # CIDR addresses with DNS resolution
    (
        doc("ServiceEntry", "hosts: [a.b]\naddresses: [10.0.0.0/8]\n" + PORT + "resolution: DNS\n"),
        "PF114",
        "spec.addresses.0",
        "CIDR '10.0.0.0/8' is allowed only with resolution NONE or STATIC",
    ),
    # NONE resolution with endpoints
    (
        doc("ServiceEntry", "hosts: [a.b]\n" + PORT + "endpoints: [{address: 10.0.0.1}]\n"),
        "PF114",
        "spec.endpoints",
        "resolution NONE takes no endpoints",
    ),
    # DNS_ROUND_ROBIN with more than one endpoint
    (
        doc(
            "ServiceEntry",
            "hosts: [a.b]\n" + PORT + "resolution: DNS_ROUND_ROBIN\n"
            "endpoints: [{address: a.com}, {address: b.com}]\n",
        ),
        "PF114",
        "spec.endpoints.1",
        "resolution DNS_ROUND_ROBIN takes at most one endpoint",
    ),
    # ports outside 1-65535, including target ports
    (
        doc("ServiceEntry", "hosts: [a.b]\nports: [{number: 70000, name: a}]\n"),
        "PF114",
        "spec.ports.0.number",
        "port 70000 is not 1-65535",
    ),
    (
        doc("ServiceEntry", "hosts: [a.b]\nports: [{number: 80, name: a, targetPort: 70000}]\n"),
        "PF114",
        "spec.ports.0.targetPort",
        "targetPort 70000 is not 1-65535",
    ),
    (
        SERVICE % "{ports: [{port: 80, targetPort: 0}]}",
        "PF114",
        "spec.ports.0.targetPort",
        "targetPort 0 is not 1-65535",
    ),
    (
        doc("WorkloadEntry", "address: 10.0.0.1\nports: {http: 70000}\n"),
        "PF114",
        "spec.ports.http",
        "port 70000 is not 1-65535",
    ),
    # * as a selector value
    (
        doc("ServiceEntry", "hosts: [a.b]\n" + PORT + "workloadSelector: {labels: {app: '*'}}\n"),
        "PF114",
        "spec.workloadSelector.labels.app",
        "a wildcard is not supported in a selector",
    ),
    (
        SERVICE % "{selector: {app: '*'}, ports: [{port: 80}]}",
        "PF114",
        "spec.selector.app",
        "a wildcard is not supported in a selector",
    ),
    (
        doc("DestinationRule", "host: web\nsubsets: [{name: v1, labels: {version: '*'}}]\n"),
        "PF114",
        "spec.subsets.0.labels.version",
        "'*' is not a valid label value",
    ),
    (
        doc("WorkloadEntry", "address: 10.0.0.1\nlabels: {app: 'a b'}\n"),
        "PF114",
        "spec.labels.app",
        "'a b' is not a valid label value",
    ),
    # unix socket addresses that are directories, relative, or carry ports
    (
        doc("ServiceEntry", UNIX_SE % "unix:///var/run/"),
        "PF114",
        "spec.endpoints.0.address",
        "is not an absolute path to a socket file",
    ),
    (
        doc("ServiceEntry", UNIX_SE % "unix://run/a.sock"),
        "PF114",
        "spec.endpoints.0.address",
        "is not an absolute path to a socket file",
    ),
    (
        doc("WorkloadEntry", "address: unix:///run/a.sock\nports: {http: 80}\n"),
        "PF114",
        "spec.ports",
        "cannot have ports",
    ),
    (
        doc(
            "ServiceEntry",
            "hosts: [a.b]\nports: [{number: 80, name: a}, {number: 81, name: b}]\n"
            "resolution: STATIC\nendpoints: [{address: 'unix:///run/a.sock'}]\n",
        ),
        "PF114",
        "spec.ports",
        "needs exactly one port",
    ),
    # invalid port names
    (
        doc("ServiceEntry", "hosts: [a.b]\nports: [{number: 80, name: HTTP_1}]\n"),
        "PF114",
        "spec.ports.0.name",
        "port name 'HTTP_1' is not a DNS label",
    ),
    (
        doc("WorkloadEntry", "address: 10.0.0.1\nports: {Web: 80}\n"),
        "PF114",
        "spec.ports.Web",
        "port name 'Web' is not a DNS label",
    ),
    # a Gateway server port needs a name and has no target port
    (
        doc("Gateway", "servers:\n- port: {number: 80, protocol: HTTP}\n  hosts: ['*']\n"),
        "PF113",
        "spec.servers.0.port",
        "a server port needs a name",
    ),
    (
        doc(
            "Gateway",
            "servers:\n- port: {number: 80, protocol: HTTP, name: http, targetPort: 8080}\n"
            "  hosts: ['*']\n",
        ),
        "PF114",
        "spec.servers.0.port.targetPort",
        "targetPort has no effect on a Gateway",
    ),
    # warmup outside its bounds
    (
        doc("DestinationRule", LB % "{duration: 10s, minimumPercent: 101}"),
        "PF114",
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        "minimumPercent must be 0 to 100",
    ),
    (
        doc("DestinationRule", LB % "{minimumPercent: 10}"),
        "PF113",
        "spec.trafficPolicy.loadBalancer.warmup",
        "warmup needs a duration",
    ),
    (
        doc("DestinationRule", LB % "{duration: 10s, aggression: 0.5}"),
        "PF114",
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        "aggression must be at least 1",
    ),
]


@pytest.mark.parametrize(("text", "code", "field", "hint"), CASES)
def test_what_istio_rejects_is_an_error_on_the_field(
    text: str, code: str, field: str, hint: str
) -> None:
    errors = [f for f in read_text(FILE, text).findings if f.is_error]
    assert [(f.code, ".".join(map(str, f.path))) for f in errors] == [(code, field)]
    assert hint in errors[0].message


@pytest.mark.parametrize(
    "text",
    [
        doc("ServiceEntry", UNIX_SE % "unix:///run/a.sock"),
        doc("ServiceEntry", UNIX_SE % "unix://@abstract"),
        doc("ServiceEntry", "hosts: ['*.example.com']\n" + PORT + "resolution: NONE\n"),
        doc(
            "ServiceEntry",
            "hosts: [a.b]\naddresses: [10.0.0.0/8]\n" + PORT + "resolution: STATIC\n",
        ),
        doc(
            "ServiceEntry",
            "hosts: [a.b]\n"
            + PORT
            + "resolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.com}]\n",
        ),
        doc("DestinationRule", LB % "{duration: 10s, minimumPercent: 0, aggression: 1}"),
        doc("WorkloadEntry", "address: 10.0.0.1\nlabels: {app.kubernetes.io/name: web, v: ''}\n"),
    ],
)
def test_what_istio_accepts_near_those_rules_stays_accepted(text: str) -> None:
    assert [f for f in read_text(FILE, text).findings if f.is_error] == []
