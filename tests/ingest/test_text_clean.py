"""Page text cleaning, on strings and on real pypdf output of generated PDFs."""

from pypdf import PdfReader

from ingest.pdf_reader import open_pdf
from ingest.pipeline import SourceFile
from ingest.text_clean import clean_page_text
from tests.fixtures.pdfs import make_pdf, make_spaced_chinese_pdf, print_html_to_pdf

MB = 1_000_000
PROSE = (  # printed lines of one paragraph, as pypdf returns them: about 95 characters each
    "Every July more than a million wildebeest and two hundred thousand zebras cross the Mara River",
    "from the Serengeti into the Maasai Mara in search of water, following the rains and the fre-",
    "sh grass. Crocodiles wait in the river for the herds, and many animals drown while crossing; the",
    "guides say that these places have been used for centuries and are marked on every built-in-",
    "docstring map of the reserve, so that anybody who comes to watch can find the famous old",
    "fords and the places where the banks are low enough for a safe crossing of the whole herd.",
)


def cleaned_pages(path):
    return [page.text for page in open_pdf(path, 10 * MB).pages()]


def test_chinese_spaces_and_radicals_are_removed():
    assert clean_page_text("其卓 越的性能，  晶体 管数量") == "其卓越的性能，晶体管数量"
    assert clean_page_text("本  FAQ ⽂档是什么？常⻅问题（ Debian ）") == "本 FAQ 文档是什么？常见问题（Debian）"
    assert clean_page_text("ＲＴＸ　４０９０ 的显存") == "RTX 4090 的显存"


def test_wrapped_lines_join_and_paragraphs_and_lists_stay():
    text = "\n".join(PROSE) + "\n\nA new paragraph.\n• first item\n• second item"
    cleaned = clean_page_text(text)
    assert "following the rains and the fresh grass. Crocodiles" in cleaned  # hyphenation undone
    assert "\n" not in cleaned.split("\n\n")[0]  # the wrapped paragraph is one line
    assert "every built-in-docstring map" in cleaned  # a break after a word's second hyphen keeps it
    assert cleaned.endswith("\n\nA new paragraph.\n• first item\n• second item")


def test_short_lines_and_chinese_sentence_ends_are_not_joined():
    lines = [
        "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万",
        "一千多公里。明代对长城进行了大规模修筑。",
        "6.3 安装",
        "如果计划设置一个服务器，请记住至少需要两块网卡，",
        "并且每块网卡都要接好。",
    ]
    cleaned = clean_page_text("\n".join(lines)).split("\n")
    assert cleaned[0] == lines[0] + lines[1]
    assert cleaned[1] == "6.3 安装"
    assert cleaned[2] == "如果计划设置一个服务器，请记住至少需要两块网卡，并且每块网卡都要接好。"


def test_dot_leaders_and_invisible_characters():
    assert clean_page_text("9.11 kill 命令常用信号列表 . . . . . . . . . 141") == "9.11 kill 命令常用信号列表 … 141"
    assert clean_page_text("zero\u200bwidth\ufeff and soft\u00adhyphen") == "zerowidth and softhyphen"


def test_real_pypdf_output_of_a_hyphenated_pdf(tmp_path):
    pdf = make_pdf(tmp_path / "zebras.pdf", ["\n".join(PROSE)])
    raw = PdfReader(pdf).pages[0].extract_text()
    assert "fre-\nsh" in raw  # the artifact is really in pypdf's output
    (page,) = cleaned_pages(pdf)
    assert "following the rains and the fresh grass. Crocodiles wait" in page


def test_real_pypdf_output_of_spaced_chinese(tmp_path):
    pieces = ["其卓", "越的性能来自全新的架构，", "晶体管数量达到 763 亿个。"]
    pdf = make_spaced_chinese_pdf(tmp_path / "芯片.pdf", pieces)
    assert "其卓 越" in PdfReader(pdf).pages[0].extract_text()
    assert cleaned_pages(pdf) == ["其卓越的性能来自全新的架构，晶体管数量达到 763 亿个。"]


def test_real_pypdf_output_of_a_chinese_page_printed_by_chromium(tmp_path, chromium_path):
    text = "RTX 4090 显卡拥有 16384 个 CUDA 核心，其卓越的性能来自全新的架构。文档目录见第 3 页，常见问题请看长城简介。"
    html = f'<html><head><meta charset="utf-8"></head><body style="width: 300px"><p>{text}</p></body></html>'
    pdf = print_html_to_pdf(chromium_path, html, tmp_path / "显卡.pdf")
    raw = PdfReader(pdf).pages[0].extract_text()
    assert any("\u2e80" <= ch <= "\u2fdf" for ch in raw)  # radicals in place of ideographs, as chromium writes
    (page,) = cleaned_pages(pdf)
    assert page == text


def test_chunk_ids_and_texts_are_stable_for_an_unchanged_file(services, tmp_path):
    pdf = make_pdf(tmp_path / "zebras.pdf", ["\n".join(PROSE), "Second page about lions."])
    first = services.ingestor.ingest([SourceFile(pdf, pdf.name)])
    stored = services.store._vectors.get(include=["documents"])
    again = services.ingestor.ingest([SourceFile(pdf, pdf.name)])
    assert [f.status for f in first.files + again.files] == ["ingested", "unchanged"]
    assert services.store._vectors.get(include=["documents"]) == stored
    assert any("fresh grass" in text for text in stored["documents"])
