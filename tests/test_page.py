"""The web page at / of `jointspace serve`, in a real headless Chromium (Debian's `chromium`),
against the real service (in this process, on a loopback port) over a small real collection:
six photos with captions, embedded by an untrained model over the tiny random open_clip
backbone (conftest: `corpus`, `tiny_model`).

Without a driver: `chromium --dump-dom` runs the page's JavaScript (a search link shows its
results) and `--screenshot` saves what a phone and a desktop see. With selenium and Debian's
`chromium-driver` (the same version as the browser, installed offline, no download at run time):
typing, Enter, "more like this", the detail dialog, back, a dropped image, label chips, the API
key prompt. The browser tests skip with a reason when chromium (or selenium and chromedriver) is
missing, and fail instead when CI=true. Screenshots are kept in $JOINTSPACE_TEST_ARTIFACTS
(default build/test-artifacts)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import CAPTIONS
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "jointspace" / "serve" / "static"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("JOINTSPACE_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
# As ENVIRONMENT.md has it: no sandbox as root, no GPU, and nothing that phones home.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
COLLECTION = "photos"
KEY = "page-test-key"
WAIT_S = 30


def _missing(reason: str) -> None:
    """Skip, or fail when CI=true (CI installs the browser: a missing one is a broken setup)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run; see scripts/setup.sh)")
    pytest.skip(reason)


def requires_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        _missing("no chromium to test the web page in (apt-get install chromium)")


def requires_selenium() -> None:
    requires_chromium()
    if not os.access(CHROMEDRIVER, os.X_OK):
        _missing("no chromedriver to script the web page (apt-get install chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install selenium)")


# -- the service -----------------------------------------------------------------------------


@contextlib.contextmanager
def serving(home: Path, api_key: str | None = None) -> Iterator[str]:
    """The real app over `home`'s collections, served by uvicorn on a free loopback port in a
    thread of this process (the tiny backbone's open_clip config is registered only here);
    yields its base URL."""
    import uvicorn

    from jointspace.serve import ServiceSettings, create_app
    from jointspace.serve.state import Service

    service = Service(ServiceSettings(home=home, api_key=api_key))
    service.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(service=service), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()
        service.close()


def ingest(corpus: Path, model: Path, home: Path) -> Path:
    """The corpus ingested into COLLECTION of a new embedded store at `home`."""
    import jointspace as js

    with js.connect(home=home) as space:
        report = space.ingest(corpus, collection=COLLECTION, model=model)
    assert report.ingested == len(CAPTIONS), report
    return home


