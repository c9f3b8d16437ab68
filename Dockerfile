# pgx-cds: the CDS Hooks service with the bundled knowledge, served by gunicorn.
#   docker build -t pgx-cds .
#   docker run -p 8080:8080 -e CDS_BASE_URL=https://cds.example.org \
#     -e CDS_TRUSTED_ISSUERS=/config/trusted-issuers.yaml -v $PWD/config:/config:ro \
#     -v pgx-cds-data:/srv/pgx-cds/var pgx-cds
# Development mode (no JWT; never with real patient data): -e CDS_AUTH=off
# With PostgreSQL and Redis: compose.yaml.

FROM python:3.11-slim-bookworm AS build
# durable-rules ships no wheels: its C core compiles here, and the compiler stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1
COPY . /src
# The same script tests/packaging runs in CI: wheel with the knowledge, exact versions, `cds validate`.
RUN sh /src/docker/install.sh /src /opt/venv

FROM python:3.11-slim-bookworm
# The patient summary PDF needs a Unicode TrueType font (cds/patient_summary/pdf.py: DejaVu Sans).
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /srv/pgx-cds --shell /usr/sbin/nologin pgx \
 && mkdir -p /srv/pgx-cds/var \
 && chown pgx /srv/pgx-cds/var
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
# Validated knowledge, cached on the volume (the image's home is not writable): the first start of an
# image fills it, later starts (and `cds` commands in the container) skip re-reading the YAML.
ENV CDS_KNOWLEDGE_CACHE=/srv/pgx-cds/var/knowledge-cache
# The audit database (SQLite by default), its spool and the pseudonym key live in ./var: a volume, so
# an audit trail outlives the container. Replicas use PostgreSQL (DATABASE_URL) and share CDS_AUDIT_KEY.
WORKDIR /srv/pgx-cds
VOLUME ["/srv/pgx-cds/var"]
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["cds", "serve", "--host", "0.0.0.0", "--port", "8080"]
