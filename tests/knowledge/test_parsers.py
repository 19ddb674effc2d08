"""Parsers: each supported type becomes a title and markdown; bad files get a clear error."""

from __future__ import annotations

import io
import json

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from knowledge.chunking import chunk_markdown
from knowledge.exceptions import IngestionError
from knowledge.parsers import detect_kind, parse_document


def make_pdf(lines: list[str], *, title: str = "", password: str = "", pages: int = 1) -> bytes:
    """A small real PDF with Helvetica text, built with pypdf's writer."""
    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    }))
    for _ in range(pages):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
        text = " ".join(f"({line}) Tj T*" for line in lines)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td 14 TL {text} ET".encode() if lines else b"")
        page[NameObject("/Contents")] = writer._add_object(stream)
    if title:
        writer.add_metadata({"/Title": title})
    if password:
        writer.encrypt(password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_pdf_text_and_metadata_title():
    data = make_pdf(["Tents must be dried before storage.", "Mould grows on damp fabric."], title="Tent guide")
    parsed = parse_document(name="guide.pdf", data=data)
    assert parsed.kind == "pdf" and parsed.title == "Tent guide"
    assert parsed.body.startswith("# Tent guide\n")
    assert "Tents must be dried before storage. Mould grows on damp fabric." in parsed.body
    assert chunk_markdown(parsed.body)


def test_pdf_without_title_uses_the_file_name():
    parsed = parse_document(name="care_guide-2024.pdf", data=make_pdf(["Some text here."]))
    assert parsed.title == "Care guide 2024"


def test_encrypted_pdf_is_refused_with_a_clear_message():
    data = make_pdf(["Secret text."], password="s3cret")
    with pytest.raises(IngestionError, match="password-protected"):
        parse_document(name="secret.pdf", data=data)


@pytest.mark.parametrize("data", [b"%PDF-1.4\n%garbage that is not a pdf\n", make_pdf(["Text."])[:200]])
def test_corrupt_pdf_is_refused(data):
    with pytest.raises(IngestionError, match="(?i)PDF cannot be read|no extractable text"):
        parse_document(name="broken.pdf", data=data)


def test_pdf_extension_with_other_content_is_refused():
    with pytest.raises(IngestionError, match="not a readable PDF"):
        parse_document(name="report.pdf", data=b"just some text")


def test_pdf_without_text_needs_ocr():
    with pytest.raises(IngestionError, match="no extractable text"):
        parse_document(name="scan.pdf", data=make_pdf([]))


HTML = b"""<!doctype html><html><head><title>Returns policy</title>
<style>.banner { color: red }</style><script>var trackingSecret = 'SCRIPT_TEXT_ONE';</script></head>
<body><nav><a href="/">Home</a> | <a href="/shop">Shop</a></nav>
<article><h1>Returns policy</h1>
<p>You can return unused items within 30 days of delivery for a full refund.</p>
<h2>Refunds</h2><p>Refunds are paid to the original payment method within five working days.</p>
<script>document.write('SCRIPT_TEXT_TWO')</script></article>
<footer>Copyright Brightwater Outdoor</footer></body></html>"""


def test_html_keeps_main_content_and_headings_without_scripts_or_styles():
    parsed = parse_document(name="returns.html", data=HTML)
    assert parsed.kind == "html" and parsed.title == "Returns policy"
    assert "## Refunds" in parsed.body
    assert "within 30 days of delivery" in parsed.body
    for absent in ("SCRIPT_TEXT_ONE", "SCRIPT_TEXT_TWO", "trackingSecret", "color: red"):
        assert absent not in parsed.body
    assert [d.section for d in chunk_markdown(parsed.body)] == ["", "Refunds"]


def test_html_without_extension_is_sniffed():
    assert detect_kind("returns", HTML[:100]) == "html"
    assert parse_document(name="returns", data=HTML).kind == "html"


def test_markdown_is_kept_and_gets_a_title_when_missing():
    parsed = parse_document(name="care.md", data=b"# Tent care\n\n## Drying\nDry it fully.\n")
    assert (parsed.title, parsed.body) == ("Tent care", "# Tent care\n\n## Drying\nDry it fully.\n")
    parsed = parse_document(name="sleeping-bags.md", data=b"## Washing\nWash it cold.\n")
    assert parsed.title == "Sleeping bags" and parsed.body.startswith("# Sleeping bags\n")


def test_plain_text_hash_lines_are_not_headings():
    parsed = parse_document(name="notes.txt", data=b"# not a heading\nOrder numbers look like #1234.\n")
    assert parsed.kind == "text" and parsed.title == "Notes"
    drafts = chunk_markdown(parsed.body)
    assert drafts and "not a heading" in drafts[0].text


def test_legacy_encoding_text_is_read():
    parsed = parse_document(name="old.txt", data="Caf\u00e9 opening hours are 9 to 5.".encode("cp1252"))
    assert "Caf\u00e9" in parsed.body


def test_csv_faq_becomes_one_section_per_question():
    data = b'Question,Answer\nHow long is delivery?,"Three to five days, usually."\nCan I return sale items?,Yes.\n,orphan\n'
    parsed = parse_document(name="faq.csv", data=data)
    assert parsed.kind == "csv"
    assert parsed.body == ("# Faq\n\n## How long is delivery?\n\nThree to five days, usually.\n\n"
                           "## Can I return sale items?\n\nYes.\n")
    assert [d.section for d in chunk_markdown(parsed.body)] == ["How long is delivery?", "Can I return sale items?"]


def test_csv_semicolons_and_headerless_two_columns():
    parsed = parse_document(name="faq.csv", data=b"question;answer\nWhere are you?;In Bristol.\n")
    assert "## Where are you?\n\nIn Bristol." in parsed.body
    parsed = parse_document(name="faq.csv", data=b"Do you ship abroad?,Yes to the EU.\nIs it free?,Over 50 EUR.\n")
    assert "## Do you ship abroad?" in parsed.body and "## Is it free?" in parsed.body


def test_csv_without_question_answer_columns_is_refused():
    with pytest.raises(IngestionError, match="'question' and 'answer'"):
        parse_document(name="data.csv", data=b"a,b,c\n1,2,3\n")


@pytest.mark.parametrize("payload", [
    [{"question": "Do you ship abroad?", "answer": "Yes, to the EU."}],
    {"title": "Shipping FAQ", "faq": [{"Q": "Do you ship abroad?", "A": "Yes, to the EU."}]},
    {"Do you ship abroad?": "Yes, to the EU."},
])
def test_json_faq_shapes(payload):
    parsed = parse_document(name="shipping.json", data=json.dumps(payload).encode())
    assert parsed.kind == "json"
    assert "## Do you ship abroad?\n\nYes, to the EU." in parsed.body
    if isinstance(payload, dict) and "title" in payload:
        assert parsed.title == "Shipping FAQ"


@pytest.mark.parametrize("data, message", [
    (b"{not json", "cannot be read"),
    (b'[{"name": "x"}]', "no question and answer pairs"),
    (b'"just a string"', "list of"),
])
def test_bad_json_faq(data, message):
    with pytest.raises(IngestionError, match=message):
        parse_document(name="faq.json", data=data)


def test_long_question_is_cut_for_the_heading_but_kept_in_the_text():
    question = "Why " + "very " * 100 + "long?"
    parsed = parse_document(name="faq.json", data=json.dumps([{"question": question, "answer": "Because."}]).encode())
    drafts = chunk_markdown(parsed.body)
    assert len(drafts[0].section) <= 300
    assert question in parsed.body


@pytest.mark.parametrize("name", ["empty.md", "empty.pdf", "blank.txt", "empty"])
@pytest.mark.parametrize("data", [b"", b"  \n\n "])
def test_empty_files_are_refused(name, data):
    with pytest.raises(IngestionError, match="empty"):
        parse_document(name=name, data=data)


@pytest.mark.parametrize("name, data, message", [
    ("report.docx", b"PK\x03\x04rest of a zip", "ZIP archive"),
    ("photo.png", b"\x89PNG\r\n\x1a\n....", "PNG image"),
    ("tool.exe", b"MZ\x90\x00\x03", "Unsupported file type '.exe'"),
    ("blob", b"\x00\x01\x02binary", "binary content"),
    ("notes.md", b"text with a \x00 nul byte", "binary"),
])
def test_unsupported_types_are_refused(name, data, message):
    with pytest.raises(IngestionError, match=message):
        parse_document(name=name, data=data)

