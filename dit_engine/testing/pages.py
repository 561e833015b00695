"""Checks of the HTML pages the engine writes (``summary.html``), as a browser would load them."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from PIL import Image


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def page_images(page: Path) -> list[Path]:
    """The files of every ``<img src>`` of ``page``, resolved against its folder as a browser does."""
    parser = _Images()
    parser.feed(page.read_text())
    return [page.parent / unquote(source) for source in parser.sources]


def assert_page_images_load(page: Path, expected: int) -> None:
    """``page`` shows ``expected`` images and each one loads: the file exists and decodes."""
    images = page_images(page)
    assert len(images) == expected, [str(i) for i in images]
    for path in images:
        assert path.is_file(), f"{page.name} links {path}, which does not exist"
        with Image.open(path) as image:
            image.load()  # decodes the whole file: a truncated PNG fails here
            assert image.width > 0 and image.height > 0
