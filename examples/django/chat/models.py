from django.db import models


class Message(models.Model):
    room = models.SlugField()
    author = models.CharField(max_length=150)
    text = models.TextField()
    sent = models.DateTimeField(auto_now_add=True)
