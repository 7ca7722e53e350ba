"""The keyword index's words, in Chinese and English."""

import pytest

from rag.tokenizer import fold_characters, is_chinese, tokenize


@pytest.mark.parametrize(
    "text, words",
    [
        ("RTX 4090 有多少个 CUDA 核心？", ["rtx", "4090", "cuda", "核心"]),
        ("晶体管数量是多少？", ["晶体", "晶体管", "数量"]),
        ("怎么让普通用户用 sudo？", ["普通", "通用", "用户", "普通用户", "sudo"]),
        ("apt-get 和 aptitude 有啥区别？", ["apt-get", "apt", "aptitud", "区别"]),
    ],
)
def test_chinese_questions_keep_names_numbers_and_content_words(text, words):
    assert tokenize(text) == words


def test_english_is_lower_cased_stemmed_and_function_words_dropped():
    assert tokenize("How do I set the Y axis to a log scale?") == ["set", "y", "axi", "log", "scale"]
    assert tokenize("plotting plots plotted axes axis") == ["plot", "plot", "plot", "axi", "axi"]
    assert tokenize("libraries matrices matrix") == tokenize("library matrix matrix")


def test_identifiers_keep_their_whole_form_and_their_parts():
    assert tokenize("vim-tiny set_xlabel RTX4090") == [
        "vim-tiny", "vim", "tini", "set_xlabel", "set", "xlabel", "rtx4090", "rtx", "4090",
    ]  # fmt: skip


def test_width_and_radicals_fold_to_the_same_words():
    assert tokenize("ＲＴＸ ４０９０ 的⽂档") == tokenize("RTX 4090 的文档") == ["rtx", "4090", "文档"]
    assert tokenize("常⻅问题") == tokenize("常见问题")
    assert fold_characters("⽂档，ＡＢ１") == "文档，AB1"  # Chinese punctuation stays for display


def test_questions_in_chinese_script():
    assert is_chinese("RTX 4090 有多少个 CUDA 核心？")
    assert is_chinese("晶体管数量是多少？")
    assert not is_chinese("What is the default value of samples?")
    assert not is_chinese("How do I print 你好 in gnuplot with UTF-8 encoding enabled?")
