"""A minimal Django project: no database, CSRF on, static files served by a view.

Only what the example needs. For production: set DJANGO_SECRET_KEY and
DJANGO_ALLOWED_HOSTS, and let nginx serve /static/ (README: Behind nginx).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "mysite" / "templates"],
    "OPTIONS": {"context_processors": ["django.template.context_processors.csrf"]},
}]
DATABASES: dict[str, dict[str, str]] = {}

# Behind nginx, which sets X-Forwarded-Proto (prefork trusts it from --forwarded-allow-ips
# peers and unix-socket peers, and sets wsgi.url_scheme, which request.is_secure() reads).
USE_X_FORWARDED_HOST = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
USE_TZ = True
