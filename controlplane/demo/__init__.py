"""The demo a person tries first: a whole mesh on one machine, and the same in containers.

* :mod:`controlplane.demo.run` is ``pilotfish demo``: it starts the control
  plane, the services, their sidecar agents and a gateway as local processes,
  reports every accepted or rejected edit, and stops them all;
* :mod:`controlplane.demo.mesh` derives what to run from a config directory's
  WorkloadEntries and writes the storefront example (``example/*.yaml``, a
  copy of ``examples/storefront`` shipped as package data);
* :mod:`controlplane.demo.storefront` is the services' program: a catalog
  instance, or a frontend that calls through its sidecar;
* :mod:`controlplane.demo.envoy` runs an Envoy bootstrapped against a control
  plane over ADS (also ``python -m controlplane.demo.envoy`` for containers);
* :mod:`controlplane.demo.backends` serves tiny named HTTP backends (the
  interop tests' workloads).
"""
