from django.conf import settings
from django.urls import path, re_path
from django.views.static import serve

from . import views

urlpatterns = [
    path("", views.index),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
    # Static files through a view: FileResponse hands the open file to wsgi.file_wrapper,
    # which prefork sends with sendfile(2). (In production nginx serves them.)
    re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT}),
]
