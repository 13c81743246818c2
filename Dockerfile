# syntax=docker/dockerfile:1
# One image, every role: the command picks it (serve, scheduler --no-worker, worker).

# --- builder: a virtual environment with the service and its dependencies ------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/digest
COPY pyproject.toml README.md ./
COPY digest ./digest
COPY scheduler ./scheduler
COPY templates ./templates
RUN /opt/digest/bin/pip install --no-compile . \
    && /opt/digest/bin/python -m compileall -q /opt/digest/lib

# --- final: the venv alone, no compiler, no pip cache, not root ------------------------------
FROM python:3.11-slim

ENV PATH=/opt/digest/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIGEST_LOG_FORMAT=json \
    DIGEST_MAIL_URL=maildir:///var/lib/digest/outbox \
    DIGEST_MEDIA_CACHE_DIR=/var/lib/digest/media-cache

RUN groupadd --system --gid 10001 digest \
    && useradd --system --uid 10001 --gid digest --home-dir /var/lib/digest --create-home digest

COPY --from=builder /opt/digest /opt/digest

USER 10001:10001
WORKDIR /var/lib/digest
EXPOSE 8000

# The web's check; compose.yaml gives the scheduler and the workers their heartbeat checks.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["digest", "healthcheck", "--role", "web"]

ENTRYPOINT ["digest"]
CMD ["serve", "--host", "0.0.0.0"]
