# Gatehouse: one image, one app process per container (run several replicas, each with its
# own EXECUTOR_ID). Configuration comes from environment variables only; see README.md.
FROM python:3.12-slim

# The app finds templates/, static/, migrations/ and alembic.ini next to the `webapp`
# package (Path(__file__).parent.parent), so PYTHONPATH=/app makes the copy in /app shadow
# the one `pip install .` puts in site-packages (which provides the dependencies and the
# `webapp` console script).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 gatehouse \
    && useradd --system --uid 10001 --gid gatehouse --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gatehouse

WORKDIR /app

COPY pyproject.toml README.md ./
COPY webapp/ webapp/
RUN pip install . \
    && rm -rf build gatehouse.egg-info

COPY alembic.ini dbos-config.yaml ./
COPY migrations/ migrations/
COPY templates/ templates/
COPY static/ static/
# The sample people files: the web form's import sources (IMPORT_FILES_DIR=samples).
COPY samples/ samples/

# Production uses PostgreSQL; var/ only lets a bare `docker run` (development defaults,
# SQLite under var/) work as the unprivileged user.
RUN mkdir -p var && chown gatehouse:gatehouse var

USER gatehouse:gatehouse

EXPOSE 8000

# python:3.12-slim has no curl: probe liveness with the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# Migrations first (idempotent); `exec` makes the server PID 1 so it receives SIGTERM
# from `docker stop` and shuts down gracefully.
CMD ["sh", "-c", "webapp migrate && exec webapp serve --host 0.0.0.0 --port 8000"]
