"""Compliance pages of the office: conversation search, conversation and decision records, and
evidence exports (JSON bundle, printable HTML report, PDF). Reads and audit go through
``convo.compliance``; this module only checks the role, parses the request and renders."""

from __future__ import annotations

import io
import json
import os
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from convo.compliance import (
    FORMATS,
    PAGE_SIZE,
    ExportRefused,
    ExportScope,
    SearchForm,
    conversation_record_open,
    conversation_search,
    evidence_export,
    export_max_conversations,
    export_max_days,
    may_audit,
    search_options,
    turn_record_open,
)
from convo.models import Conversation, ConversationStatus, Decision, Turn
from convo.views import RESOLUTIONS
from governance.evidence import HASH_RECIPE, bundle_verify

FIELD_LABELS = {"customer": "Customer", "from": "From", "to": "To", "intent": "Intent", "decision": "AI decision",
                "status": "Status", "resolution": "Resolution", "model_version": "Model version",
                "prompt_version": "Prompt version"}


def _compliance_user(request: HttpRequest):
    if not may_audit(request.user):
        raise PermissionDenied("Compliance views are for compliance officers and administrators.")
    return request.user


def _render(request: HttpRequest, template: str, context: dict, *, status: int = 200) -> HttpResponse:
    # The navigation entry shows here even where the context processor is not registered.
    return render(request, template, {**context, "nav_compliance": True}, status=status)


def _query_without(request: HttpRequest, *keys: str) -> str:
    query = request.GET.copy()
    for key in keys:
        query.pop(key, None)
    return query.urlencode()


@login_required
@require_GET
def compliance_search(request: HttpRequest) -> HttpResponse:
    """Find conversations by customer, dates, intent, outcome and versions (50 a page)."""
    _compliance_user(request)
    options = search_options()
    form = SearchForm(request.GET or None, options=options)
    status = 200
    page = None
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        filters = form.cleaned_data if form.is_bound else {}
        page = Paginator(conversation_search(filters=filters), PAGE_SIZE).get_page(request.GET.get("page"))
    error_list = [(name if name in FIELD_LABELS else "", FIELD_LABELS.get(name, ""), message)
                  for name, messages in form.errors.items() for message in messages]
    valid = not form.is_bound or form.is_valid()
    can_export = valid and form.is_bound and bool(form.cleaned_data.get("from") and form.cleaned_data.get("to"))
    return _render(request, "compliance/search.html", {
        "form": form, "options": options, "page": page, "status_choices": ConversationStatus.choices,
        "decision_choices": Decision.choices, "query": _query_without(request, "page"),
        "can_export": can_export, "error_list": error_list, "resolutions": RESOLUTIONS, "max_days": export_max_days(), "max_conversations": export_max_conversations(),
    }, status=status)


@login_required
@require_GET
def compliance_conversation(request: HttpRequest, conversation_id) -> HttpResponse:
    """The full record of one conversation (logged as ``compliance.viewed``)."""
    user = _compliance_user(request)
    try:
        record = conversation_record_open(actor=user, conversation_id=conversation_id)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.")
    return _render(request, "compliance/conversation.html", {"record": record, "c": record.conversation})


@login_required
@require_GET
def compliance_turn(request: HttpRequest, turn_id) -> HttpResponse:
    """The full decision record of one AI turn (logged as ``compliance.viewed``)."""
    user = _compliance_user(request)
    try:
        turn_record, record = turn_record_open(actor=user, turn_id=turn_id)
    except (Turn.DoesNotExist, Conversation.DoesNotExist):
        raise Http404("No such turn.")
    return _render(request, "compliance/turn.html", {"r": turn_record, "record": record, "c": record.conversation})


# --- exports ---------------------------------------------------------------------------------

def _refused(request: HttpRequest, fmt: str, message: str, errors: dict | None = None) -> HttpResponse:
    if fmt == "json":
        return JsonResponse({"error": message, "fields": errors or {}}, status=400)
    return _render(request, "compliance/export_refused.html", {"message": message, "errors": errors or {},
                                                              "query": request.GET.urlencode()}, status=400)


