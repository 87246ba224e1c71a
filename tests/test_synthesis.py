r"""Synthesis prompts, tolerant parsing of what the policy writes, and quote location for `splice`."""

import pytest

from tapo.core import (
    CONTINUE_TEMPLATE,
    REFLECTION_OPENER,
    SELF_TEMPLATE,
    build_continue_prompt,
    build_locate_prompt,
    build_self_prompt,
    common_prefix_len,
    fill_template,
    find_quote_end,
    parse_locate,
    parse_synthesis,
    reflection_start_in,
    seed_reflection,
)

RECON = r"First, 3 + 4 = 7. Wait, let me double-check: 4 * 2 = 8 first, so 3 + 8 = 11. \boxed{11}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"<analysis>Adds first.</analysis>\n<reconstruction>{RECON}</reconstruction>",
            ("Adds first.", RECON),
            id="well-formed",
        ),
        pytest.param(f"<reconstruction>{RECON}</reconstruction>", ("", RECON), id="missing-analysis"),
        pytest.param(
            f"<analysis>Adds first.</analysis>\n<reconstruction>\n{RECON}\n",
            ("Adds first.", RECON),
            id="unclosed-to-end",
        ),
        pytest.param(
            f"<reconstruction>{RECON}\n<analysis>second thoughts</analysis>",
            ("second thoughts", RECON),
            id="unclosed-stops-at-analysis",
        ),
        pytest.param(
            "<analysis>a1</analysis><reconstruction>draft</reconstruction>\n"
            f"<analysis>a2</analysis><reconstruction>{RECON}</reconstruction>",
            ("a2", RECON),
            id="repeated-takes-last-complete",
        ),
        pytest.param(
            f"<analysis>a</analysis><reconstruction>{RECON}</reconstruction><reconstruction>First, 3 + 4",
            ("a", RECON),
            id="complete-beats-trailing-unclosed",
        ),
        pytest.param(
            "Sure! Here is my answer.\n<analysis>a</analysis>\nNow the rewrite:\n"
            f"<reconstruction>{RECON}</reconstruction>\nHope this helps.",
            ("a", RECON),
            id="stray-prose",
        ),
        pytest.param(f"<ANALYSIS>a</ANALYSIS><Reconstruction>{RECON}</RECONSTRUCTION>", ("a", RECON), id="case"),
        pytest.param(
            f"< analysis >a</ analysis>< reconstruction >{RECON}< / reconstruction >",
            ("a", RECON),
            id="spaces-in-tags",
        ),
        pytest.param(
            f"<analysis>\n\n  a  \n</analysis>\n<reconstruction>\n\n  {RECON}  \n\n</reconstruction>",
            ("a", RECON),
            id="outer-whitespace",
        ),
        pytest.param("<analysis>a</analysis><reconstruction></reconstruction>", None, id="empty-reconstruction"),
        pytest.param("<analysis>a</analysis><reconstruction> \n\t </reconstruction>", None, id="blank-reconstruction"),
        pytest.param("<analysis>only a diagnosis</analysis>", None, id="only-analysis"),
        pytest.param(RECON, None, id="no-tags"),
        pytest.param("", None, id="empty-output"),
        pytest.param("<reconstruction First, 3 + 4 = 7.", None, id="broken-opening-tag"),
        pytest.param(
            f"<reconstruction><reconstruction>{RECON}</reconstruction></reconstruction>",
            ("", RECON),
            id="nested",
        ),
        pytest.param(
            f"<reconstruction>{RECON}</reconstruction><reconstruction>  </reconstruction>",
            ("", RECON),
            id="last-one-empty",
        ),
        pytest.param(
            f"<analysis>a</analysis>\n{RECON}\n</reconstruction>",
            ("a", RECON),
            id="missing-opening-after-analysis",
        ),
        pytest.param(f"Some chatter. {RECON}</reconstruction>", None, id="orphan-closing-without-anchor"),
        pytest.param(
            f"<reconstruction>{RECON}</reconstruction>\n<analysis>late</analysis>",
            ("late", RECON),
            id="analysis-after",
        ),
        pytest.param(
            f"<analysis>diag <reconstruction>{RECON}</reconstruction>",
            ("diag", RECON),
            id="unclosed-analysis",
        ),
        pytest.param(
            "<analysis>a</analysis><reconstruction>Since x < y and y > 0,\n\nwe get \\boxed{2}.</reconstruction>",
            ("a", "Since x < y and y > 0,\n\nwe get \\boxed{2}."),
            id="inner-text-kept",
        ),
    ],
)
def test_parse_synthesis(text, expected):
    assert parse_synthesis(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<quote>First, 3 + 4 = 7.</quote>\n<analysis>Adds first.</analysis>", ("First, 3 + 4 = 7.", "Adds first.")),
        ("<QUOTE>  First, 3 + 4 = 7.\n</QUOTE>", ("First, 3 + 4 = 7.", "")),
        ("I think <quote>7 * 2 = 14</quote> is wrong. <analysis>no</analysis> ok", ("7 * 2 = 14", "no")),
        ("<quote>7 * 2 = 14", ("7 * 2 = 14", "")),
        ("<quote></quote><analysis>nothing quoted</analysis>", None),
        ("<analysis>nothing quoted</analysis>", None),
        ("<reconstruction>not a quote</reconstruction>", None),
    ],
)
def test_parse_locate(text, expected):
    assert parse_locate(text) == expected


