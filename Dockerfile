# syntax=docker/dockerfile:1
# The base image is an argument so that the image can also be built where no
# registry is reachable, from a locally built base (scripts/container-check
# makes one with debootstrap). Any base with Python 3.11+ as `python3` works;
# nothing here assumes where that Python lives.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements.txt /tmp/requirements.txt
# /docs serves only Swagger UI from swagger-ui-py: its Swagger Editor (21 MB) goes.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.txt \
 && rm -f /opt/venv/lib/python3*/site-packages/swagger_ui/static/swagger-editor*
# The migration bootstrap, a distribution of its own: pip cannot check a hash of
# a local folder, so it comes after the hash-locked packages, which hold all its
# dependencies (--no-deps installs nothing else).
COPY packages/alembic-lockstep /tmp/alembic-lockstep
RUN /opt/venv/bin/pip install --no-deps /tmp/alembic-lockstep
COPY alembic.ini settings.py /app/
COPY alembic /app/alembic
COPY service /app/service
# Compile ahead: the service runs as a user that cannot write next to its code.
RUN /opt/venv/bin/python -m compileall -q /app /opt/venv/lib

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    WEB_CONCURRENCY=2 \
    LOG_FORMAT=json
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
# A numeric user: no user database needed in the base, and never root.
USER 10001:10001
EXPOSE 8000
# uvicorn drains in-flight requests, the bootstrap rolls back a running
# revision and releases the lock, then the process exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/livez\", timeout=2)"]
ENTRYPOINT ["python", "-m", "service", "--host", "0.0.0.0"]
