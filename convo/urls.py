from django.urls import include, path

from convo import views, views_canned, views_compliance, views_queue

office_patterns = [
    path("", views.inbox, name="inbox"),
    path("conversations/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("conversations/<uuid:conversation_id>/takeover/", views.conversation_takeover, name="takeover"),
    path("conversations/<uuid:conversation_id>/reply/", views.conversation_reply, name="reply"),
    path("conversations/<uuid:conversation_id>/hand-back/", views.conversation_hand_back, name="hand_back"),
    path("conversations/<uuid:conversation_id>/close/", views.conversation_close, name="close"),
    path("conversations/<uuid:conversation_id>/curated-answers/", views.conversation_curated_answer,
         name="curated_answer"),
    path("conversations/<uuid:conversation_id>/actions/", views.action_propose, name="action_propose"),
    path("conversations/<uuid:conversation_id>/actions/<uuid:run_id>/undo/", views.action_undo, name="action_undo"),
    path("messages/<uuid:message_id>/flag/", views.message_flag, name="message_flag"),
    path("actions/<uuid:run_id>/decide/", views.action_decide, name="action_decide"),
    path("search/", views.knowledge_search, name="search"),
    path("canned/", views_canned.canned_response_list, name="canned_responses"),
    path("conversations/<uuid:conversation_id>/context/", views.conversation_context, name="context"),
    path("queue/claim-next/", views_queue.queue_claim_next, name="claim_next"),
    path("items/<uuid:item_id>/claim/", views_queue.item_claim, name="item_claim"),
    path("items/<uuid:item_id>/release/", views_queue.item_release, name="item_release"),
    path("items/<uuid:item_id>/needed-human/", views_queue.item_needed_human, name="item_needed_human"),
    # Compliance (officers and administrators): search, records, evidence exports.
    path("compliance/", views_compliance.compliance_search, name="compliance"),
    path("compliance/conversations/<uuid:conversation_id>/", views_compliance.compliance_conversation,
         name="compliance_conversation"),
    path("compliance/conversations/<uuid:conversation_id>/export.<str:fmt>",
         views_compliance.compliance_conversation_export, name="compliance_conversation_export"),
    path("compliance/turns/<uuid:turn_id>/", views_compliance.compliance_turn, name="compliance_turn"),
    path("compliance/export.<str:fmt>", views_compliance.compliance_export, name="compliance_export"),
]

chat_patterns = [
    path("", views.chat, name="chat"),
    path("new/", views.chat_new, name="chat_new"),
]

urlpatterns = [
    path("chat/", include((chat_patterns, "convo"))),
    path("office/", include((office_patterns, "office"))),
]
