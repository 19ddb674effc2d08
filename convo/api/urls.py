from django.urls import path

from convo.api import views

urlpatterns = [
    path("conversations/", views.ConversationCreateView.as_view(), name="api-conversation-create"),
    path("conversations/<str:conversation_id>/messages/", views.MessageListCreateView.as_view(),
         name="api-messages"),
]