@login_required
@require_GET
def compliance_conversation_export(request: HttpRequest, conversation_id, fmt: str) -> HttpResponse:
    """One conversation's evidence: ``export.json``, ``export.html`` or ``export.pdf``."""
    if fmt not in FORMATS:
        raise Http404("Unknown export format.")
    user = _compliance_user(request)
    try:
        bundle = evidence_export(actor=user, scope=ExportScope(conversation_id=conversation_id), fmt=fmt)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.")
    return _export_response(request, bundle, fmt, name=f"conversation-{conversation_id}")


@login_required
@require_GET
def compliance_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The evidence of every conversation started in a date range (``from``/``to``, at most
    ``COMPLIANCE_EXPORT_MAX_DAYS``), optionally narrowed by the search filters."""
    if fmt not in FORMATS:
        raise Http404("Unknown export format.")
    user = _compliance_user(request)
    form = SearchForm(request.GET, options=search_options(), require_dates=True)
    if not form.is_valid():
        errors = {key: " ".join(str(e) for e in value) for key, value in form.errors.items()}
        return _refused(request, fmt, "Check the filters. " + " ".join(
            f"{FIELD_LABELS.get(key, 'Filters')}: {value}" for key, value in errors.items()), errors)
    try:
        bundle = evidence_export(actor=user, scope=ExportScope(filters=form.cleaned_data), fmt=fmt)
    except ExportRefused as exc:
        return _refused(request, fmt, exc.message, exc.errors)
    data = form.cleaned_data
    return _export_response(request, bundle, fmt, name=f"{data['from']:%Y%m%d}-{data['to']:%Y%m%d}")


def _export_response(request: HttpRequest, bundle: dict, fmt: str, *, name: str) -> HttpResponse:
    filename = f"tandem-evidence-{name}.{fmt}"
    if fmt == "json":
        response = HttpResponse(json.dumps(bundle, ensure_ascii=False, indent=2),
                                content_type="application/json; charset=utf-8")
        disposition = "attachment"
    elif fmt == "html":
        response = render(request, "compliance/report.html", report_context(bundle))
        disposition = "inline"
    else:
        response = HttpResponse(report_pdf(report_context(bundle)), content_type="application/pdf")
        disposition = "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response["Cache-Control"] = "no-store, private"
    return response


# --- the report (HTML and PDF from the same content) -----------------------------------------

def _with_datetimes(value: Any, key: str = "") -> Any:
    """A copy of ``value`` where ISO strings under keys ending in ``_at`` are datetimes (for
    the ``date`` filter); the bundle itself is left as exported."""
    if isinstance(value, dict):
        return {k: _with_datetimes(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_datetimes(v, key) for v in value]
    if isinstance(value, str) and key.endswith("_at"):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def report_context(bundle: dict) -> dict:
    """The bundle arranged for reading: each conversation's messages in order, a customer
    message followed by its turn's decision record and action run."""
    view = _with_datetimes(bundle)
    conversations = []
    for c in view["conversations"]:
        turns = {t["message_id"]: t for t in c["turns"]}
        runs = {r["id"]: r for r in c["action_runs"]}
        for t in c["turns"]:
            t["tool_call_json"] = _json(t["tool_call"])
        for r in c["action_runs"]:
            r["params_json"], r["result_json"] = _json(r["params"]), _json(r["result"])
        timeline = []
        for m in c["messages"]:
            turn = turns.get(m["id"])
            timeline.append({"message": m, "turn": turn,
                             "run": runs.get(turn["action_run_id"]) if turn and turn["action_run_id"] else None})
        conversations.append({**c, "timeline": timeline})
    problems = bundle_verify(bundle)
    proof = view["chain_proof"]
    return {
        "b": view, "conversations": conversations,
        "audit": [{**e, "data_json": _json(e["data"])} for e in view["audit"]], "proof": proof, "verification": proof["verification"],
        "export_event": view.get("export_event"), "problems": problems, "recipe": HASH_RECIPE,
        "recipe_object": json.dumps(HASH_RECIPE["hashed_object"], indent=2),
    }


_FONTS_READY = False


