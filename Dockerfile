FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Agents run as children of the worker: as an unprivileged user, the
# worker's environment and memory are out of their reach (agentvine/security.py).
ENV AGENTVINE_VAR_DIR=/var/lib/agentvine/var
RUN useradd --system --home-dir /var/lib/agentvine agentvine \
    && mkdir -p /var/lib/agentvine/var /var/lib/agentvine/workspaces \
    && chown -R agentvine:agentvine /var/lib/agentvine
USER agentvine
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "agentvine.asgi:application"]
