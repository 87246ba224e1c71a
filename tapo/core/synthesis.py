r"""Micro-reflective trajectory synthesis: the prompts the policy answers, and parsing what it writes.

Two strategies use these pieces:

- `self` (the paper): one prompt (`SELF_TEMPLATE`) asks for a diagnosis of y-'s first critical
  mistake and a reconstruction (y- verbatim up to the mistake, a reflection, the corrected
  reasoning to a final \boxed{} answer); `parse_synthesis` extracts (analysis, reconstruction).
- `splice`: a LOCATE prompt asks the model to quote the span of y- where it first goes wrong
  (`parse_locate`, `find_quote_end`); the code keeps y- up to there, and a CONTINUE prompt has the
  model continue that prefix, seeded with `REFLECTION_OPENER`, as its own assistant turn.

Templates use `string.Template` placeholders ($question, $negative, $positive, $analysis), so the
braces of \boxed{} need no escaping; a literal dollar sign in a template is written $$.

Each format's answer is complete at its last closing tag (`SELF_STOP`, `LOCATE_STOP`): nothing the
model writes after it is read, so generation may stop there.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

REFLECTION_OPENER = "Wait, let me double-check"
SELF_STOP = "</reconstruction>"  # a `self` answer is <analysis>...</analysis><reconstruction>...</reconstruction>
LOCATE_STOP = "</analysis>"  # a LOCATE answer is <quote>...</quote><analysis>...</analysis>

SELF_TEMPLATE = r"""You are an expert reviewer of math solutions, and you also write in the voice of the student whose work you review.

Below are a math question, a WRONG response from the student, and a CORRECT response to the same question.

Your goals:
1. Find the FIRST critical mistake in the wrong response: the earliest step that makes its final answer wrong. Say where it is and what kind of mistake it is (for example an arithmetic slip, a misread condition, a wrong formula, a logical gap).
2. Write a reconstruction of the wrong response:
   - copy the wrong response VERBATIM, character for character, from its beginning up to and including that mistake; change nothing in this part;
   - then turn naturally into a short reflection in the student's own voice (for example "Wait, let me double-check ...") that notices the mistake and says what went wrong;
   - then continue with the corrected reasoning, using the correct response as a guide, to the final answer written as \boxed{answer}.
   Keep the student's style, tone and notation throughout. Inside the reconstruction, never mention the correct response, a reviewer, or these instructions.
3. Obey the output format exactly: first <analysis>...</analysis>, then <reconstruction>...</reconstruction>, and nothing else.

### Example
Question: What is 3 + 4 * 2?
Wrong response: First, 3 + 4 = 7. Then 7 * 2 = 14. The answer is \boxed{14}.
Correct response: Multiplication comes first: 4 * 2 = 8, and 3 + 8 = 11. The answer is \boxed{11}.
Output:
<analysis>The first critical mistake is "First, 3 + 4 = 7.": it adds before multiplying, an order-of-operations error.</analysis>
<reconstruction>First, 3 + 4 = 7. Wait, let me double-check the order of operations: multiplication comes before addition, so 4 * 2 must be done first. 4 * 2 = 8, then 3 + 8 = 11. The answer is \boxed{11}.</reconstruction>

### Question
$question

### Wrong response
$negative

### Correct response
$positive

### Your output
"""

LOCATE_TEMPLATE = r"""You are an expert reviewer of math solutions.

Below are a math question, a WRONG response, and a CORRECT response to the same question.

Find the FIRST critical mistake in the wrong response: the earliest step that makes its final answer wrong.
1. Quote the exact text of the wrong response where it first goes wrong: one short span (a sentence or an equation), copied character for character and ending where the mistake ends. Do not paraphrase, fix or shorten anything inside the quote.
2. Diagnose it: say what kind of mistake it is and what the correct step would be.

Output exactly:
<quote>the exact span copied from the wrong response</quote>
<analysis>your diagnosis</analysis>

### Example
Question: What is 3 + 4 * 2?
Wrong response: First, 3 + 4 = 7. Then 7 * 2 = 14. The answer is \boxed{14}.
Correct response: Multiplication comes first: 4 * 2 = 8, and 3 + 8 = 11. The answer is \boxed{11}.
Output:
<quote>First, 3 + 4 = 7.</quote>
<analysis>Order-of-operations error: it adds before multiplying; 4 * 2 = 8 comes first, then 3 + 8 = 11.</analysis>

### Question
$question

### Wrong response
$negative

### Correct response
$positive

### Your output
"""

CONTINUE_TEMPLATE = r"""Solve the following math problem. A correct reference solution and a note about a mistake to avoid are given to help you.

### Question
$question

### Reference solution
$positive

### Note on the mistake
$analysis

