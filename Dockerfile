# One image for the web server and every worker; the compose file picks the command.
FROM python:3.11-slim

# CPU build by default; for GPU workers build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Static files live in the image, not under /data (a volume would hide them after an upgrade).
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 AIGC_DATA_DIR=/data AIGC_STATIC_ROOT=/app/static

WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng && rm -rf /var/lib/apt/lists/*
RUN pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
COPY pyproject.toml README.md ./
COPY aigc_saas aigc_saas
COPY generators generators
COPY hardware hardware
COPY scenarios scenarios
COPY seeds seeds
COPY manage.py ./
RUN pip install ".[s3]" && python manage.py collectstatic --noinput -v 0

EXPOSE 8000
CMD ["python", "-m", "gunicorn", "aigc_saas.wsgi:application", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--timeout", "120"]
