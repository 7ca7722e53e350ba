"""The real app (python app.py) in a real headless Chromium: drop PDFs, ask, read a source, delete, every tab.

Screenshots of each tab go to tmp_path, or to ZHIKU_SCREENSHOT_DIR when set:
``ZHIKU_SCREENSHOT_DIR=docs/screenshots python -m pytest tests/ui/test_browser.py`` regenerates the docs' images.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from tests.fixtures.browser import drop_files, is_local_url
from tests.fixtures.pdfs import GREAT_WALL, TEA, ZEBRA, make_pdf

INGESTED = "ingested / 已索引"
ANSWER_TIMEOUT_MS = 240_000  # the first question loads (and in a fresh session converts) the chat model
INGEST_TIMEOUT_MS = 120_000

# Records the text of the latest assistant message every time the chatbot's DOM changes.
WATCH_ANSWER_JS = """() => {
    window.__zhikuAnswers = [];
    const root = document.querySelector('#chatbot');
    new MutationObserver(() => {
        const bots = root.querySelectorAll('[data-testid="bot"]');
        if (!bots.length) return;
        const text = bots[bots.length - 1].innerText.trim();
        const seen = window.__zhikuAnswers;
        if (seen[seen.length - 1] !== text) seen.push(text);
    }).observe(root, {subtree: true, childList: true, characterData: true});
}"""


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_real_screenshot(path: Path) -> None:
    from PIL import Image

    width, height = png_size(path)
    assert width >= 1200 and height >= 800, (path, width, height)
    assert path.stat().st_size > 20_000, f"{path} is suspiciously small"
    with Image.open(path) as image:
        colours = image.convert("RGB").resize((320, 240)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, f"{path} looks blank"


def open_tab(page, name: str) -> None:
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=name)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")


@pytest.mark.parametrize(
    "url, local",
    [
        ("http://127.0.0.1:7860/assets/index.js", True),
        ("http://localhost:7860/", True),
        ("http://[::1]:7860/", True),
        ("blob:http://127.0.0.1:7860/8c1f", True),
        ("data:image/png;base64,iVBORw0KGgo=", True),
        ("https://fonts.googleapis.com/css2?family=Inter", False),
        ("https://cdn.jsdelivr.net/npm/x.js", False),
        ("blob:https://example.com/8c1f", False),
        ("http://192.168.1.10:7860/", False),
    ],
)
def test_local_url_check(url, local):
    assert is_local_url(url) is local


@pytest.mark.slow
def test_drop_ask_read_source_delete_in_a_real_browser(zhiku_browser, screenshot_dir, pdf_dir):
    from playwright.sync_api import expect

    page = zhiku_browser.page
    english = make_pdf(pdf_dir / "zebras.pdf", ["Introduction to African wildlife.", ZEBRA, "Index of species."])
    chinese = make_pdf(pdf_dir / "长城简介.pdf", ["中国文化简介。", GREAT_WALL, TEA], chinese=True)
    expect(page.get_by_role("heading", name="zhiku 知库")).to_be_visible()

    # -- Documents: drop two PDFs (one with a Chinese name) on the upload area ----------------------------
    open_tab(page, "Documents / 文档")
    drop_zone = page.locator("#upload button.upload-container")  # the element Gradio's drag action listens on
    expect(drop_zone).to_be_visible()
    drop_files(page, drop_zone, [english, chinese])
    status = page.locator("#ingest-status")
    expect(status).to_contain_text("2 ingested", timeout=INGEST_TIMEOUT_MS)
    expect(status).to_contain_text("0 rejected")
    expect(page.locator("#upload [data-testid=status-tracker]")).to_have_class(re.compile(r"\bhide\b"))  # progress over
    expect(drop_zone).to_be_visible()  # the upload box is cleared for the next drop
    rows = page.locator("#documents [role=row]")
    for name in ("zebras.pdf", "长城简介.pdf"):
        row = rows.filter(has_text=name)
        expect(row).to_have_count(1)
        expect(row).to_contain_text(INGESTED)
        expect(row).to_contain_text("3")  # pages
    page.screenshot(path=screenshot_dir / "documents.png", full_page=True)

    # -- Chat: the answer streams in, then the final answer with its sources ------------------------------
    open_tab(page, "Chat / 问答")
    page.evaluate(WATCH_ANSWER_JS)
    page.locator("#question textarea").fill("When do zebras cross the Mara River?")
    page.locator("#ask").click()
    answer = page.locator('#chatbot [data-testid="bot"]').last
    expect(answer).to_contain_text("Sources / 来源: zebras.pdf p. 2", timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#question textarea")).to_have_value("")
    final = answer.inner_text().strip()
    seen = page.evaluate("window.__zhikuAnswers")
    print("assistant message states:", seen)
    assert seen and seen[-1] == final, seen
    assert "…" in seen, f"no placeholder before the answer: {seen}"
    streamed = [t for t in seen[seen.index("…") + 1 : -1] if t and not t.startswith("⏳")]
    assert streamed, f"the answer did not stream (only the placeholder, then the final): {seen}"
    assert all("Sources / 来源" not in t for t in streamed), seen
    if len(streamed) > 1:
        assert len(streamed[-1]) > len(streamed[0]), f"the streamed text never grew: {seen}"

    source = page.locator("#sources details", has=page.locator("summary", has_text="zebras.pdf — p. 2"))
    expect(source).to_have_count(1)
    badges = source.locator("summary .zhiku-badge")  # which index found it: both, for this question
    expect(badges).to_have_text(["keyword / 关键词", "semantic / 语义"])
    expect(badges.first).to_be_visible()
    chunk = source.locator(".zhiku-chunk")
    expect(chunk).to_be_hidden()  # collapsed until clicked
    source.locator("summary").click()
    expect(source).to_have_attribute("open", "")
    expect(chunk).to_be_visible()
    expect(chunk).to_contain_text("Mara River")
    evidence = chunk.locator("mark.zhiku-evidence").first  # the sentence that answers, highlighted
    expect(evidence).to_be_visible()
    expect(evidence).to_contain_text("Every July")
    expect(answer).to_contain_text("From your documents / 来自你的文档")
    expect(answer).to_contain_text("(generated / 模型生成)")
    link = source.locator("a.zhiku-open")  # opens the kept copy of the PDF at the cited page
    href = link.get_attribute("href")
    assert href == "/zhiku/pdf/zebras.pdf#page=2", href
    served = page.request.get(page.url.rstrip("/") + href.split("#")[0])
    assert served.status == 200 and served.headers["content-type"] == "application/pdf"
    page.screenshot(path=screenshot_dir / "chat.png", full_page=True)

    # -- A follow-up leans on the first question: searched with it, answered from the same page -------------
    page.locator("#question textarea").fill("and where do they come from?")
    page.locator("#ask").click()
    second = page.locator('#chatbot [data-testid="bot"]').nth(1)
    expect(second).to_contain_text("Sources / 来源: zebras.pdf p. 2", timeout=ANSWER_TIMEOUT_MS)
    expect(second).to_contain_text("Searched for / 检索:")
    expect(page.locator("#sources summary").first).to_contain_text("zebras.pdf — p. 2")
    expect(page.locator("#sources .zhiku-quote").first).to_contain_text("Serengeti")

    # -- Documents: delete one, it leaves the table and the dropdown ------------------------------------
    open_tab(page, "Documents / 文档")
    choice = page.locator("#doc-choice input")
    choice.click()
    page.get_by_role("option", name="zebras.pdf", exact=True).click()
    expect(choice).to_have_value("zebras.pdf")
    page.locator("#delete").click()
    expect(status).to_contain_text("Deleted zebras.pdf")
    expect(rows.filter(has_text="zebras.pdf")).to_have_count(0)
    expect(rows.filter(has_text="长城简介.pdf")).to_contain_text(INGESTED)
    expect(choice).to_have_value("")
    choice.click()
    options = page.get_by_role("option")
    expect(options).to_have_count(1)
    expect(options).to_have_text(["长城简介.pdf"], use_inner_text=True)
    page.keyboard.press("Escape")

    # -- Image: no vision model configured, so images are read as text by OCR, and the tab says so ----------
    open_tab(page, "Image / 图片")
    note = page.locator("#image-ocr-note")
    expect(note).to_be_visible()
    expect(note).to_contain_text("read as text (OCR)")
    expect(page.locator("#vision-off")).to_have_count(0)
    page.screenshot(path=screenshot_dir / "image.png", full_page=True)

    # -- System: the models table with the resident chat model and the embedder -----------------------------
    open_tab(page, "System / 系统")
    expect(page.locator("#system-summary")).to_contain_text("device:")
    models = page.locator("#models [role=row]")
    expect(models.first).to_contain_text("resident")
    expect(models.filter(has_text="embedder")).to_have_count(1)
    expect(models.filter(has_text="chat")).to_contain_text("yes")  # loaded by the question above
    page.screenshot(path=screenshot_dir / "system.png", full_page=True)

    # -- Every screenshot is a real image; nothing left this machine ---------------------------------------
    for name in ("documents", "chat", "image", "system"):
        assert_real_screenshot(screenshot_dir / f"{name}.png")
    assert zhiku_browser.requests, "no request was recorded"
    assert zhiku_browser.outside_requests() == [], "the page fetched from outside this machine"
    assert zhiku_browser.errors == [], "JavaScript errors in the page"
