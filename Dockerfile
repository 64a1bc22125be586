# One image for the gateway, its private API, Celery worker and beat, and the dev chain.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STORAGE_DIR=/data/occ_storage \
    PORT=5000

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund || npm ci --no-audit --no-fund
COPY . .

RUN useradd --system --uid 10001 occ && mkdir -p /data/occ_storage && chown -R occ /data
USER occ
VOLUME ["/data"]
EXPOSE 5000 5001

HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" || exit 1

CMD ["sh", "-c", "exec gunicorn --config scripts/gunicorn.conf.py --bind 0.0.0.0:${PORT} api.wsgi:app"]