@pytest.fixture(scope="module")
def base_url(
    corpus: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    home = ingest(corpus, tiny_model, tmp_path_factory.mktemp("page-home"))
    with serving(home) as url:
        yield url


# -- Chromium without a driver ---------------------------------------------------------------


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with its own throwaway profile."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def dump_dom(tmp_path: Path, url: str) -> Node:
    """The page's DOM once its scripts ran and its fetches were answered."""
    proc = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
    return parse_html(proc.stdout)


@dataclass
class Node:
    """An element of a parsed page: enough DOM to find results, captions and sources."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def all(self, tag: str | None = None, cls: str | None = None, id: str | None = None):
        for child in self.children:
            if isinstance(child, str):
                continue
            if (
                (tag is None or child.tag == tag)
                and (cls is None or cls in child.classes)
                and (id is None or child.attrs.get("id") == id)
            ):
                yield child
            yield from child.all(tag, cls, id)

    def one(self, tag: str | None = None, cls: str | None = None, id: str | None = None) -> Node:
        found = list(self.all(tag, cls, id))
        assert len(found) == 1, f"expected one {tag or ''}.{cls or ''}#{id or ''}: {len(found)}"
        return found[0]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def get_image(url: str, **params: str) -> Image.Image:
    """An image the service serves, checked to be one."""
    response = httpx.get(url, params=params or None, timeout=WAIT_S)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("image/"), response.headers
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


# -- the page as served ------------------------------------------------------------------------


def test_the_page_loads_only_its_own_files(base_url: str) -> None:
    """Everything the page loads comes from the service (no CDN, no web fonts), and the script
    never builds HTML from strings (every text from the service goes in as text)."""
    page = httpx.get(f"{base_url}/", timeout=WAIT_S)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    document = parse_html(page.text)
    references = [
        node.attrs[name]
        for node in document.all()
        for name in ("src", "href")
        if name in node.attrs and node.tag in ("script", "link", "img")
    ]
    assert {"static/app.js", "static/style.css"} <= set(references), references
    for reference in references:
        assert "//" not in reference and not reference.startswith("/"), reference
        response = httpx.get(f"{base_url}/{reference}", timeout=WAIT_S)
        assert response.status_code == 200, (reference, response.status_code)
    css = (STATIC / "style.css").read_text()
    assert "@import" not in css and "url(" not in css, "the stylesheet loads nothing else"
    script = (STATIC / "app.js").read_text()
    sinks = re.findall(
        r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(", script
    )
    assert not sinks, f"app.js builds HTML from strings: {sinks}"


def test_a_search_link_opens_with_its_results(base_url: str, tmp_path: Path) -> None:
    requires_chromium()
    dom = dump_dom(tmp_path, f"{base_url}/?q=coffee&k=3")
    assert dom.one(id="error").attrs.get("hidden") is not None, dom.one(id="error").text
    results = list(dom.one("ol", id="results").all("li", cls="result"))
    assert len(results) == 3, dom.one(id="status").text
    assert dom.one(id="status").text.startswith("3 results for “coffee”")
    captions = set(CAPTIONS.values())
    for result in results:
        caption = result.one(cls="caption").text
        assert caption in captions, caption
        assert float(result.one(cls="score").text) <= 1.0
        assert result.one("button", cls="like-btn").text == "More like this"
        src = result.one("img").attrs["src"]
        assert src.startswith(f"{base_url}/items/{COLLECTION}/"), src
        assert result.one("img").attrs["alt"] == caption
    thumbnail = get_image(results[0].one("img").attrs["src"])
    assert max(thumbnail.size) <= 256
    full = get_image(results[0].one("img").attrs["src"], size="full")
    assert full.size == (64, 48)


def test_a_label_link_filters_and_presses_its_chip(base_url: str, tmp_path: Path) -> None:
    requires_chromium()
    dom = dump_dom(tmp_path, f"{base_url}/?q=coffee&k=6&labels=food&collection={COLLECTION}")
    results = list(dom.one("ol", id="results").all("li", cls="result"))
    food = [c for key, c in CAPTIONS.items() if key.startswith("food/")]
    assert sorted(r.one(cls="caption").text for r in results) == sorted(food)
    for result in results:
        assert "food" in [label.text for label in result.one("ul", cls="labels").all("li")]
    chips = {c.attrs["data-label"]: c.attrs["aria-pressed"] for c in dom.all("button", cls="chip")}
    assert chips["food"] == "true" and chips["animals"] == "false", chips


def test_the_service_error_is_shown_as_text(base_url: str, tmp_path: Path) -> None:
    """An unknown collection: the service's own message, markup in it shown, not run."""
    requires_chromium()
    dom = dump_dom(tmp_path, f"{base_url}/?q=coffee&collection=%3Cb%3Enope%3C/b%3E")
    error = dom.one(id="error")
    assert error.attrs.get("hidden") is None
    assert "Error 404 (not_found)" in error.text, error.text
    assert "serves no collection '<b>nope</b>'" in error.text, error.text
    assert not list(error.all("b")), "the service's text was parsed as HTML"
    assert not list(dom.one("ol", id="results").all("li"))


@pytest.mark.parametrize(
    ("width", "height", "scheme"),
    [(390, 844, "light"), (1280, 800, "light"), (1280, 800, "dark")],
)
def test_screenshots_phone_and_desktop(
    base_url: str, tmp_path: Path, width: int, height: int, scheme: str
) -> None:
    """What a phone and a desktop see of `/?q=coffee`, light and dark, kept as artifacts."""
    requires_chromium()
    name = f"page-{width}x{height}{'-dark' if scheme == 'dark' else ''}.png"
    shot = tmp_path / name
    dark = ["--force-dark-mode"] if scheme == "dark" else []
    chromium(
        tmp_path,
        *dark,
        f"--window-size={width},{height}",
        "--virtual-time-budget=5000",
        f"--screenshot={shot}",
        f"{base_url}/?q=coffee&k=6",
    )
    image = Image.open(shot)
    assert image.format == "PNG" and image.size == (width, height)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 18)
    assert colours is None or len(colours) > 64, "the screenshot is (nearly) blank"
    grey = image.convert("L").resize((32, 32))
    mean = sum(grey.tobytes()) / (32 * 32)
    assert mean < 110 if scheme == "dark" else mean > 150, f"{scheme} page, mean grey {mean:.0f}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / name)


# -- scripted in Chromium (selenium + chromedriver) ----------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium driven through Debian's chromedriver (no driver download)."""
    requires_selenium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message)


def params(driver) -> dict[str, list[str]]:
    return parse_qs(urlsplit(driver.current_url).query)


def results_of(driver) -> list[dict]:
    """The results shown: id, caption, labels, and whether the thumbnail loaded."""
    return driver.execute_script(
        """return [...document.querySelectorAll('#results li.result')].map(li => ({
             id: li.dataset.id,
             caption: li.querySelector('.caption').textContent,
             labels: [...li.querySelectorAll('.labels li')].map(l => l.textContent),
             loaded: [...li.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0),
           }))"""
    )


