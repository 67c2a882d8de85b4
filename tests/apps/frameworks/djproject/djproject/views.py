"""Views the tests drive: an upload digest, a streamed response, an async view."""

import asyncio
import hashlib

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def home(request):
    return HttpResponse("hello from django", content_type="text/plain")


@csrf_exempt
def upload(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    f = request.FILES["file"]
    digest = hashlib.sha256()
    size = 0
    for chunk in f.chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse(
        {
            "name": f.name,
            "size": size,
            "sha256": digest.hexdigest(),
            "note": request.POST.get("note", ""),
        }
    )


def stream(request):
    count = int(request.GET.get("n", "5"))

    def lines():
        for i in range(count):
            yield f"line {i}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain")


async def async_view(request):
    await asyncio.sleep(0.01)
    return JsonResponse({"async": True, "path": request.path, "q": request.GET.get("q")})
