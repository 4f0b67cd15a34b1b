"""Reading docs/*.md the way GitHub renders them: headings and the anchors it gives them."""

from __future__ import annotations

import re

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^(```|~~~)")


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def sections(markdown: str) -> dict[str, str]:
    """Anchor -> the text under that heading up to the next heading of the same or a higher level.

    Repeated headings get GitHub's -1, -2 suffixes; fenced code blocks are not searched for headings.
    """
    lines = markdown.splitlines()
    headings: list[tuple[int, int, str]] = []
    fenced = False
    for number, line in enumerate(lines):
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            headings.append((number, len(match.group(1)), match.group(2)))
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, (number, level, title) in enumerate(headings):
        anchor = github_anchor(title)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        end = next((n for n, lvl, _ in headings[index + 1 :] if lvl <= level), len(lines))
        out[anchor] = "\n".join(lines[number + 1 : end])
    return out


def local_links(markdown: str) -> list[str]:
    """Anchors of the same-page links `[text](#anchor)`."""
    return re.findall(r"\]\(#([^)\s]+)\)", markdown)
