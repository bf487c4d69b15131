"""Self-contained HTML pages: every figure and video is embedded as a base64 data URI, so a
page opens from the file system in any browser, without a network or the files beside it."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from urllib.parse import unquote

MEDIA_TYPES = {".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml",
               ".mp4": "video/mp4"}
"""The files a page embeds, by suffix."""

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
img, video { max-width: 100%; display: block; margin: 0.6em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
figcaption { font-size: 0.9em; color: #555; }
"""


def data_uri(path: Path) -> str:
    """``path``'s content as a data URI of its media type."""
    kind = MEDIA_TYPES[path.suffix.lower()]
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def video_element(mp4: Path, label: str) -> str:
    """A looping, muted (so browsers let it start by itself) video with controls."""
    return (f'<video controls autoplay muted loop playsinline title="{html.escape(label)}" '
            f'src="{data_uri(mp4)}"></video>')


def page(title: str, body: str) -> str:
    """A whole HTML document around ``body`` (no external style, script or font)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


_IMG = re.compile(r'<img alt="([^"]*)" src="([^"]+)"\s*/?>')
_VIDEO_LINK = re.compile(r'<a href="([^"]+\.mp4)">([^<]*)</a>')


def embed_media(body: str, folder: Path) -> str:
    """HTML (as Python-Markdown writes it) with every local image and video it refers to,
    relative to ``folder``, embedded: ``<img>`` of a PNG or GIF gets a data URI, except that a
    GIF with an MP4 of the same name beside it becomes that video (smaller, with controls);
    a link to an MP4 becomes the video. A missing file raises FileNotFoundError."""

    def image(match: re.Match) -> str:
        alt, src = match.group(1), match.group(2)
        path = folder / unquote(src)
        if path.suffix.lower() == ".gif" and path.with_suffix(".mp4").is_file():
            return video_element(path.with_suffix(".mp4"), html.unescape(alt))
        return f'<img alt="{alt}" src="{data_uri(path)}">'

    def video(match: re.Match) -> str:
        return video_element(folder / unquote(match.group(1)), html.unescape(match.group(2)))

    return _VIDEO_LINK.sub(video, _IMG.sub(image, body))


def markdown_page(title: str, markdown_text: str, folder: Path) -> str:
    """A page of Markdown (tables included) whose local media, relative to ``folder``, are
    embedded (:func:`embed_media`)."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    return page(title, embed_media(body, folder))
