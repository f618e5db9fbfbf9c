FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1
COPY pyproject.toml README.md celeryconfig.py ./
COPY api ./api
COPY baton ./baton
COPY models ./models
COPY orchestration ./orchestration
COPY workers ./workers
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["gunicorn", "-c", "python:baton.gunicorn_conf", "--bind", "0.0.0.0:8000", "api:create_app()"]
