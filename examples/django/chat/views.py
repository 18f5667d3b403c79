"""WebSocket views next to ordinary ones: each gets the HttpRequest, then the WebSocket,
then the URL's parameters, and may refuse with any HttpResponse before using the socket."""

from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404

from chat.models import Message
from wsgiws import WebSocket
from wsgiws.django import websocket


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("an ordinary Django view\n", content_type="text/plain")


def demo_login(request: HttpRequest, name: str) -> HttpResponse:
    """Logs in as ``name`` (created on first use): the demo's stand-in for a login form."""
    user, _ = get_user_model().objects.get_or_create(username=name)
    login(request, user)
    return HttpResponse(f"logged in as {name}\n", content_type="text/plain")


@websocket
def echo(request: HttpRequest, ws: WebSocket) -> HttpResponse | None:
    if not request.user.is_authenticated:
        return HttpResponseForbidden("log in first\n")  # still HTTP: nothing accepted yet
    for message in ws:
        ws.send(message)
    return None


@websocket
def bye(request: HttpRequest, ws: WebSocket) -> HttpResponse | None:
    """Echoes one message, then the server closes (4000)."""
    if not request.user.is_authenticated:
        return HttpResponseForbidden("log in first\n")
    ws.send(ws.receive())
    ws.close(4000, "done here")
    return None


@login_required  # anonymous: redirected to LOGIN_URL, like any Django view
@websocket
def chat(request: HttpRequest, ws: WebSocket, room: str) -> None:
    """Stores every message and answers with how many the room has: a query per message."""
    name = request.user.get_username()
    request.session["last_room"] = room
    for text in ws:
        Message.objects.create(room=room, author=name, text=str(text))
        count = Message.objects.filter(room=room).count()
        ws.send(f"{name}@{room} #{count}: {text}")


@permission_required("chat.view_message", raise_exception=True)  # else 403
@websocket
def staff(request: HttpRequest, ws: WebSocket) -> None:
    ws.send(f"hello {request.user.get_username()}, {Message.objects.count()} messages")
    for _ in ws:
        pass


@websocket
def article(request: HttpRequest, ws: WebSocket, number: int) -> None:
    message = get_object_or_404(Message, pk=number)  # Http404 before accepting: a 404
    ws.send(message.text)


@websocket(origins=["*"])  # this route says otherwise: any site's pages may connect
def feed(request: HttpRequest, ws: WebSocket) -> None:
    ws.send(f"{Message.objects.count()} messages so far")
