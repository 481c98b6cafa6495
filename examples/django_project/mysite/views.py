"""The views: a page, a form POST with CSRF, a file upload, a streamed response."""

import hashlib
import os
import time

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render


def index(request):
    return HttpResponse(f"Hello from Django, worker pid {os.getpid()}\n",
                        content_type="text/plain")


def form(request):
    # GET renders the form with its CSRF token; POST is accepted only with that token
    # (CsrfViewMiddleware answers 403 otherwise).
    name = request.POST.get("name", "") if request.method == "POST" else ""
    return render(request, "form.html", {"name": name,
                                         "secure": request.is_secure()})


def upload(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    file = request.FILES["file"]
    data = file.read()
    return JsonResponse({"filename": file.name, "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()})


def stream(request):
    count = int(request.GET.get("n", "5"))

    def lines():
        for i in range(count):
            yield f"line {i} at {time.monotonic():.3f}\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")