NEGATIVE = "First, 3 + 4 = 7.  Then\n7 * 2 = 14.\nThe answer is \\boxed{14}."


@pytest.mark.parametrize(
    ("quote", "end"),
    [
        ("First, 3 + 4 = 7.", 17),  # exact
        ("  3 + 4 = 7.\n", 17),  # outer white space ignored
        ("7 * 2 = 14.", 35),  # exact, later
        ("Then 7 * 2 = 14.", 35),  # a newline in the text, a space in the quote
        ("7.   Then", 23),  # white space runs of different lengths
        ("3+4=7.", 17),  # white space dropped in the quote
        ("\u201cFirst, 3 + 4 = 7.\u201d", 17),  # wrapped in quotation marks
        ('"Then 7 * 2 = 14."', 35),
        ("8 * 2 = 16", None),  # not in the response
        ("", None),
        ("   ", None),
    ],
)
def test_find_quote_end(quote, end):
    assert find_quote_end(quote, NEGATIVE) == end
    if end is not None:
        assert not NEGATIVE[end - 1].isspace()


def test_find_quote_end_takes_first_occurrence():
    assert find_quote_end("x = 1", "x = 1, then x = 1 again") == 5


def test_self_prompt_contains_inputs_and_format():
    question = "Compute $\\frac{1}{2} + 1$ in {braces}."
    prompt = build_self_prompt(question=question, negative="NEG ${wrong} 3/2", positive="POS 3/2 \\boxed{3/2}")
    assert question in prompt and "NEG ${wrong} 3/2" in prompt and "POS 3/2 \\boxed{3/2}" in prompt
    tags = ("<analysis>", "</analysis>", "<reconstruction>", "</reconstruction>")
    for required in (*tags, "VERBATIM", "FIRST", "\\boxed{", "Wait, let me double-check"):
        assert required in prompt
    assert prompt.index(question) < prompt.index("NEG") < prompt.index("POS")
    assert "$question" not in prompt


def test_default_templates_have_no_stray_placeholders():
    prompt = build_self_prompt(question="Q", negative="N", positive="P")
    assert "$" not in prompt
    assert "$" not in build_locate_prompt(question="Q", negative="N", positive="P")
    assert "$" not in build_continue_prompt(question="Q", positive="P", analysis="A")


def test_custom_template_with_literal_boxed_formats():
    template = r"Q: $question\nWrong: $negative\nRight: ${positive}\nEnd with \boxed{} and {curly}, $$5."
    prompt = build_self_prompt(question="1+1?", negative="3", positive="2", template=template)
    assert prompt == r"Q: 1+1?\nWrong: 3\nRight: 2\nEnd with \boxed{} and {curly}, $5."


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("$question $negative", r"lacks the placeholder\(s\) \$positive"),
        ("$question $negative $positive $x$", "start"),
        ("$question $negative $positive $answer", r"unknown placeholder\(s\) \$answer"),
    ],
)
def test_bad_templates_are_named(template, message):
    with pytest.raises(ValueError, match=message):
        build_self_prompt(question="Q", negative="N", positive="P", template=template)


def test_fill_template_names_the_template():
    with pytest.raises(ValueError, match="continue template lacks"):
        build_continue_prompt(question="Q", positive="P", analysis="A", template="$question $positive")
    assert fill_template("a $b", b="c") == "a c"


def test_locate_and_continue_prompts():
    locate = build_locate_prompt(question="What is 3 + 4 * 2?", negative="3 + 4 = 7", positive="4 * 2 = 8")
    assert "<quote>" in locate and "<analysis>" in locate and "3 + 4 = 7" in locate and "4 * 2 = 8" in locate
    follow = build_continue_prompt(question="What is 3 + 4 * 2?", positive="4 * 2 = 8", analysis="Adds first.")
    assert "What is 3 + 4 * 2?" in follow and "4 * 2 = 8" in follow and "Adds first." in follow
    assert "\\boxed{" in CONTINUE_TEMPLATE and "\\boxed{" in SELF_TEMPLATE


def test_seed_reflection_spacing():
    assert seed_reflection("x = 7.") == " " + REFLECTION_OPENER
    assert seed_reflection("x = 7.\n") == REFLECTION_OPENER
    assert seed_reflection("") == REFLECTION_OPENER
    assert seed_reflection("x", opener="Hmm") == " Hmm"


def test_prefix_lengths():
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 3, 4, 5]) == 4
    assert common_prefix_len([1, 2], [3, 2]) == 0
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len((7, 8, 9), [7, 8, 0]) == 2
    assert reflection_start_in(RECON, NEGATIVE) == len("First, 3 + 4 = 7. ")
    assert reflection_start_in(NEGATIVE, NEGATIVE) == len(NEGATIVE)
