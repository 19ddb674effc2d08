from django.urls import include, path

from convo import views

office_patterns = [
    path("", views.inbox, name="inbox"),
    path("conversations/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("conversations/<uuid:conversation_id>/takeover/", views.conversation_takeover, name="takeover"),
    path("conversations/<uuid:conversation_id>/reply/", views.conversation_reply, name="reply"),
    path("conversations/<uuid:conversation_id>/hand-back/", views.conversation_hand_back, name="hand_back"),
    path("conversations/<uuid:conversation_id>/close/", views.conversation_close, name="close"),
    path("conversations/<uuid:conversation_id>/curated-answers/", views.conversation_curated_answer,
         name="curated_answer"),
    path("actions/<uuid:run_id>/decide/", views.action_decide, name="action_decide"),
    path("search/", views.knowledge_search, name="search"),
]

chat_patterns = [
    path("", views.chat, name="chat"),
    path("new/", views.chat_new, name="chat_new"),
]

urlpatterns = [
    path("chat/", include((chat_patterns, "convo"))),
    path("office/", include((office_patterns, "office"))),
]
