# syntax=docker/dockerfile:1
# The fabric's control-plane image: `docker run IMAGE` runs `fabric worker`; any other fabric
# command works too (`docker run IMAGE agent --pool gpu-a`, `docker run IMAGE pool list`).
# Configuration comes from the environment: FABRIC_TEMPORAL_ADDRESS, FABRIC_DATABASE_URL,
# FABRIC_SECRET_KEY, FABRIC_NAMESPACE, FABRIC_TASK_QUEUE (see docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: install the package and its dependencies into a virtualenv -------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/inferofabric
WORKDIR /src
# .dockerignore limits the context to pyproject.toml, README.md and the package folders.
COPY . .
RUN /opt/inferofabric/bin/pip install . \
    && /opt/inferofabric/bin/fabric --help >/dev/null

# -- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/inferofabric/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FABRIC_HOME=/var/lib/inferofabric
RUN groupadd --system --gid 10001 fabric \
    && useradd --system --uid 10001 --gid fabric --home-dir /var/lib/inferofabric --shell /usr/sbin/nologin fabric \
    && install -d -o fabric -g fabric -m 0700 /var/lib/inferofabric
COPY --from=build /opt/inferofabric /opt/inferofabric
USER 10001:10001
WORKDIR /var/lib/inferofabric
ENTRYPOINT ["fabric"]
CMD ["worker"]