def press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def active(driver) -> str:
    return driver.execute_script(
        "const a = document.activeElement; return a.id || a.className || a.tagName"
    )


def searched(driver, before: str) -> None:
    """Wait for the search that follows an action: a new status line and no search in flight."""
    wait(
        driver,
        lambda d: d.execute_script(
            "const s = document.getElementById('status').textContent;"
            "return !document.getElementById('results').hasAttribute('aria-busy')"
            " && !s.startsWith('Searching') && s !== arguments[0]",
            before,
        ),
        "no search came back",
    )


def keep(driver, name: str) -> None:
    """A screenshot of what the browser shows now, as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / name))


def status(driver) -> str:
    return driver.execute_script("return document.getElementById('status').textContent")


FULL_IMAGE_WIDTH = (
    "const i = document.getElementById('detail-img'); return i.complete && i.naturalWidth"
)


def test_type_enter_more_like_this_detail_and_back(browser, base_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{base_url}/")
    wait(browser, lambda d: active(d) == "q", "the search box has the focus on an empty page")
    press(browser, "coffee", Keys.ENTER)
    searched(browser, "")
    assert params(browser)["q"] == ["coffee"] and params(browser)["k"] == ["20"]
    wait(browser, lambda d: sum(r["loaded"] for r in results_of(d)) >= 3, "thumbnails loaded")
    first = results_of(browser)
    assert len(first) == len(CAPTIONS)

    # "more like this" on the second result: a search by its id, in the URL
    before = status(browser)
    browser.find_elements(By.CSS_SELECTOR, "#results .like-btn")[1].click()
    searched(browser, before)
    assert params(browser)["id"] == [first[1]["id"]] and "q" not in params(browser)
    assert f"results for like “{first[1]['caption']}”" in status(browser), status(browser)
    assert first[1]["id"] not in [r["id"] for r in results_of(browser)], "not the item itself"
    assert active(browser) == "open", "the first result has the focus"

    # the detail dialog: full image, payload; Escape closes it and gives the focus back
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda d: d.execute_script("return document.getElementById('detail').open"))
    wait(
        browser,
        lambda d: d.execute_script(FULL_IMAGE_WIDTH) == 64,
        "the full image is shown",
    )
    keep(browser, "page-detail-1280x900.png")
    payload = json.loads(browser.find_element(By.ID, "detail-payload").text)
    assert payload["text"] == results_of(browser)[0]["caption"]
    press(browser, Keys.ESCAPE)
    wait(browser, lambda d: not d.execute_script("return document.getElementById('detail').open"))
    assert active(browser) == "open"

    # back: the text search again, restored into the form
    before = status(browser)
    browser.back()
    searched(browser, before)
    assert params(browser)["q"] == ["coffee"]
    assert browser.find_element(By.ID, "q").get_attribute("value") == "coffee"
    assert [r["id"] for r in results_of(browser)] == [r["id"] for r in first]

    # "/" focuses the search box from anywhere
    browser.execute_script("document.activeElement.blur()")
    press(browser, "/")
    assert active(browser) == "q"


def test_drop_an_image_then_filter_by_a_label(browser, base_url: str, corpus: Path) -> None:
    """A pasted, then a dropped image (with the words typed: a unit query), sent as an upload;
    then a label chip."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{base_url}/?q=cup&k=6")
    searched(browser, "")
    data = base64.b64encode((corpus / "food" / "coffee.png").read_bytes()).decode()
    shown = (
        "const i = document.getElementById('query-image-preview');"
        "return !document.getElementById('query-image').hidden && i.naturalWidth > 0"
        " && document.getElementById('query-image-name').textContent"
    )
    # pasted from the clipboard
    browser.execute_script(
        """const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
           const dt = new DataTransfer();
           dt.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}));
           document.dispatchEvent(new ClipboardEvent('paste', {bubbles: true, cancelable: true,
                                                                clipboardData: dt}));""",
        data,
    )
    wait(browser, lambda d: d.execute_script(shown) == "pasted.png", "the pasted image")
    browser.find_element(By.ID, "query-image-clear").click()
    # dropped on the page
    browser.execute_script(
        """const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
           const dt = new DataTransfer();
           dt.items.add(new File([bytes], 'coffee.png', {type: 'image/png'}));
           const zone = document.getElementById('dropzone');
           for (const type of ['dragenter', 'dragover', 'drop'])
             zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                                                      dataTransfer: dt}));""",
        data,
    )
    wait(browser, lambda d: d.execute_script(shown) == "coffee.png", "the dropped image")
    before = status(browser)
    press(browser, Keys.ENTER)
    searched(browser, before)
    assert status(browser).startswith("6 results for “cup” + image"), status(browser)
    assert not browser.execute_script("return !document.getElementById('error').hidden")

    # a label chip: the search again, filtered, and the label in the URL
    before = status(browser)
    browser.execute_script("document.querySelector('.chip[data-label=plants]').click()")
    searched(browser, before)
    assert params(browser)["labels"] == ["plants"]
    shown = results_of(browser)
    assert len(shown) == 2 and all("plants" in r["labels"] for r in shown)
    assert (
        browser.execute_script(
            "return document.querySelector('.chip[data-label=plants]').getAttribute('aria-pressed')"
        )
        == "true"
    )


