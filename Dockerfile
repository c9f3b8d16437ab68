# pgx-cds: the CDS Hooks service with the bundled knowledge, served by gunicorn.
#   docker build -t pgx-cds .
#   docker run -p 8080:8080 -e CDS_TRUSTED_ISSUERS=/config/trusted-issuers.yaml -v $PWD/config:/config:ro pgx-cds
# Development mode (no JWT; never with real patient data): -e CDS_AUTH=off

FROM python:3.11-slim AS build
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1
# Dependencies first, so a knowledge-only change rebuilds in seconds.
COPY pyproject.toml README.md ./
RUN mkdir cds && touch cds/__init__.py && pip install --quiet . && pip uninstall --quiet -y pgx-cds
COPY cds ./cds
COPY guidelines ./guidelines
COPY rules ./rules
COPY hooks ./hooks
# Editable install: the package finds guidelines/, rules/ and hooks/ beside it in /app.
RUN pip install --quiet --no-deps -e . && cds validate /app

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin pgx
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
RUN mkdir -p /app/var && chown pgx /app/var
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 CDS_KNOWLEDGE_DIR=/app
WORKDIR /app
USER pgx
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
CMD ["cds", "serve", "--host", "0.0.0.0", "--port", "8080"]
