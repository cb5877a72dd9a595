FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tokenbench ./tokenbench
RUN pip install --no-cache-dir .
ENTRYPOINT ["tokenbench"]