def _fonts() -> tuple[str, str]:
    """Bitstream Vera, shipped inside reportlab: Unicode text without system fonts."""
    global _FONTS_READY
    if not _FONTS_READY:
        import reportlab
        from reportlab.lib.fonts import addMapping
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        folder = os.path.join(os.path.dirname(reportlab.__file__), "fonts")
        for name, file in (("Vera", "Vera.ttf"), ("Vera-Bold", "VeraBd.ttf"), ("Vera-Italic", "VeraIt.ttf"),
                           ("Vera-BoldItalic", "VeraBI.ttf")):
            pdfmetrics.registerFont(TTFont(name, os.path.join(folder, file)))
        addMapping("Vera", 0, 0, "Vera")
        addMapping("Vera", 1, 0, "Vera-Bold")
        addMapping("Vera", 0, 1, "Vera-Italic")
        addMapping("Vera", 1, 1, "Vera-BoldItalic")
        _FONTS_READY = True
    return "Vera", "Vera-Bold"


def _when(value) -> str:
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    return "—" if value in (None, "") else str(value)


def _count(n: int, key: str) -> str:
    noun = key.replace("_", " ")
    return f"{n} {noun[:-1] if n == 1 and noun.endswith('s') else noun}"


def _num(value: Any, places: int) -> str:
    return f"{value:.{places}f}" if isinstance(value, (int, float)) else "—"


def _text(value: Any) -> str:
    if value in (None, "", [], {}):
        return "—"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return escape(str(value)).replace("\n", "<br/>")