Your answer begins with your own earlier attempt, which contains that mistake. Continue it from exactly where it stops: briefly reflect to catch the mistake, then give the corrected reasoning in your own words and style, and end with the final answer as \boxed{answer}. Do not mention the reference solution or the note.
"""


def fill_template(template: str, *, name: str = "template", **values: str) -> str:
    r"""Substitute $-placeholders, requiring the template to use exactly the names given.

    Braces (as in \boxed{}) are literal; a literal dollar sign is written $$.

    >>> fill_template(r"Q: $question. Put it in \boxed{}, costs $$1.", question="1+1")
    'Q: 1+1. Put it in \\boxed{}, costs $1.'
    """
    parsed = string.Template(template)
    if not parsed.is_valid():
        raise ValueError(f"{name} has a '$' that starts no valid placeholder; write a literal dollar sign as $$")
    used = set(parsed.get_identifiers())
    missing = [key for key in values if key not in used]
    unknown = sorted(used - set(values))
    if missing:
        raise ValueError(f"{name} lacks the placeholder(s) {', '.join('$' + key for key in missing)}")
    if unknown:
        raise ValueError(
            f"{name} uses unknown placeholder(s) {', '.join('$' + key for key in unknown)} "
            f"(known: {', '.join('$' + key for key in values)}); write a literal dollar sign as $$"
        )
    return parsed.substitute(values)


def build_self_prompt(*, question: str, negative: str, positive: str, template: str = SELF_TEMPLATE) -> str:
    """The user-message text of the `self` synthesis prompt (the adapter applies the chat template).

    >>> prompt = build_self_prompt(question="What is 2 + 2?", negative="2 + 2 = 5", positive="2 + 2 = 4")
    >>> "What is 2 + 2?" in prompt and "2 + 2 = 5" in prompt and "<reconstruction>" in prompt
    True
    """
    return fill_template(
        template, name="self synthesis template", question=question, negative=negative, positive=positive
    )


def build_locate_prompt(*, question: str, negative: str, positive: str, template: str = LOCATE_TEMPLATE) -> str:
    """The user-message text of the `splice` LOCATE prompt: quote and diagnose y-'s first mistake.

    >>> "<quote>" in build_locate_prompt(question="What is 2 + 2?", negative="2 + 2 = 5", positive="2 + 2 = 4")
    True
    """
    return fill_template(template, name="locate template", question=question, negative=negative, positive=positive)


def build_continue_prompt(*, question: str, positive: str, analysis: str, template: str = CONTINUE_TEMPLATE) -> str:
    """The user-message text of the `splice` CONTINUE prompt.

    The adapter prefills the assistant turn with y-'s kept prefix plus `seed_reflection(prefix)`,
    and the model writes the reflection and the corrected reasoning after it.

    >>> prompt = build_continue_prompt(question="What is 2 + 2?", positive="2 + 2 = 4", analysis="5 is wrong.")
    >>> "What is 2 + 2?" in prompt and "5 is wrong." in prompt
    True
    """
    return fill_template(template, name="continue template", question=question, positive=positive, analysis=analysis)


def seed_reflection(prefix: str, *, opener: str = REFLECTION_OPENER) -> str:
    """The text that follows y-'s kept prefix to start the reflection: the opener, spaced once.

    >>> seed_reflection("First, 3 + 4 = 7."), seed_reflection("First, 3 + 4 = 7.\\n")
    (' Wait, let me double-check', 'Wait, let me double-check')
    """
    if not prefix or prefix[-1].isspace():
        return opener
    return " " + opener


@dataclass(frozen=True)
class _Block:
    """The text after one opening tag (or recovered before an orphan closing tag)."""

    tag: str  # lower-case tag name
    start: int  # character index in the source where the content starts
    text: str  # the content, not stripped
    complete: bool  # ended by its own closing tag


def _tag_blocks(text: str, tags: Sequence[str]) -> list[_Block]:
    """Every block of the given tags, tolerant of case, inner white space, and missing closings.

    A block runs from its opening tag to the next tag event of any of `tags` (so no block contains
    another tag); it is complete when that event is its own closing tag. An orphan closing tag
    right after another tag's closing tag (`</analysis> text </reconstruction>`) recovers the text
    between them as a complete block; other orphan closings are ignored.
    """
    pattern = re.compile(r"<\s*(/?)\s*(" + "|".join(map(re.escape, tags)) + r")\s*>", re.IGNORECASE)
    events = [(m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in pattern.finditer(text)]
    blocks: list[_Block] = []
    for k, (_, end, closing, tag) in enumerate(events):
        following = events[k + 1] if k + 1 < len(events) else None
        previous = events[k - 1] if k > 0 else None
        if not closing:
            stop = following[0] if following else len(text)
            complete = following is not None and following[2] and following[3] == tag
            blocks.append(_Block(tag=tag, start=end, text=text[end:stop], complete=complete))
        elif previous is not None and previous[2] and previous[3] != tag:
            blocks.append(_Block(tag=tag, start=previous[1], text=text[previous[1] : events[k][0]], complete=True))
    return blocks


def _pick(blocks: Sequence[_Block]) -> _Block | None:
    """The last non-empty complete block, else the last non-empty incomplete one, else None."""
    filled = [block for block in blocks if block.text.strip()]
    complete = [block for block in filled if block.complete]
    if complete:
        return complete[-1]
    return filled[-1] if filled else None


def _parse_blocks(text: str, *, main: str, other: str) -> tuple[_Block, str] | None:
    """(the chosen main block, other content) with the rules of `parse_synthesis`; None without a main block."""
    blocks = _tag_blocks(text, (main, other))
    chosen = _pick([block for block in blocks if block.tag == main])
    if chosen is None:
        return None
    others = [block for block in blocks if block.tag == other]
    companion = _pick([block for block in others if block.start < chosen.start]) or _pick(others)
    return chosen, companion.text.strip() if companion else ""


def _parse_pair(text: str, *, main: str, other: str) -> tuple[str, str] | None:
    """(main content, other content) with the rules of `parse_synthesis`; None without a main block."""
    parsed = _parse_blocks(text, main=main, other=other)
    return None if parsed is None else (parsed[0].text.strip(), parsed[1])


def parse_synthesis(text: str) -> tuple[str, str] | None:
    """(analysis, reconstruction) from a `self` synthesis output; None without a non-empty reconstruction.

    Tolerant of what small models write: tags in any case and with white space inside
    (`< Reconstruction >`), prose around the tags, a missing analysis (-> ""), a missing
    closing tag (the block then runs to the next tag or the end of the text), and repeated
    blocks. Of several reconstructions it takes the LAST non-empty complete one (a model that
    repeats itself usually ends with its final version; a trailing unclosed block is usually cut
    off by the token limit), and an unclosed one only when no complete one exists. The analysis
    is the one chosen by the same rule among those before that reconstruction (any, if none is
    before it). Tags and outer white space are stripped.

    >>> parse_synthesis("<analysis> Adds first. </analysis>\\n<Reconstruction>3 + 4 = 7. Wait ... 11")
    ('Adds first.', '3 + 4 = 7. Wait ... 11')
    >>> parse_synthesis("<analysis>only a diagnosis</analysis>") is None
    True
    """
    parsed = _parse_pair(text, main="reconstruction", other="analysis")
    if parsed is None:
        return None
    reconstruction, analysis = parsed
    return analysis, reconstruction


def parse_synthesis_closed(text: str) -> tuple[str, str, bool] | None:
    """`parse_synthesis` plus whether the chosen reconstruction was closed by `</reconstruction>`.

    An unclosed reconstruction is what a synthesis cut off by its token budget leaves: it has
    not reached its final answer, so the trainer drops it (counted as truncated) by default.

    >>> parse_synthesis_closed("<analysis>a</analysis><reconstruction>3 + 4 = 7. Wait")
    ('a', '3 + 4 = 7. Wait', False)
    >>> parse_synthesis_closed("<reconstruction>x = 2, so 2.</reconstruction>")
    ('', 'x = 2, so 2.', True)
    """
    parsed = _parse_blocks(text, main="reconstruction", other="analysis")
    if parsed is None:
        return None
    block, analysis = parsed
    return analysis, block.text.strip(), block.complete


def parse_locate(text: str) -> tuple[str, str] | None:
    """(quote, analysis) from a `splice` LOCATE output; None without a non-empty quote.

    Same tolerance and choice rules as `parse_synthesis`, with <quote> in place of <reconstruction>.

    >>> parse_locate("<quote> First, 3 + 4 = 7. </quote>\\n<analysis>Adds first.</analysis>")
    ('First, 3 + 4 = 7.', 'Adds first.')
    """
    return _parse_pair(text, main="quote", other="analysis")


_QUOTE_MARKS = (('"', '"'), ("\u201c", "\u201d"), ("'", "'"), ("`", "`"))


def _squeeze(text: str, *, keep_single_spaces: bool) -> tuple[str, list[int]]:
    """Text with white space runs collapsed to one space (or removed), and each kept char's source index."""
    chars: list[str] = []
    origin: list[int] = []
    in_space = False
    for i, char in enumerate(text):
        if char.isspace():
            if keep_single_spaces and not in_space:
                chars.append(" ")
                origin.append(i)
            in_space = True
        else:
            chars.append(char)
            origin.append(i)
            in_space = False
    return "".join(chars), origin


