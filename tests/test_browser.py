"""The rendered smoke report in a real headless browser (Debian's chromium through selenium's chromedriver).

``tsd-study reproduce --profile smoke`` renders into the session's smoke directory, reusing the smoke run store that
tests/test_notebooks.py shares (whichever module runs first trains the runs), and the index page is served from
localhost. It must load with no console error, and show every study's table, figures and verdicts.

Runtime: about 3 minutes once the smoke runs exist (9 notebooks executed by papermill, then the browser).
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tsd_study.launch.request import StudyRequest
from tsd_study.report.figures import figure_names
from tsd_study.report.notebook import NOTEBOOK_STUDIES, OVERVIEW, studies_in
from tsd_study.report.reproduce import reproduce
from tsd_study.studies import load_study

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,1000")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")


@pytest.fixture(scope="module")
def report(smoke_directory: Path) -> Path:
    outcome = reproduce(StudyRequest("smoke", store=smoke_directory / "runs"), out=smoke_directory / "report")
    assert outcome.ok, (outcome.failed_notebooks, outcome.unfinished_runs)
    return outcome.out


@pytest.fixture(scope="module")
def index_url(report: Path) -> Iterator[str]:
    """The report served over HTTP on a free localhost port."""
    handler = functools.partial(_QuietHandler, directory=str(report))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def loaded(browser: webdriver.Chrome, index_url: str, report: Path) -> webdriver.Chrome:
    """The index page, loaded, with a full-page screenshot beside it (index.png) for a person to look at."""
    browser.get(index_url)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, height)
    browser.save_screenshot(str(report.parent / "index.png"))
    return browser


def test_index_loads_without_console_errors(loaded: webdriver.Chrome) -> None:
    messages = loaded.get_log("browser")
    assert [message for message in messages if message["level"] in ("SEVERE", "ERROR")] == []
    assert loaded.title == "tsd-study: smoke profile"


def test_every_table_figure_and_verdict_is_present(loaded: webdriver.Chrome) -> None:
    studies = studies_in("smoke")
    sections = [element.get_attribute("id") for element in loaded.find_elements("css selector", "section.study")]
    assert sections == list(studies)
    assert len(loaded.find_elements("css selector", "section.study table.study-table")) == len(studies)
    expected_rows = sum(len(load_study(name).rows_for("smoke")) for name in studies)
    table_rows = loaded.execute_script(
        "return [...document.querySelectorAll('table.study-table')].map(t => t.tBodies[0].rows.length)")
    assert sum(table_rows) >= expected_rows  # rows down, or metrics down when a study has more metrics than rows
    figures = loaded.find_elements("css selector", "img.figure")
    assert [figure.get_attribute("alt") for figure in figures] == [name for study in studies
                                                                  for name in figure_names(study)]
    assert all(loaded.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", figure)
               for figure in figures)
    claims = sum(len(load_study(name).claims) for name in studies)
    assert len(loaded.find_elements("css selector", "#all-verdicts tbody tr")) == claims
    assert len(loaded.find_elements("css selector", "table.study-verdicts tbody tr")) == claims


def test_notebook_pages_are_linked_and_exist(loaded: webdriver.Chrome, report: Path) -> None:
    links = {link.get_attribute("href").rsplit("/", 1)[-1]
             for link in loaded.find_elements("css selector", "a[href$='.html']")}
    assert links == {f"{name}.html" for name in (*NOTEBOOK_STUDIES, OVERVIEW)}
    assert all((report / link).is_file() for link in links)
