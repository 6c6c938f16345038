"""The project's URLs plus views that use or misuse the database on purpose."""

import threading
import time

from django.db import connection, transaction
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def backend(request):
    return JsonResponse(
        {
            "backend": _backend(),
            "thread": threading.get_ident(),
            "in_atomic_block": connection.in_atomic_block,
        }
    )


def broken_transaction(request):
    # A transaction opened by hand and aborted by an error that escapes the view.
    transaction.set_autocommit(False)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 / 0")


def leaked_atomic(request):
    # An atomic block entered and never left (a bug in a view).
    transaction.atomic().__enter__()
    _backend()
    return JsonResponse({"leaked": True})


def error_in_atomic(request):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")


def slow(request):
    _backend()
    time.sleep(1.0)
    return JsonResponse({"slow": True})


def stream(request):
    # A sync iterator: Django consumes it through sync_to_async, on the request's thread.
    def rows():
        for _ in range(3):
            yield f"{_backend()},{threading.get_ident()}\n"

    return StreamingHttpResponse(rows(), content_type="text/plain")


urlpatterns = [
    path("t/backend/", backend),
    path("t/broken-transaction/", broken_transaction),
    path("t/leaked-atomic/", leaked_atomic),
    path("t/error-in-atomic/", error_in_atomic),
    path("t/slow/", slow),
    path("t/stream/", stream),
    *project_urlpatterns,
]