def find_quote_end(quote: str, text: str) -> int | None:
    """Character index in `text` just past the first occurrence of `quote`; None when it is not there.

    Tried in order: the exact quote (outer white space stripped); the quote with white space runs
    collapsed, matched against the text collapsed the same way; the quote with all white space
    removed (`3+4=7` finds `3 + 4 = 7`); then the same three without wrapping quotation marks.
    Normalized matches are mapped back to indices of the original text. A cut must not split a
    number or a word: the first occurrence that neither starts nor ends inside a run of letters and
    digits is taken, else the first one, extended to the end of the run it stops in.

    >>> text = "First, 3 + 4 = 7.  Then\\n7 * 2 = 14."
    >>> find_quote_end("3 + 4 = 7.", text), find_quote_end("Then 7 * 2", text), find_quote_end("8 * 2", text)
    (17, 29, None)
    >>> text = "Step 1: 5 + 6 = 11\\nStep 2: 11 - 10 = 1\\nStep 3: 1 * 3 = 3"
    >>> text[: find_quote_end("= 1", text)].endswith("11 - 10 = 1")  # not inside step 1's "11"
    True
    >>> text = "Step 2: 17 - 4 = 71 then"
    >>> text[: find_quote_end("7-4=7", text)]  # only inside numbers: the whole number is kept
    'Step 2: 17 - 4 = 71'
    """
    needle = quote.strip()
    candidates = [needle]
    for left, right in _QUOTE_MARKS:
        if len(needle) > 2 and needle.startswith(left) and needle.endswith(right):
            candidates.append(needle[1:-1].strip())
    for candidate in candidates:
        if not candidate:
            continue
        spans = [(i, i + len(candidate)) for i in _occurrences(text, candidate)]
        for keep_single_spaces in (True, False):
            if spans:
                break
            squeezed_text, origin = _squeeze(text, keep_single_spaces=keep_single_spaces)
            squeezed_quote, _ = _squeeze(candidate, keep_single_spaces=keep_single_spaces)
            spans = [(origin[i], origin[i + len(squeezed_quote) - 1] + 1)
                     for i in _occurrences(squeezed_text, squeezed_quote)] if squeezed_quote else []
        if spans:
            clean = [end for start, end in spans if not _inside_run(text, start) and not _inside_run(text, end)]
            if clean:
                return clean[0]
            end = spans[0][1]
            while end < len(text) and _inside_run(text, end):
                end += 1
            return end
    return None


