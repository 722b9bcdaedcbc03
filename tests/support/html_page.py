"""Reading the HTML reports back: sections, figures, images, links; self-containment."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser


class PageParser(HTMLParser):
    """Collect sections, figures, images, links and text of a report."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.figures: list[tuple[str | None, str]] = []  # (section id, kind)
        self.images: list[str] = []
        self.text: list[str] = []
        self.stack: list[str | None] = []
        self.section: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs.extend((tag, k, v or "") for k, v in attrs)
        if tag == "section":
            self.stack.append(a.get("id"))
            if a.get("id"):
                self.section = a["id"]
        if tag == "figure":
            self.figures.append((self.section, a.get("data-figure", "")))
        if tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "section" and self.stack:
            closed = self.stack.pop()
            if closed is not None:
                ids = [s for s in self.stack if s is not None]
                self.section = ids[-1] if ids else None

    def handle_data(self, data):
        self.text.append(data)


def parse_page(text: str) -> PageParser:
    page = PageParser()
    page.feed(text)
    page.close()
    return page


def assert_self_contained(page: PageParser) -> None:
    """No script, no external resource: images inline, links in-page or relative."""
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, key, value in page.attrs:
        if key == "src":
            assert value.startswith("data:image/"), f"<{tag}> loads {value[:60]}"
        if key == "href":
            assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", value, re.I), f"external {value}"
        assert "http://" not in value and "https://" not in value, f"URL in {tag} {key}"


def decode_images(page: PageParser) -> list[tuple[int, int]]:
    """Decode every embedded PNG; return their sizes."""
    from PIL import Image

    sizes = []
    for src in page.images:
        header, _, payload = src.partition(",")
        assert header == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
        assert image.width > 100 and image.height > 50
        sizes.append(image.size)
    return sizes
