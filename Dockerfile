# One image for web (daphne), Celery worker and Celery beat; docker-compose.yml picks
# the command. Settings come from the environment (config/settings/production.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    DJANGO_STATIC_ROOT=/app/staticfiles

WORKDIR /app

# Dependencies first, so code changes reuse this layer. The lock pins the exact set.
COPY requirements.in requirements.lock ./
RUN pip install -r requirements.in -c requirements.lock

COPY . .

# Static files for a proxy or CDN in front; base settings need no secrets to run this.
RUN DJANGO_SETTINGS_MODULE=config.settings.base python manage.py collectstatic --noinput -v 0 \
    && useradd --create-home --uid 1000 churn \
    && chown -R churn:churn /app

USER churn
EXPOSE 8000

CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "config.asgi:application"]