def test_keyboard_order_and_phone_width(browser, base_url: str) -> None:
    """Tab goes box → search → options → chips → each result and its "more like this"; at
    360 px the page does not scroll sideways."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{base_url}/?q=grass&k=2")
    searched(browser, "")
    browser.execute_script("document.activeElement.blur()")
    order = []
    for _ in range(16):
        press(browser, Keys.TAB)
        order.append(active(browser))
    start = order.index("q")
    assert order[start : start + 5] == ["q", "go", "image-file", "target", "k"], order
    assert order.count("open") == 2 and order.count("like-btn") == 2, order
    assert order.index("open") > order.index("chip"), order
    visible = browser.execute_script(
        "const a = document.activeElement; a.blur(); a.focus();"
        "return getComputedStyle(a).outlineStyle"
    )
    assert visible != "none", "the focused control shows its focus"

    browser.set_window_size(360, 740)
    try:
        browser.get(f"{base_url}/?q=grass&k=6")
        searched(browser, "")
        wait(browser, lambda d: all(r["loaded"] for r in results_of(d)[:2]), "thumbnails")
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"horizontal scroll at 360 px: {widths}"
        browser.find_element(By.CSS_SELECTOR, "#results button.open").click()
        wait(browser, lambda d: d.execute_script(FULL_IMAGE_WIDTH) == 64, "the detail at 360 px")
        keep(browser, "page-detail-360x740.png")
        press(browser, Keys.ESCAPE)
    finally:
        browser.set_window_size(1280, 900)


def test_the_page_asks_for_the_api_key_once(
    browser, corpus: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    home = ingest(corpus, tiny_model, tmp_path / "home")
    with serving(home, api_key=KEY) as url:
        browser.get(f"{url}/?q=coffee&k=3")
        dialog_open = "return document.getElementById('key-dialog').open"
        wait(browser, lambda d: d.execute_script(dialog_open), "the page asks for the key")
        browser.find_element(By.ID, "key-input").send_keys("not-the-key", Keys.ENTER)
        wait(browser, lambda d: "refused" in d.find_element(By.ID, "key-message").text)
        browser.find_element(By.ID, "key-input").send_keys(KEY, Keys.ENTER)
        wait(browser, lambda d: len(results_of(d)) == 3, "results with the key")
        # the <img> tags carry it as api_key= (they cannot send headers) and load
        wait(browser, lambda d: all(r["loaded"] for r in results_of(d)), "thumbnails loaded")
        src = browser.find_element(By.CSS_SELECTOR, "#results img").get_attribute("src")
        assert parse_qs(urlsplit(src).query)["api_key"] == [KEY]
        # kept for the tab: a reload does not ask again
        browser.refresh()
        wait(browser, lambda d: len(results_of(d)) == 3)
        assert not browser.execute_script(dialog_open)
        browser.execute_script("sessionStorage.clear()")


# -- the demo's collection, with the real backbone (minutes) -------------------------------------


@pytest.mark.slow
def test_penguin_link_on_the_stamps_collection(session, collection: str, tmp_path: Path) -> None:
    """ISSUE 9's check: `/?q=penguin` on the stamps shows thumbnails, a penguin among the
    first five."""
    requires_chromium()
    with serving(session.home) as url:
        dom = dump_dom(tmp_path, f"{url}/?q=penguin&collection={collection}")
        results = list(dom.one("ol", id="results").all("li", cls="result"))
        assert len(results) >= 3, dom.one(id="status").text
        captions = [r.one(cls="caption").text for r in results]
        assert any("penguin" in c.lower() for c in captions[:5]), captions[:5]
        for result in results[:3]:
            get_image(result.one("img").attrs["src"])
        shot = ARTIFACTS / "page-stamps-penguin-1280x800.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        chromium(
            tmp_path,
            "--window-size=1280,800",
            "--virtual-time-budget=5000",
            f"--screenshot={shot}",
            f"{url}/?q=penguin&collection={collection}",
        )
        assert Image.open(shot).size == (1280, 800)
