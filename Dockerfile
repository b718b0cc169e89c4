# A served student: `distil serve` on a trained artifact, with no torch (the numpy students: ngram,
# static, tuned, ensemble). Nothing is downloaded at run time.
#
#   distil export students/ --out ship/ --no-heldout      # optional: leave customer texts out
#   docker build -t my-student --build-arg ARTIFACT=ship .
#   docker run -p 8000:8000 -e DISTIL_TOKEN=$(openssl rand -hex 24) my-student
#
# With the teacher behind it, add the task file and its key:
#   docker run ... -v $PWD/task.toml:/srv/task.toml:ro -e OPENAI_API_KEY=... my-student \
#     /srv/model --task /srv/task.toml --host 0.0.0.0 --token-env DISTIL_TOKEN
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/distil
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip install -c constraints.txt ".[serve]"

ARG ARTIFACT=students
COPY ${ARTIFACT} /srv/model
RUN useradd --system --no-create-home distil
USER distil

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
ENTRYPOINT ["distil", "serve"]
CMD ["/srv/model", "--host", "0.0.0.0", "--port", "8000", "--token-env", "DISTIL_TOKEN"]
