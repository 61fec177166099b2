"""The dashboard's parts of several workers, merged into the one page a browser sees."""

from __future__ import annotations

from typing import Any

from controlplane.server.dashboard import merge_proxies, merge_traffic


def _proxy(node_id: str, state: str, address: str = "ipv4:127.0.0.1:1") -> dict[str, Any]:
    return {"node_id": node_id, "state": state, "address": address, "types": {}}


def _cluster(name: str, rps: float, eps: float, issued: int, errors: int) -> dict[str, Any]:
    return {
        "cluster": name,
        "rps": rps,
        "eps": eps,
        "error_ratio": eps / rps if rps else 0.0,
        "in_progress": 1,
        "issued": issued,
        "errors": errors,
    }


def test_merged_proxies_sum_the_counts_and_put_problem_proxies_first() -> None:
    one = {
        "total": 2,
        "states": {"SYNCED": 2},
        "proxies": [_proxy("b", "SYNCED"), _proxy("c", "SYNCED")],
    }
    two = {"total": 1, "states": {"NACKED": 1}, "proxies": [_proxy("z", "NACKED")]}
    merged = merge_proxies([one, two])
    assert merged["total"] == 3
    assert merged["states"] == {"SYNCED": 2, "NACKED": 1}
    assert [p["node_id"] for p in merged["proxies"]] == ["z", "b", "c"]


def test_merged_traffic_adds_the_rates_and_totals_of_one_cluster_reported_to_two_workers() -> None:
    name = "outbound|80|v1|web.default.svc.cluster.local"
    service = "web.default.svc.cluster.local"

    def part(rps: float, eps: float, issued: int, errors: int) -> dict[str, Any]:
        cluster = {**_cluster(name, rps, eps, issued, errors), "port": "80", "subset": "v1"}
        return {
            "interval": 1.0,
            "window": 60.0,
            "services": [
                {
                    "service": service,
                    "rps": rps,
                    "eps": eps,
                    "in_progress": 1,
                    "issued": issued,
                    "errors": errors,
                    "clusters": [cluster],
                }
            ],
            "other": [_cluster("static", 1.0, 0.0, 5, 0)],
        }

    merged = merge_traffic([part(3.0, 1.0, 30, 10), None, part(1.0, 0.0, 10, 0)])
    [web] = merged["services"]
    assert (web["service"], web["rps"], web["eps"], web["issued"], web["errors"]) == (
        service,
        4.0,
        1.0,
        40,
        10,
    )
    assert web["in_progress"] == 2
    [cluster] = web["clusters"]
    assert (cluster["cluster"], cluster["issued"], cluster["error_ratio"]) == (name, 40, 0.25)
    [static] = merged["other"]
    assert (static["cluster"], static["issued"], static["rps"]) == ("static", 10, 2.0)
    assert merge_traffic([None, None]) is None
