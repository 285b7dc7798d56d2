# Image for every archive service on ECS (terraform/): `vna serve` (gateway, the default) and
# `vna lifecycle run` (lifecycle worker), `vna dr drill` (one-off DR drill).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VNA_DATA_DIR=/data \
    VNA_HTTP_HOST=0.0.0.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY vna ./vna
COPY lifecycle ./lifecycle
RUN pip install . && rm -rf /src

# Non-root user; /data (VNA_DATA_DIR scratch) and /tmp are declared volumes so that a
# read-only root filesystem (as on ECS) still has somewhere to write, owned by that user.
RUN groupadd --system --gid 10001 vna \
    && useradd --system --uid 10001 --gid vna --home-dir /data --shell /usr/sbin/nologin vna \
    && mkdir -p /data \
    && chown vna:vna /data
VOLUME ["/data", "/tmp"]
WORKDIR /data
USER 10001:10001

# 8080: DICOMweb (HTTP), 11112: DIMSE.
EXPOSE 8080 11112

# Readiness: "healthy" means the catalogue and the object store answer, which is what routing
# (Swarm, Compose's depends_on) should wait for; /healthz is the cheap liveness answer.
HEALTHCHECK --interval=30s --timeout=8s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=7).status == 200 else 1)"]

CMD ["vna", "serve"]
