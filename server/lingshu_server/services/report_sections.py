"""A report's Findings and Impression, read from the model card's format
("Findings: {} Impression: {}"), or nothing.

Only text that follows the format is split: one `Findings:` heading, then one `Impression:`
heading, each followed by some text (headings may be in capitals, bold or a Markdown heading).
Anything else (no headings, one of them missing or repeated, in the other order, or an empty
section) leaves both sections unset; the full text is always kept by the caller, so nothing is
invented and nothing is lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A heading word at the start of a line or after a space, optionally in Markdown emphasis or a
# Markdown heading, then a colon (the emphasis may close after the colon: **Findings:**).
_HEADING = re.compile(
    r"(?:^|(?<=\s))[#*_ ]*(findings|impressions?)[*_ ]*:[*_]*",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Sections:
    findings: str | None
    impression: str | None

    @property
    def found(self) -> bool:
        return self.findings is not None and self.impression is not None


NOT_FOUND = Sections(None, None)


def parse_sections(text: str) -> Sections:
    headings = list(_HEADING.finditer(text))
    names = [match.group(1).lower().rstrip("s") for match in headings]
    if names != ["finding", "impression"]:
        return NOT_FOUND
    findings_heading, impression_heading = headings
    findings = text[findings_heading.end() : impression_heading.start()].strip()
    impression = text[impression_heading.end() :].strip()
    if not findings or not impression:
        return NOT_FOUND
    return Sections(findings, impression)
