"""The demo a person tries first: backends, the control plane and a real Envoy on one machine.

* :mod:`controlplane.demo.envoy` runs an Envoy bootstrapped against a control
  plane over ADS (also ``python -m controlplane.demo.envoy`` for containers);
* :mod:`controlplane.demo.backends` serves tiny named HTTP backends (also
  ``python -m controlplane.demo.backends``);
* :mod:`controlplane.demo.run` wires them together behind ``pilotfish demo``.

``hello-world/hello.yaml`` is a copy of ``examples/hello-world/hello.yaml``
shipped as package data, so the demo works from an installed wheel.
"""
