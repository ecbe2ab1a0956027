"""The dashboard in a real browser (headless Chromium from Debian's packages, driven by
selenium): a simulated call's transcript appears live on the page, and an instructions change
made in the page's form reaches the simulated model as a valid session.update."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from realtime_schema import validate_client_event
from stack import AGENTS_DIR, Stack, wait_for

from relay.web import WebServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_FOR_README = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"

if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
                "chromium-driver; `make test` does it when run as root)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install "
                                "-e '.[test]')")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

TOKEN = "browser-test-token-51c2"
HELLO = "Hello, I would like to check the status of my order."
NUMBER = "It is order number four two seven."
NEW_INSTRUCTIONS = "You are the night shift agent. Answer in one short sentence."
SCRIPT = {
    "phrasebook": [HELLO, NUMBER],
    "greeting": "Hello, this is Acme. How can I help you today?",
    "rules": [
        {"keywords": ["status"], "say": "Sure. What is your order number?"},
        {"keywords": ["number"], "say": "Thanks. Order four two seven shipped yesterday."},
        {"match": "pressed the keys: 1", "say": "You chose deliveries. One moment please."},
    ],
    "default": "I see. Please go on.",
}
ALICE = {"caller": {"name": "Alice Martin", "number": "+15550101"}, "steps": [
    {"pause_ms": 2500}, {"say": HELLO},
    {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}},
    {"say": NUMBER},
    {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}},
    {"dtmf": "1#"},
    {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}},
    {"pause_ms": 60000}]}
OTHERS = [
    {"caller": {"name": "Bob Stone", "number": "+15550102"}, "steps": [
        {"pause_ms": 1000}, {"say": NUMBER}, {"pause_ms": 60000}]},
    {"caller": {"name": "", "number": "+15550177"}, "steps": [{"pause_ms": 60000}]},
]


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def system(tmp_path):
    stack = Stack(tmp_path, model_script=SCRIPT,
                  settings={"web.port": 0, "web.token": TOKEN})
    web = WebServer(stack.worker).start()
    yield stack, web
    for call in list(stack.worker.calls.values()):
        call.hangup("test over")
    web.stop()
    stack.stop()


def text_of(driver, css: str) -> str:
    try:
        return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))
    except StaleElementReferenceException:
        return ""


def test_a_live_transcript_and_an_instructions_change_from_the_page(browser, system, tmp_path):
    stack, web = system
    wait = WebDriverWait(browser, 20, poll_frequency=0.05)
    # log in with the token link: the page ends up on a clean URL with the session cookie
    browser.get(f"{web.url}?token={TOKEN}")
    assert browser.current_url == web.url
    wait.until(lambda d: "live" in d.find_element(By.ID, "link-state").text)
    assert "ARI connected" in browser.find_element(By.ID, "chip-ari").text

    alice = stack.call(ALICE)
    call = stack.relay_call(alice)
    for script in OTHERS:
        stack.call(script)
    # the call shows up in the list by itself; open it before the caller has said anything
    item = f'#live-calls li[data-id="{call.id}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, item))
    browser.find_element(By.CSS_SELECTOR, item).click()
    wait.until(lambda d: "Alice Martin" in d.find_element(By.ID, "call-title").text)
    assert HELLO not in text_of(browser, "#transcript")
    assert not any(e["kind"] == "caller" for e in call.transcript.entries())

    # the conversation appears live, as it happens
    wait.until(lambda d: HELLO in text_of(d, "#transcript .msg.caller"))
    wait.until(lambda d: "What is your order number?" in text_of(d, "#transcript .msg.assistant"))
    wait.until(lambda d: "shipped yesterday" in text_of(d, "#transcript .msg.assistant"))
    wait.until(lambda d: "keys entered" in text_of(d, "#transcript .keys"))
    wait.until(lambda d: "One moment please" in text_of(d, "#transcript .msg.assistant"))
    assert "call from +15550101" in text_of(browser, "#events")

    # change the instructions in the form: one session.update reaches the model
    session = stack.model.sessions[0]
    assert session.config["instructions"] == "You are a test agent."
    textarea = browser.find_element(By.ID, "cfg-instructions")
    assert textarea.get_attribute("value") == "You are a test agent."
    textarea.clear()
    textarea.send_keys(NEW_INSTRUCTIONS)
    updates_before = len([e for e in session.client_events if e.get("type") == "session.update"])
    browser.find_element(By.ID, "cfg-apply").click()
    wait.until(lambda d: "Sent to the model: instructions" in d.find_element(
        By.ID, "cfg-result").text)
    wait_for(lambda: session.config.get("instructions") == NEW_INSTRUCTIONS, 5,
             "the model to get the new instructions")
    updates = [e for e in session.client_events if e.get("type") == "session.update"]
    assert len(updates) == updates_before + 1
    assert updates[-1]["session"] == {"type": "realtime", "instructions": NEW_INSTRUCTIONS}
    for event in updates:
        validate_client_event(event)
    assert not session.errors_sent
    wait.until(lambda d: "operator changed instructions" in text_of(d, "#events"))

    # the voice is refused now that the model has spoken: the page shows the server's reason
    assert browser.find_element(By.ID, "voice-hint").is_displayed()
    Select(browser.find_element(By.ID, "cfg-voice")).select_by_value("alloy")
    browser.find_element(By.ID, "cfg-apply").click()
    wait.until(lambda d: "cannot change once the model has spoken" in d.find_element(
        By.ID, "cfg-result").text)
    assert "error" in browser.find_element(By.ID, "cfg-result").get_attribute("class")
    assert not session.errors_sent
    Select(browser.find_element(By.ID, "cfg-voice")).select_by_value("marin")

    # every kind of entry is drawn as such: a tool call (running, then its result, in place)
    # and a fallback transcript, in the shapes the tool runner and the transcriber write
    call.transcript.add("tool", "lookup_order", function_call_id="fc_1", status="running",
                        arguments={"order": 427})
    wait.until(lambda d: "running" in text_of(d, "#transcript .tool"))
    call.transcript.add("tool", "lookup_order", function_call_id="fc_1", status="ok",
                        arguments={"order": 427}, duration_ms=42.0,
                        result='{"status": "shipped", "eta": "tomorrow"}')
    wait.until(lambda d: "shipped" in text_of(d, "#transcript .tool.ok"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#transcript .tool")) == 1
    call.transcript.add("caller", "Could it come to the office instead?", item_id="it_9",
                        source="fallback", provider="openai")
    wait.until(lambda d: "fallback transcript" in text_of(d, "#transcript .msg.caller"))
    call.transcript.add("event", "model error rate_limit_exceeded: slow down", level="warning")
    wait.until(lambda d: "slow down" in text_of(d, "#events"))
    assert browser.find_elements(By.CSS_SELECTOR, "#events .level.warning")

    # figures the page shows for the call and the worker
    stats = text_of(browser, "#audio-stats")
    assert "RTP in" in stats and "jitter" in stats and "last turn" in stats
    assert re.search(r"jitter buffer\s*\d+ ms", stats)
    wait.until(lambda d: "3 live" in d.find_element(By.ID, "chip-calls").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#agents li")) == len(
        list(AGENTS_DIR.glob("*.json")))

    browser.execute_script("document.querySelector('.side-panels').scrollTop = 0;")
    screenshot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(screenshot))
    print(f"\ndashboard screenshot: {screenshot}")
    if not SCREENSHOT_FOR_README.exists() or os.environ.get("RELAY_UPDATE_SCREENSHOT"):
        SCREENSHOT_FOR_README.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, SCREENSHOT_FOR_README)

    # hang up from the page (two clicks): the call ends and moves to the ended list
    browser.find_element(By.ID, "hangup").click()
    assert "again" in browser.find_element(By.ID, "hangup").text
    browser.find_element(By.ID, "hangup").click()
    wait_for(lambda: call.state == "ended", 10, "the call to end")
    assert call.end_reason == "hung up by the operator"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#ended-calls li[data-id="{call.id}"]'))
    wait.until(lambda d: d.find_element(By.ID, "call-state").text == "ended")
    severe = [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    expected = "/config - Failed to load resource: the server responded with a status of 400"
    assert [m for m in severe if expected not in m] == []     # the refused voice: expected
