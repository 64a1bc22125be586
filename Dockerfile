# One image for every role: public API, private API, Celery worker and beat, the dev chain and
# one-off commands (scripts/entrypoint.sh). `docker compose` runs one container per role.

# anvil (the dev chain) from the pinned npm package; only its binary reaches the final image.
FROM node:20-bookworm-slim AS anvil
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
 && cp node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /build/anvil

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STORAGE_DIR=/data/occ_storage \
    PROMETHEUS_MULTIPROC_DIR=/data/metrics \
    PORT=5000 \
    PRIVATE_PORT=5001 \
    ANVIL_BIN=/usr/local/bin/anvil

WORKDIR /app
# Pinned runtime requirements (requirements.txt pins every package with ==).
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY --from=anvil /build/anvil /usr/local/bin/anvil
COPY . .

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin occ \
 && mkdir -p /data/occ_storage /data/beat /data/metrics /chain \
 && chown -R occ /data /chain
USER occ
VOLUME ["/data"]
EXPOSE 5000 5001

# The API roles answer /health; compose gives worker and beat their own checks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/app/scripts/entrypoint.sh", "healthcheck"]

ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["api"]
