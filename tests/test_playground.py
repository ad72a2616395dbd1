"""The playground page in a real headless browser (Chromium driven by Playwright) against a
real `rnnlm serve`: words coloured by surprisal with their probabilities, the next words,
sampled continuations, and a click on a next word that extends the text.

Skips, saying why, without Playwright's Python package or a Chromium binary
(Debian: apt-get install chromium; RNNLM_CHROMIUM names another binary).
"""

import os
import shutil

import pytest

pytest.importorskip("fastapi", reason="the service needs the serve extra: pip install -e .[serve]")
playwright = pytest.importorskip(
    "playwright.sync_api", reason="no Playwright for Python (pip install playwright)"
)
CHROMIUM = os.environ.get("RNNLM_CHROMIUM") or shutil.which("chromium")
if not CHROMIUM:
    pytest.skip("no Chromium binary (apt-get install chromium)", allow_module_level=True)

from servers import Server, tiny_model  # noqa: E402

# What a root user in a container needs; no network beyond localhost.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("playground")
    running = Server({"tiny": tiny_model(folder / "tiny.npz")}, folder / "cache")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server.url + "/?text=the+cat+sat+on+the+mat")
        page.wait_for_selector("body[data-ready=yes]", timeout=60_000)
        yield page
        browser.close()


def test_each_word_is_coloured_by_surprisal_with_its_probability_on_hover(page, server):
    tokens = page.locator("#tokens .token")
    assert tokens.count() == 7  # six words and the end of the sentence
    texts = tokens.all_text_contents()
    assert texts[:6] == ["the", "cat", "sat", "on", "the", "mat"]
    _, scored = server.request(
        "POST", "/v1/score", {"sentences": ["the cat sat on the mat"], "per_word": True}
    )
    expected = [t["prob"] for t in scored["sentences"][0]["tokens"]]
    for i in range(7):
        token = tokens.nth(i)
        assert float(token.get_attribute("data-prob")) == pytest.approx(expected[i])
        assert "p = " in token.get_attribute("data-tip")  # shown on hover
        assert "bits" in token.get_attribute("data-tip")
    colours = {tokens.nth(i).evaluate("node => node.style.background") for i in range(7)}
    assert len(colours) > 1  # different surprisals, different colours
    assert "perplexity" in page.locator("#perplexity").text_content()


def test_next_words_and_continuations_are_shown(page):
    assert page.locator("#next li").count() == 10
    assert page.locator("#samples li").count() == 3
    for sample in page.locator("#samples li").all_text_contents():
        assert sample.startswith("the cat sat on the mat")


def test_clicking_a_next_word_extends_the_text_and_rescores(page):
    # The end of the sentence and the unknown token are shown, but are not words to add.
    markers = page.locator("#next li.marker").evaluate_all(
        "items => items.map(i => i.dataset.token)"
    )
    assert set(markers) <= {"SENTENCE_END", "UNKNOWN_TOKEN"}
    first = page.locator("#next li:not(.marker)").first
    word = first.get_attribute("data-token")
    first.click()
    page.wait_for_function("document.querySelectorAll('#tokens .token').length === 8")
    assert page.input_value("#text") == f"the cat sat on the mat {word}"
    assert page.locator("#tokens .token").nth(6).text_content() == word


def test_an_error_from_the_service_is_shown_not_thrown(page):
    page.fill("#text", "x" * 3000)  # over the character limit
    page.wait_for_function("document.getElementById('status').textContent.length > 0")
    assert "limit" in page.locator("#status").text_content()
