# One image for every cachestorm role in docker-compose.yml: the notifier, the Locust master and
# its workers. The services themselves (Redis, PostgreSQL) come from their official images.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Requirements first, so that editing the code does not invalidate the dependency layer.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Nothing here needs root; the results volume is made writable for this user below.
RUN useradd --create-home --uid 1000 cachestorm \
    && mkdir -p /results \
    && chown cachestorm:cachestorm /results
USER cachestorm

EXPOSE 8089 5557 8765
CMD ["locust", "-f", "locustfile.py", "--help"]
