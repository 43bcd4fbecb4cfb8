# syntax=docker/dockerfile:1
# pagestream: the server in a container.
#   docker build -t pagestream .
#   docker run -d -p 8000:8000 -v pagestream-data:/data -e PAGESTREAM_API_KEYS="$KEY:me:admin" pagestream
#   ($KEY: at least 16 characters, e.g. python3 -c 'import secrets; print(secrets.token_hex(16))')
# Every setting is a PAGESTREAM_* environment variable (see the README's settings table).
# tests/test_docker.py checks this file without Docker: COPY sources, the command, the health
# check, the user, and hadolint.

# -- build: the wheel (it carries the UI and the JSON Schema contract inside the package)
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY web/ web/
COPY shared_schemas/ shared_schemas/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- runtime: the wheel and its dependencies from PyPI, in a virtual environment
FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="pagestream" \
      org.opencontainers.image.description="A self-hosted document job server that streams every page's text over Server-Sent Events" \
      org.opencontainers.image.licenses="MIT"

# Nothing from apt: every dependency is a wheel that ships its own native code (pypdfium2 its
# PDFium, psycopg[binary] its libpq and OpenSSL, selectolax its lexbor, uvloop its libuv), and
# what those link against (libc, libgcc_s, zlib) is in the slim image. --only-binary makes a
# dependency without a wheel for this platform fail the build here instead of trying to
# compile it without a compiler.
COPY --from=build /wheels/ /tmp/wheels/
RUN python -m venv /opt/pagestream \
    && /opt/pagestream/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
       /tmp/wheels/pagestream-*.whl \
    && rm -rf /tmp/wheels

# A system user without a shell or home; numeric in USER so that runAsNonRoot can verify it.
# /data belongs to it, so a named volume mounted there starts out writable.
RUN groupadd --system --gid 10001 pagestream \
    && useradd --system --uid 10001 --gid pagestream --no-create-home --home-dir /data \
       --shell /usr/sbin/nologin pagestream \
    && mkdir /data \
    && chown pagestream:pagestream /data

ENV PATH="/opt/pagestream/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAGESTREAM_DATA_DIR=/data \
    PAGESTREAM_PORT=8000

# The SQLite database and the spool of uploads (with --db postgresql://… only the spool, for
# uploads on their way into the store).
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8000

# No curl in a slim image: Python's urllib, with proxies from the environment ignored, on the
# port the server listens on. An error status, or no answer within the timeout, is unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('PAGESTREAM_PORT', '8000') + '/healthz', timeout=4)"]

# Exec form, so the server is PID 1 and gets docker stop's SIGTERM: it lets the page being
# extracted finish and puts the job back at the head of the queue (give it time: --stop-timeout).
# Without API keys (PAGESTREAM_API_KEYS or PAGESTREAM_API_KEYS_FILE) the server refuses to
# listen on 0.0.0.0 unless PAGESTREAM_ALLOW_OPEN=true. `docker run … pagestream worker`
# runs the queue's worker instead (PostgreSQL mode).
ENTRYPOINT ["pagestream"]
CMD ["serve", "--host", "0.0.0.0"]
