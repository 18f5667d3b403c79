from chat import views
from django.urls import path

urlpatterns = [
    path("", views.index),
    path("login/<slug:name>/", views.demo_login),
    path("ws/echo/", views.echo),
    path("ws/bye/", views.bye),
    path("ws/chat/<slug:room>/", views.chat),
    path("ws/staff/", views.staff),
    path("ws/article/<int:number>/", views.article),
    path("ws/feed/", views.feed),
]
