# syntax=docker/dockerfile:1
# The llm-monitor image: daemon, doctor, mock, and Locust master/worker (llm-monitor[load]).

# Build stage: has compilers, in case a dependency has no wheel for the platform.
FROM python:3.11-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY migrations ./migrations
COPY locustfiles ./locustfiles
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[load]"

# Final stage: slim, no compilers, not root.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels "llm-monitor[load]" \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin monitor
USER monitor
WORKDIR /home/monitor
# 9464 API/metrics/dashboard, 8000 the mock, 8089 Locust web UI, 5557 Locust master
EXPOSE 9464 8000 8089 5557
ENTRYPOINT ["llm-monitor"]
CMD ["run", "-c", "/etc/llm-monitor/monitor.yaml"]
