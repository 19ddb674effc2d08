"""File parsers: PDF, HTML, Markdown, plain text and FAQ files (CSV, JSON) to markdown.

Every parser returns a title and a markdown body for ``knowledge.chunking.chunk_markdown``;
what cannot be read raises ``IngestionError`` with a message meant for the person who
uploaded the file."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import PurePath

from knowledge.chunking import markdown_title
from knowledge.exceptions import IngestionError

logger = logging.getLogger(__name__)

KIND_PDF, KIND_HTML, KIND_MARKDOWN, KIND_TEXT, KIND_CSV, KIND_JSON = "pdf", "html", "markdown", "text", "csv", "json"
EXTENSIONS = {
    ".pdf": KIND_PDF,
    ".html": KIND_HTML, ".htm": KIND_HTML, ".xhtml": KIND_HTML,
    ".md": KIND_MARKDOWN, ".markdown": KIND_MARKDOWN,
    ".txt": KIND_TEXT, ".text": KIND_TEXT,
    ".csv": KIND_CSV,
    ".json": KIND_JSON,
}
SUPPORTED_DESCRIPTION = "PDF, HTML, Markdown, plain text, CSV or JSON FAQ"
# Signatures of common formats that look like files we take but are not (checked first).
_BINARY_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive (e.g. .docx, .xlsx)",
    b"\xd0\xcf\x11\xe0": "an old Microsoft Office file",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
}
_HTML_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.I | re.S)
_MAX_HEADING = 280  # Chunk.section holds 300 characters
QUESTION_KEYS = ("question", "q", "questions", "title", "prompt")
ANSWER_KEYS = ("answer", "a", "answers", "response", "body")


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    body: str
    kind: str


def detect_kind(name: str, head: bytes) -> str:
    """The parser for a file, from its extension checked against its first bytes."""
    ext = PurePath(name).suffix.lower()
    if not head.strip():
        raise IngestionError("The file is empty.")
    for signature, what in _BINARY_SIGNATURES.items():
        if head.startswith(signature):
            raise IngestionError(f"Unsupported file type: this is {what}. Upload {SUPPORTED_DESCRIPTION} files.")
    is_pdf = head.lstrip()[:5] == b"%PDF-"
    if ext == ".pdf" or is_pdf:
        if not is_pdf:
            raise IngestionError("This is not a readable PDF: it does not start with a PDF header (corrupt file?).")
        return KIND_PDF
    if ext in EXTENSIONS:
        if b"\x00" in head:
            raise IngestionError(f"Unsupported content: a {ext} file should be text, but this one is binary.")
        return EXTENSIONS[ext]
    if ext:
        raise IngestionError(f"Unsupported file type {ext!r}. Upload {SUPPORTED_DESCRIPTION} files.")
    # No extension: sniff the content.
    if b"\x00" in head:
        raise IngestionError(f"Unsupported file type: binary content. Upload {SUPPORTED_DESCRIPTION} files.")
    if _HTML_START.match(head):
        return KIND_HTML
    if head.lstrip()[:1] in (b"{", b"["):
        return KIND_JSON
    return KIND_TEXT


def parse_document(*, name: str, data: bytes) -> ParsedDocument:
    """Title and markdown body of the file ``name`` with contents ``data``."""
    kind = detect_kind(name, data[:4096])
    default_title = _title_from_name(name)
    parser = {
        KIND_PDF: _parse_pdf, KIND_HTML: _parse_html, KIND_MARKDOWN: _parse_markdown, KIND_TEXT: _parse_text,
        KIND_CSV: _parse_csv, KIND_JSON: _parse_json,
    }[kind]
    title, body = parser(data, default_title)
    if not body.strip():
        raise IngestionError("The file has no text to index.")
    return ParsedDocument(title=_one_line(title)[:300] or default_title, body=body, kind=kind)


# --- helpers --------------------------------------------------------------------------------

def _title_from_name(name: str) -> str:
    stem = PurePath(name).stem or "Untitled"
    words = " ".join(re.sub(r"[_\-]+", " ", stem).split())
    return (words[:1].upper() + words[1:]) or "Untitled"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Legacy exports (Excel CSV, old HTML) are mostly Windows-1252.
        text = data.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _with_title(title: str, body: str) -> str:
    return f"# {title}\n\n{body.strip()}\n"


# --- PDF ------------------------------------------------------------------------------------

def _parse_pdf(data: bytes, default_title: str) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError, PdfStreamError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestionError("The PDF is password-protected. Remove the password and upload it again.")
        pages = []
        for page in reader.pages:
            pages.append(page.extract_text() or "")
        metadata_title = (reader.metadata.title if reader.metadata else "") or ""
    except IngestionError:
        raise
    except FileNotDecryptedError:
        raise IngestionError("The PDF is password-protected. Remove the password and upload it again.") from None
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        logger.info("unreadable PDF: %r", exc)
        raise IngestionError(f"This PDF cannot be read (corrupt or truncated file): {exc}") from None
    # A PDF's lines are hard-wrapped: keep blank lines as paragraph breaks, join the rest.
    paragraphs = []
    for text in pages:
        for block in re.split(r"\n\s*\n", text):
            block = " ".join(line.strip() for line in block.splitlines() if line.strip())
            if block:
                paragraphs.append(block)
    if not paragraphs:
        raise IngestionError("The PDF has no extractable text (a scanned document needs OCR first).")
    title = _one_line(metadata_title) or default_title
    return title, _with_title(title, "\n\n".join(paragraphs))


# --- HTML -----------------------------------------------------------------------------------

def _parse_html(data: bytes, default_title: str) -> tuple[str, str]:
    import trafilatura

    html = _decode(data)
    # Main content only: navigation, footers, scripts and styles are left out.
    body = trafilatura.extract(
        html, output_format="markdown", include_comments=False, include_tables=True, include_images=False,
        include_links=False, favor_recall=True, with_metadata=False,
    )
    if not body or not body.strip():
        raise IngestionError("No readable main content was found in this HTML page.")
    metadata = trafilatura.extract_metadata(html)
    title = _one_line((metadata.title if metadata else "") or "") or markdown_title(body, default_title)
    if markdown_title(body, "") == "":
        body = _with_title(title, body)
    return title, body.strip() + "\n"


# --- Markdown and text ----------------------------------------------------------------------

def _parse_markdown(data: bytes, default_title: str) -> tuple[str, str]:
    body = _decode(data)
    title = markdown_title(body, default_title)
    if markdown_title(body, "") == "":
        body = _with_title(title, body)
    return title, body


def _parse_text(data: bytes, default_title: str) -> tuple[str, str]:
    text = _decode(data)
    # A line that starts with "#" is not a heading in plain text.
    text = "\n".join(("\\" + line) if line.lstrip().startswith("#") else line for line in text.splitlines())
    return default_title, _with_title(default_title, text)


# --- FAQ files ------------------------------------------------------------------------------

def _faq_markdown(title: str, pairs: list[tuple[str, str]]) -> str:
    sections = []
    for question, answer in pairs:
        question = _one_line(question)
        if len(question) > _MAX_HEADING:
            # The full question stays in the text so it can still be found.
            answer = f"{question}\n\n{answer}"
            question = question[: _MAX_HEADING - 1] + "…"
        sections.append(f"## {question}\n\n{answer.strip()}")
    return _with_title(title, "\n\n".join(sections))


def _clean_pairs(pairs) -> list[tuple[str, str]]:
    return [(str(q).strip(), str(a).strip()) for q, a in pairs if str(q or "").strip() and str(a or "").strip()]


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {k.strip().lower(): k for k in keys if isinstance(k, str)}
    return next((lowered[w] for w in wanted if w in lowered), None)


def _parse_csv(data: bytes, default_title: str) -> tuple[str, str]:
    text = _decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise IngestionError(f"This CSV file cannot be read: {exc}") from None
    if not rows:
        raise IngestionError("The file is empty.")
    header = [cell.strip().lower() for cell in rows[0]]
    q_col = next((header.index(k) for k in QUESTION_KEYS if k in header), None)
    a_col = next((header.index(k) for k in ANSWER_KEYS if k in header), None)
    if q_col is not None and a_col is not None:
        body_rows = rows[1:]
    elif all(len(row) == 2 for row in rows):
        q_col, a_col, body_rows = 0, 1, rows  # two columns without a header
    else:
        raise IngestionError("A FAQ CSV needs a header row with 'question' and 'answer' columns.")
    pairs = _clean_pairs((row[q_col] if len(row) > q_col else "", row[a_col] if len(row) > a_col else "")
                         for row in body_rows)
    if not pairs:
        raise IngestionError("The CSV file has no question and answer pairs.")
    return default_title, _faq_markdown(default_title, pairs)


def _parse_json(data: bytes, default_title: str) -> tuple[str, str]:
    try:
        payload = json.loads(_decode(data))
    except json.JSONDecodeError as exc:
        raise IngestionError(f"This JSON file cannot be read: {exc.msg} (line {exc.lineno}).") from None
    title = default_title
    items = payload
    if isinstance(payload, dict):
        raw_title = payload.get("title")
        if isinstance(raw_title, str) and raw_title.strip():
            title = _one_line(raw_title)
        for key in ("faq", "faqs", "questions", "items", "entries"):
            if isinstance(payload.get(key), list):
                items = payload[key]
                break
        else:
            # {"question": "answer", ...}
            items = [{"question": k, "answer": v} for k, v in payload.items()
                     if k != "title" and isinstance(v, str)]
    if not isinstance(items, list):
        raise IngestionError("A FAQ JSON file must hold a list of {question, answer} objects.")
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            raise IngestionError("A FAQ JSON file must hold a list of {question, answer} objects.")
        q_key, a_key = _pick(list(item), QUESTION_KEYS), _pick(list(item), ANSWER_KEYS)
        if q_key and a_key:
            pairs.append((item[q_key], item[a_key]))
    pairs = _clean_pairs(pairs)
    if not pairs:
        raise IngestionError("The JSON file has no question and answer pairs.")
    return title, _faq_markdown(title, pairs)
