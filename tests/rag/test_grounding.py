"""The grounding check: an answer's numbers, names and quoted terms that no source holds are marked."""

from rag.grounding import claims, unsupported

SOURCE = "Extreme ultraviolet lithography uses light with a wavelength of 13.5 nanometres; set_xtics 1,000 times."


def test_an_invented_number_is_marked_and_a_quoted_one_is_not():
    answer = "EUV uses 13.5 nm light, not 193 nm (chips.pdf, p. 4) [1]."
    assert unsupported(answer, [SOURCE]) == ["EUV", "193"]


def test_numbers_match_whole_and_thousands_separators_do_not_matter():
    assert unsupported("It runs 1000 times.", [SOURCE]) == []
    assert unsupported("It uses 3.5 nm.", [SOURCE]) == ["3.5"]  # not the "3.5" inside "13.5"
    assert unsupported("Use set_xtics or `set_ytics`.", [SOURCE]) == ["set_ytics"]


def test_citations_and_list_markers_are_not_claims():
    assert claims("1. See gnuplot.pdf, p. 31 and 第 5 页 [2].\n2. Done") == []


def test_chinese_answers_and_question_words_count_as_support():
    answer = "RTX 4090 的显存是 24 GB，带宽约 1008 GB/s，“显存带宽”很重要。"
    found = unsupported(answer, ["RTX 4090 的显存带宽是多少？", "24 GB GDDR6X，带宽 1008 GB/s"])
    assert found == []
    assert unsupported("它的显存是 48 GB。", ["24 GB GDDR6X"]) == ["48"]