def _occurrences(text: str, needle: str) -> list[int]:
    """Start index of every occurrence of `needle` in `text` (overlapping ones too)."""
    starts, found = [], text.find(needle)
    while found >= 0:
        starts.append(found)
        found = text.find(needle, found + 1)
    return starts


def _inside_run(text: str, position: int) -> bool:
    """Whether a cut at `position` falls between two letters or digits (inside a number or a word)."""
    return 0 < position < len(text) and text[position - 1].isalnum() and text[position].isalnum()


def common_prefix_len(a: Sequence, b: Sequence) -> int:
    """Length of the longest common prefix of two sequences (token ids, or characters).

    >>> common_prefix_len([5, 6, 7, 8], [5, 6, 9]), common_prefix_len("abc", "abd")
    (2, 2)
    """
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def reflection_start_in(reconstruction: str, negative: str) -> int:
    """Characters of y- that the reconstruction kept verbatim: their longest common prefix.

    The text-level measure of prefix fidelity (the token-level one is `common_prefix_len` on ids).

    >>> reflection_start_in("First, 3 + 4 = 7. Wait, let me double-check", "First, 3 + 4 = 7. Then 7 * 2 = 14.")
    18
    """
    return common_prefix_len(reconstruction, negative)


def correction_start_char(text: str, *, reflection_start_char: int) -> int:
    """Where the correction begins in a constructed trajectory: the end of the reflection.

    The reflection is the turn that names the mistake: from `reflection_start_char` (white space
    skipped) to the end of its line, or to the end of its first sentence when the trajectory has
    no line break after it. Used to show a trajectory as kept prefix | reflection | correction.

    >>> text = "Step 1: 5 + 6 = 12\\nWait, 5 + 6 is 11, not 12. I added wrong.\\nStep 1: 5 + 6 = 11"
    >>> start = text.index("\\nWait")  # the cut often falls just before the line break
    >>> text[start:correction_start_char(text, reflection_start_char=start)]
    '\\nWait, 5 + 6 is 11, not 12. I added wrong.\\n'
    >>> correction_start_char("ab. Wait, no. So 3.", reflection_start_char=4)
    14
    """
    start = min(max(reflection_start_char, 0), len(text))
    while start < len(text) and text[start].isspace():
        start += 1
    line_end = text.find("\n", start)
    if line_end >= 0:
        return line_end + 1
    sentence = re.search(r"[.!?](\s+|$)", text[start:])
    return start + sentence.end() if sentence is not None else len(text)
