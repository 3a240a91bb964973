# One image for every service of ssf-stack: the transmitter (`ssf transmitter serve`), the
# receiver with its protected demo API (`ssf receiver serve`) and the demo identity provider
# (`python -m demo.idp_serve`). docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Metadata first, then the packages that setuptools installs (see pyproject.toml).
COPY pyproject.toml README.md ./
COPY ssf ./ssf
COPY transmitter ./transmitter
COPY receiver ./receiver
COPY conformance ./conformance
COPY ssfcli ./ssfcli
COPY demo ./demo
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/ssf --create-home --shell /usr/sbin/nologin ssf

# Unprivileged from here on; relative paths (SQLite defaults, generated secrets) land in /var/lib/ssf.
USER ssf
WORKDIR /var/lib/ssf
EXPOSE 8080 8081 9000

# Each compose service sets its own command and health check.
CMD ["ssf", "--help"]
