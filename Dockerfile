# One image for the Pilotfish containers of docker-compose.yml: the control
# plane (`pilotfish serve`), the storefront services
# (`python -m controlplane.demo.storefront`), their sidecar agents
# (`pilotfish agent`) and the gateway's bootstrap
# (`python -m controlplane.demo.envoy --write-bootstrap`). The gateway itself
# is the official envoyproxy/envoy image, so no Envoy binary is installed here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
COPY agents ./agents
COPY pilotfish ./pilotfish
RUN pip install . && rm -rf /src

WORKDIR /
CMD ["pilotfish", "--help"]
