"""The WSGI entry point, exactly as `django-admin startproject` writes it.

    prefork --chdir examples/django_project mysite.wsgi:application --workers 4
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
