"""imgbuild report --html: the run history as one page, read back from a real browser (headless Chromium).

The history comes from real jobs on the PVE simulator (guest side stubbed, see conftest.py); the page is
opened in Debian's chromium, and the test reads the DOM Chromium rendered and a screenshot it took.
"""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from builder.targets.local.png import ppm_to_png
from tests.jobs.conftest import Guests
from tests.local.guest import png_pixels

CHROMIUM = Path("/usr/bin/chromium")
MAGENTA = bytes((255, 0, 255))


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (scripts/bootstrap --test installs it)")
    profile = tmp_path / "chromium-profile"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--window-size=1400,1000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


class Dom(HTMLParser):
    """The parts of the rendered DOM the test reads: recipe rows, their runs, images."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "tr" and "recipe" in classes:
            self.rows.append({"name": a.get("data-recipe"), "runs": [], "img": None})
        elif tag == "li" and "run" in classes and self.rows:
            self.rows[-1]["runs"].append({"failed": "failed" in classes, "text": ""})
            self._in.append("li")
        elif tag == "img" and self.rows:
            self.rows[-1]["img"] = a.get("src")
        elif self._in:
            self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._in and self.rows and self.rows[-1]["runs"]:
            self.rows[-1]["runs"][-1]["text"] += data


def test_report_page_in_a_browser(cli, guests: Guests, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("make", "web-server", "lxde-desktop", "--target", "sim") == 0
    guests.failing.add("web-server")
    assert cli("make", "web-server", "--target", "sim", "--rebuild") == 1
    assert cli("make", "golden-base", "--target", "sim") == 0
    shot = ppm_to_png(b"P6 64 48 255\n" + MAGENTA * 64 * 48)  # stands in for the desktop check's screenshot
    (cli.out / "lxde-desktop" / "screenshot.png").write_bytes(shot)
    page = tmp_path / "lab.html"
    assert cli("report", "--html", str(page)) == 0
    assert "3 recipe(s), 4 run(s)" in capsys.readouterr().out
    source = page.read_text()
    assert "<script" not in source and "http://" not in source and "https://" not in source  # self-contained

    dumped = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Dom()
    dom.feed(dumped.stdout)
    rows = {r["name"]: r for r in dom.rows}
    assert [r["name"] for r in dom.rows] == ["golden-base", "web-server", "lxde-desktop"]  # newest run first
    assert set(rows) == {"web-server", "lxde-desktop", "golden-base"}
    web = rows["web-server"]["runs"]
    assert [r["failed"] for r in web] == [True, False]  # newest first: the failed rebuild, then the good make
    assert "make FAILED" in web[0]["text"] and "1 check(s) failed: service ssh" in web[0]["text"]
    assert "make ok" in web[1]["text"] and "2/2 checks" in web[1]["text"] and "verify" in web[1]["text"]
    assert rows["lxde-desktop"]["img"].startswith("data:image/png;base64,")
    assert rows["web-server"]["img"] is None

    picture = tmp_path / "page.png"
    shown = chromium(tmp_path, f"--screenshot={picture}", page.as_uri())
    assert shown.returncode == 0 and picture.exists(), shown.stderr[-2000:]
    width, height, colours = png_pixels(picture.read_bytes())
    assert (width, height) == (1400, 1000)
    assert MAGENTA in {c[:3] for c in colours}  # the thumbnail was drawn
    assert any(c[:3] == bytes((204, 34, 34)) for c in colours)  # the failed run's red marker (#c22)
