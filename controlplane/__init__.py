"""Pilotfish: a file-driven xDS control plane.

Layers point one way: ``config`` (YAML files -> validated resources -> model)
-> ``model`` (frozen mesh data) -> ``translate`` (model -> Envoy protobufs)
-> ``xds`` (snapshots, stream protocol cores) -> ``server`` (grpc.aio).
"""

__version__ = "0.1.0"