def report_pdf(ctx: dict) -> bytes:
    """The report as a PDF (reportlab, in-process, built from ``report_context``)."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    regular, bold = _fonts()
    base = ParagraphStyle("base", fontName=regular, fontSize=8.5, leading=11, alignment=TA_LEFT)
    small = ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5)
    mono = ParagraphStyle("mono", parent=base, fontName="Courier", fontSize=6.5, leading=8)
    h1 = ParagraphStyle("h1", parent=base, fontName=bold, fontSize=16, leading=20, spaceAfter=4)
    h2 = ParagraphStyle("h2", parent=base, fontName=bold, fontSize=12, leading=15, spaceBefore=10, spaceAfter=4,
                        textColor=colors.HexColor("#1d3878"))
    h3 = ParagraphStyle("h3", parent=base, fontName=bold, fontSize=9.5, leading=12, spaceBefore=6, spaceAfter=2)
    grid = TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#c3ccd6")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f5")),
        ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ])
    facts_style = TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.3, colors.HexColor("#dce2e9")),
        ("LEFTPADDING", (0, 0), (-1, -1), 2), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ])
    width = A4[0] - 30 * mm

    def facts(rows: list[tuple[str, Any]], *, key_width: float = 38 * mm) -> Table:
        data = [[Paragraph(f"<font color='#55606e'>{escape(k)}</font>", small),
                 v if not isinstance(v, str) else Paragraph(v, base)] for k, v in rows]
        table = Table(data, colWidths=[key_width, width - key_width])
        table.setStyle(facts_style)
        return table

    def table(header: list[str], rows: list[list[Any]], widths: list[float], style=small) -> Table:
        data = [[Paragraph(f"<b>{escape(h)}</b>", small) for h in header]]
        data += [[c if not isinstance(c, str) else Paragraph(c, style) for c in row] for row in rows]
        t = Table(data, colWidths=[w * width for w in widths], repeatRows=1)
        t.setStyle(grid)
        return t

    b, verification = ctx["b"], ctx["verification"]
    story: list = [Paragraph("Tandem evidence report", h1)]
    scope = b["scope"]
    scope_text = (f"Conversation {scope.get('conversation')}" if scope["kind"] == "conversation"
                  else "Conversations matching " + ", ".join(f"{k} = {v}" for k, v in b["filters"].items()))
    export_event = ctx["export_event"] or {}
    summary = [
        ("Format", _text(b["format"])),
        ("Scope", _text(scope_text)),
        ("Generated", _text(f"{_when(b['generated_at'])} by {b['generated_by']['username']}")),
        ("Contents", _text(", ".join(_count(v, k) for k, v in b["counts"].items()))),
        ("Audit chain", _text(
            f"{'VERIFIED' if verification['ok'] else 'BROKEN'}: {verification['checked']} events from genesis to "
            f"seq {verification['head_seq']}, {verification['checkpoints_confirmed']} signed checkpoint(s) confirmed"
            + (f" — {verification['reason']}" if verification["reason"] else ""))),
        ("Bundle self-check", _text("holds: every event recomputes to its hash" if not ctx["problems"]
                                    else "; ".join(ctx["problems"]))),
        ("Export event", Paragraph(escape(f"seq {export_event.get('seq')} · {export_event.get('hash')}"), mono)),
        ("Bundle SHA-256", Paragraph(escape(str((export_event.get("data") or {}).get("bundle_sha256"))), mono)),
    ]
    if ctx["proof"]["checkpoint"]:
        cp = ctx["proof"]["checkpoint"]
        summary.append(("Signed checkpoint", Paragraph(escape(f"seq {cp['seq']} · {cp['hash']} · {cp['signed_at']}"),
                                                       mono)))
    story += [facts(summary), Spacer(1, 4 * mm)]

    for c in ctx["conversations"]:
        contact = c["contact"]
        who = contact["name"] or contact["email"] or contact["external_id"] or f"Visitor {contact['id'][-6:]}"
        story.append(Paragraph(escape(f"Conversation with {who}"), h2))
        story.append(facts([
            ("Conversation", Paragraph(escape(c["id"]), mono)),
            ("Customer", _text(" · ".join(x for x in (contact["name"], contact["email"], contact["external_id"]) if x))),
            ("Started", _text(_when(c["created_at"]))),
            ("Status", _text(f"{c['status']}{' · ' + c['resolution'] if c['resolution'] else ''}"
                             f"{' · closed ' + _when(c['closed_at']) if c['closed_at'] else ''}")),
            ("AI disclosed", _text("yes" if c["ai_disclosed"] else "no")),
            ("Rating", _text(f"{c['csat']['score']}/5 {c['csat']['comment']}" if c["csat"]["score"] else "")),
        ]))
        story.append(Paragraph("Transcript and decision records", h3))
        for entry in c["timeline"]:
            m, t, run = entry["message"], entry["turn"], entry["run"]
            label = {"customer": "Customer", "assistant": "Assistant (AI)", "agent": f"Agent {m['author'] or ''}",
                     "system": "System"}.get(m["role"], m["role"])
            redacted = " <font color='#8a5a00'>(redacted)</font>" if m["text_redacted"] else ""
            block = [Paragraph(f"<b>#{m['seq']} {escape(label)}</b> <font color='#55606e'>{_when(m['created_at'])}"
                               f"</font>{redacted}<br/>{_text(m['text'])}", base)]
            if t:
                mv, pv = t["model_version"] or {}, t["prompt_version"] or {}
                rows = [
                    ("Decision", _text(f"{t['decision'] or t['status']}{' (' + t['reason'] + ')' if t['reason'] else ''}")),
                    ("Intent", _text(f"{t['intent'] or '—'} · confidence "
                                     f"{'—' if t['confidence'] is None else format(t['confidence'], '.3f')}")),
                    ("Guards", _text(f"PII: {', '.join(t['guards'].get('pii') or []) or 'none'} · injection: "
                                     f"{'yes' if t['guards'].get('injection') else 'no'}")),
                    ("Model", _text(f"{mv.get('name', '—')} ({mv.get('provider', '')}:{mv.get('model_name', '')}) "
                                    f"id {mv.get('id', '—')}")),
                    ("Prompt", _text(f"{pv.get('name', '—')} v{pv.get('version', '')} id {pv.get('id', '—')}")),
                    ("Usage", _text(f"{t['tokens_in']} tokens in, {t['tokens_out']} out · cost {t['cost']} · latency "
                                    f"{'—' if t['latency_ms'] is None else format(t['latency_ms'], '.0f') + ' ms'}")),
                ]
                if t["tool_call"]:
                    rows.append(("Tool call", _text(t["tool_call"])))
                if t["error"]:
                    rows.append(("Error", _text(t["error"])))
                rows.append(("Audit", _text(", ".join(f"seq {s}" for s in t["audit_seqs"]))))
                block.append(facts(rows, key_width=24 * mm))
                if t["sources"]:
                    block.append(table(["#", "Retrieved source", "Similarity", "Lexical", "Score"], [
                        [str(s.get("n", "")), _text(f"{s.get('title', '')}{' — ' + s['section'] if s.get('section') else ''}"
                                                    f"{' (curated)' if s.get('curated') else ''}"),
                         _num(s.get("similarity"), 3), _num(s.get("lexical"), 3), _num(s.get("score"), 4)]
                        for s in t["sources"]], [0.05, 0.59, 0.12, 0.12, 0.12]))
                if run:
                    block.append(facts([("Action run", _text(
                        f"{run['action_title']} ({run['action']}) · {run['status']} · params {json.dumps(run['params'])}"
                        f" · approvals {len(run['approvals'])}/{run['approvals_required']}"
                        f"{' · result ' + json.dumps(run['result']) if run['result'] else ''}"))], key_width=24 * mm))
            story += [KeepTogether(block[:2]), *block[2:], Spacer(1, 2 * mm)]
        if c["action_runs"]:
            story.append(Paragraph("Action runs", h3))
            story.append(table(["Action", "Status", "Parameters / result", "Approvals", "History"], [
                [_text(f"{r['action_title']} ({r['action']}), risk {r['risk_level']}, proposed by {r['proposed_by']}"),
                 _text(r["status"]), _text({"params": r["params"], "result": r["result"], "error": r["error"]}),
                 _text("; ".join(f"{a['approver']} {_when(a['created_at'])}{' (void)' if a['voided_at'] else ''}"
                                 for a in r["approvals"]) or "none"),
                 _text("; ".join(f"{e['from'] or '∅'}→{e['to']} by {e['actor']}" for e in r["events"]))]
                for r in c["action_runs"]], [0.22, 0.1, 0.3, 0.18, 0.2]))
        if c["review_items"]:
            story.append(Paragraph("Review items", h3))
            story.append(table(["Item", "Status", "Team / claimed", "History"], [
                [_text(f"{i['kind']}: {i['title']}"), _text(f"{i['status']} {i['outcome']}".strip()),
                 _text(f"{i['team'] or '—'} / {i['claimed_by'] or '—'}"),
                 _text("; ".join(f"{e['kind']} {e['actor'] or ''} {_when(e['created_at'])}" for e in i["events"]))]
                for i in c["review_items"]], [0.34, 0.14, 0.17, 0.35]))

    story.append(Paragraph("Audit events", h2))
    rows, spans = [], []
    for e in ctx["audit"]:
        rows.append([str(e["seq"]), _text(_when(e["occurred_at"])), _text(e["actor_label"]), _text(e["action"]),
                     _text(f"{e['target_type']} {e['target_id']}"),
                     Paragraph(f"{escape(e['hash'])}<br/><font color='#55606e'>{escape(e['prev_hash'])}</font>", mono)])
        rows.append(["", Paragraph(f"<font color='#55606e'>data</font> {escape(e['data_json'])}", mono), "", "", "", ""])
        spans.append(("SPAN", (1, len(rows)), (-1, len(rows))))  # row 0 is the header
    events_table = table(["Seq", "When", "Actor", "Action", "Target", "Hash / previous"], rows,
                         [0.06, 0.15, 0.12, 0.17, 0.2, 0.3])
    events_table.setStyle(TableStyle(spans))
    story.append(events_table)
    story.append(Paragraph("How to check the hashes", h2))
    story.append(Paragraph(escape("Each event hash is the SHA-256 (hex) of the canonical JSON of:"), base))
    story.append(Paragraph(escape(ctx["recipe_object"]).replace("\n", "<br/>").replace("  ", "&nbsp;&nbsp;"), mono))
    for rule in HASH_RECIPE["canonical_json"]:
        story.append(Paragraph("• " + escape(rule), small))
    story.append(Paragraph(escape(HASH_RECIPE["chain"]), small))

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont(regular, 7)
        canvas.setFillColor(colors.HexColor("#55606e"))
        canvas.drawString(15 * mm, 10 * mm, f"Tandem evidence report · {b['format']} · generated {_when(b['generated_at'])}")
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=14 * mm,
                            bottomMargin=16 * mm, title="Tandem evidence report", author=b["generated_by"]["username"],
                            invariant=1)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
