#!/usr/bin/env python3
"""Checks every link between the project's Markdown pages, offline.

    scripts/check-links.py [FILE.md ...]     (default: *.md at the root and docs/**/*.md)

Each inline link or image `[text](target)` outside code must resolve: a relative path to a
file or directory that exists, and a `#fragment` to a heading of the page it names (GitHub's
anchors: lower case, punctuation dropped, spaces to hyphens, `-1`, `-2` for repeats).
External links (http, https, mailto) are not fetched: CI runs without the network.
Prints every broken link and `LINKS files=N links=M broken=K`; exits 1 when K > 0.
"""
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")


def prose_lines(text):
    """(line number, line) of the lines outside fenced and indented code, code spans blanked."""
    fenced = False
    previous_blank = True
    indented = False
    for number, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        blank = not line.strip()
        # An indented block starts after a blank line; list items' continuations are not code.
        if line.startswith("    ") and (previous_blank or indented) and not blank:
            if indented or not re.match(r"\s*([-*+]|\d+\.)\s", line):
                indented = True
                previous_blank = False
                continue
        if not blank:
            indented = False
        previous_blank = blank
        yield number, CODE_SPAN.sub("", line)


def slugify(title):
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
    title = title.strip().lower()
    title = re.sub(r"[^\w\- ]", "", title)
    return title.replace(" ", "-")


def headings_with_code(path):
    """Headings keep their code spans' text (`Idempotency-Key` counts in the anchor)."""
    result = set()
    seen = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = slugify(heading.group(2).replace("`", ""))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def check(page):
    broken = []
    links = 0
    text = page.read_text(encoding="utf-8")
    for number, line in prose_lines(text):
        for match in LINK.finditer(line):
            target = match.group(1)
            links += 1
            if re.match(r"^(https?|mailto):", target):
                continue
            path_part, _, fragment = target.partition("#")
            where = page if not path_part else (page.parent / path_part).resolve()
            if not where.exists():
                broken.append((number, target, "no such file"))
                continue
            if fragment:
                if where.is_dir() or where.suffix != ".md":
                    broken.append((number, target, "a fragment of a page that is not Markdown"))
                elif fragment not in headings_with_code(where):
                    broken.append((number, target, f"no heading #{fragment} in {where.name}"))
    return links, broken


def main(argv):
    if argv:
        pages = [Path(a).resolve() for a in argv]
    else:
        pages = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))
    total_links = 0
    total_broken = 0
    for page in pages:
        links, broken = check(page)
        total_links += links
        total_broken += len(broken)
        for number, target, why in broken:
            print(f"{os.path.relpath(page, ROOT)}:{number}: broken link {target}: {why}")
    print(f"LINKS files={len(pages)} links={total_links} broken={total_broken}")
    return 1 if total_broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
