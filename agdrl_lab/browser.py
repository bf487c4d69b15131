"""Pages checked in a real browser: headless Chromium (the system's, e.g. Debian's
``chromium`` package; playwright's own browser download is not used) driven by playwright
(the 'browser' extra). Opens a page from the file system and reports what a reader would
meet: console errors, requests that leave the page, tables, images that did not load, and
whether each video plays."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

PLAY_SECONDS = 0.5
"""How long each video is watched for its clock to advance."""


def chromium_path() -> str | None:
    """The system's Chromium executable, or None when there is none."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageCheck:
    """What a browser met on one page."""

    errors: list[str] = field(default_factory=list)
    """Console errors and uncaught exceptions."""
    requests: list[str] = field(default_factory=list)
    """URLs the page asked for beyond itself (data: URIs are part of it)."""
    tables: int = 0
    images: list[tuple[str, bool]] = field(default_factory=list)
    """(alt text, whether it loaded: decoded, with a width) of each image."""
    videos: list[tuple[str, float]] = field(default_factory=list)
    """(title, seconds its clock advanced in :data:`PLAY_SECONDS` of watching) of each
    video."""

    def problems(self) -> list[str]:
        """What a reader would miss, in words (empty: nothing)."""
        return ([f"console: {e}" for e in self.errors]
                + [f"request beyond the page: {r}" for r in self.requests]
                + [f"image not loaded: {alt}" for alt, loaded in self.images if not loaded]
                + [f"video does not play: {title}" for title, advance in self.videos
                   if advance <= 0])


def check_page(path: Path, screenshot: Path | None = None) -> PageCheck:
    """Open ``path`` in headless Chromium, watch its videos play, and save a screenshot of the
    whole page to ``screenshot`` when given."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise ImportError("checking a page in a browser needs the 'browser' extra: pip "
                          "install 'agdrl[browser]'") from err
    executable = chromium_path()
    if executable is None:
        raise ImportError("no Chromium on this machine (Debian: apt-get install chromium)")
    check, url = PageCheck(), Path(path).resolve().as_uri()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: check.errors.append(m.text) if m.type == "error"
                    else None)
            page.on("pageerror", lambda err: check.errors.append(str(err)))
            page.on("request", lambda r: check.requests.append(r.url)
                    if r.url != url and not r.url.startswith("data:") else None)
            page.goto(url, wait_until="load")
            check.tables = page.locator("table").count()
            check.images = [tuple(i) for i in page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")]
            page.wait_for_function(  # every video has its first frame
                "() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
                timeout=20_000)
            # one at a time, scrolled into view as a reader would (Chromium pauses muted
            # videos that are off screen)
            for i in range(page.locator("video").count()):
                video = page.locator("video").nth(i)
                video.scroll_into_view_if_needed()
                start = video.evaluate(  # from the start, not looping: the clock only grows
                    "async v => { v.loop = false; v.currentTime = 0; await v.play(); "
                    "return v.currentTime; }")
                page.wait_for_timeout(PLAY_SECONDS * 1000)
                check.videos.append((video.get_attribute("title") or "",
                                     video.evaluate("v => v.currentTime") - start))
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.evaluate("() => document.querySelectorAll('video').forEach(v => v.pause())")
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return check
