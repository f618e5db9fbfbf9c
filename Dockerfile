FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 BATON_HOME=/var/lib/baton
COPY pyproject.toml README.md celeryconfig.py gunicorn.conf.py ./
COPY api ./api
COPY baton ./baton
COPY models ./models
COPY orchestration ./orchestration
COPY workers ./workers
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/baton --create-home baton \
    && chown baton:baton /var/lib/baton
# Never root: a compromised worker or API process owns nothing but BATON_HOME (beat's
# schedule, the metrics directories), which a named volume inherits.
USER baton
EXPOSE 8000 5555 9808
CMD ["baton", "api", "--port", "8000"]
