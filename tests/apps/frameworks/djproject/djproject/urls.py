"""URLs: the admin, plus the views the tests drive."""

from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("upload/", views.upload),
    path("stream/", views.stream),
    path("async/", views.async_view),
    path("", views.home),
]
