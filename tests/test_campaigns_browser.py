"""The dashboard's Campaigns tab in headless chromium: upload a CSV with the campaign's
settings, start it, watch its progress live, pause it (new calls held, the live ones end),
resume it and see it complete, the counts on the page being the database's."""

from __future__ import annotations

import json
from pathlib import Path

import gevent
import pytest
from stack import Stack
from test_web_history import browser  # noqa: F401  (the headless chromium fixture)

from relay.web import WebServer

TOKEN = "campaign-browser-token-0c2e"
CONTACTS = 12
KINDS = ["answer", "busy", "no_answer", "answer"]
AGENT = {"name": "Browser caller", "instructions": "You call {name}.",
         "audio_format": "audio/pcmu", "outbound": {"amd": False}}
TALKS_THEN_HANGS_UP = {"steps": [{"wait_agent_done": {"silence_ms": 300, "timeout_ms": 6000}},
                                 {"hangup": True}]}


@pytest.fixture
def stack(tmp_path: Path):
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "caller.json").write_text(json.dumps(AGENT))
    s = Stack(tmp_path, model_script={"greeting": "Hello.", "default": "I see."}, settings={
        "web.port": 0, "web.token": TOKEN, "agent.configs_dir": str(agents),
        "agent.active": "caller", "campaigns.poll_s": 0.05})
    for i in range(CONTACTS):
        kind = KINDS[i % len(KINDS)]
        s.pbx.register_endpoint(f"b{i:02d}", {"answer": kind, "script": TALKS_THEN_HANGS_UP}
                                if kind == "answer" else {"answer": kind})
    yield s
    s.stop(check=False)


def test_upload_start_watch_pause_resume_complete(browser, stack, tmp_path):  # noqa: F811
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    web = WebServer(stack.worker).start()
    wait = WebDriverWait(browser, 60, poll_frequency=0.05)
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("endpoint,name\n" + "".join(f"PJSIP/b{i:02d},Person {i}\n"
                                                    for i in range(CONTACTS)))

    def cell(driver, key: str) -> int:
        try:
            return int(driver.find_element(
                By.CSS_SELECTOR, f'#campaign-rows tr td[data-count="{key}"]').text)
        except (StaleElementReferenceException, ValueError):
            return -1

    def state(driver) -> str:
        try:
            rows = driver.find_elements(By.CSS_SELECTOR, "#campaign-rows tr")
            return rows[0].get_attribute("data-state") if rows else ""
        except StaleElementReferenceException:
            return ""

    def click(action: str) -> None:
        # the list is drawn again every second: a button found may be replaced before the click
        def clicked(driver) -> bool:
            try:
                driver.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').click()
                return True
            except (StaleElementReferenceException, NoSuchElementException):
                return False
        wait.until(clicked)

    def database() -> dict:
        store = stack.worker.campaign_store
        (only,) = gevent.get_hub().threadpool.apply(store.list_campaigns, ())
        return only

    try:
        browser.get(f"{web.url}?token={TOKEN}")
        browser.find_element(By.ID, "tab-campaigns").click()
        wait.until(lambda d: d.find_element(By.ID, "campaigns-view").is_displayed())
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#c-agent option[value="caller"]'))
        browser.find_element(By.ID, "c-file").send_keys(str(csv_file))
        browser.find_element(By.ID, "c-name").send_keys("Browser campaign")
        for field, value in (("c-concurrent", "2"), ("c-rate", "2"), ("c-ring", "3")):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(value)
        browser.execute_script("document.getElementById('c-retry').value = "
                               "'{\"busy\": {\"after_s\": 1, \"max\": 1}}';")
        browser.find_element(By.ID, "c-create").click()
        wait.until(lambda d: "12 contacts" in d.find_element(By.ID, "c-result").text)
        wait.until(lambda d: state(d) == "draft" and cell(d, "waiting") == CONTACTS)

        click("start")
        wait.until(lambda d: state(d) == "running")
        wait.until(lambda d: cell(d, "dialling") > 0)      # live progress
        wait.until(lambda d: cell(d, "completed") >= 3)
        click("pause")
        wait.until(lambda d: state(d) == "paused")
        wait.until(lambda d: cell(d, "dialling") == 0)     # the live calls ended
        held = len(stack.pbx.model.originates)
        paused_at = database()["progress"]
        assert paused_at["completed"] < CONTACTS
        gevent.sleep(1.0)
        assert len(stack.pbx.model.originates) == held     # nothing new while paused
        browser.save_screenshot(str(tmp_path / "campaign-paused.png"))

        click("resume")
        wait.until(lambda d: state(d) == "completed")
        wait.until(lambda d: cell(d, "completed") == CONTACTS)
        final = database()["progress"]
        assert final["completed"] == CONTACTS and final["waiting"] == final["dialling"] == 0
        for key in ("answered", "busy", "no_answer"):
            assert cell(browser, key) == final["outcomes"][key]
        assert final["outcomes"]["busy"] == 2 * CONTACTS // len(KINDS)  # each busy retried once
        label = browser.find_element(By.CSS_SELECTOR, "#campaign-rows .progress-label").text
        assert label == f"{CONTACTS}/{CONTACTS}"
        assert not browser.find_elements(By.CSS_SELECTOR, "button.c-action")
        browser.save_screenshot(str(tmp_path / "campaign-done.png"))
        print(f"\ncampaign screenshots: {tmp_path}")
        severe = [e["message"] for e in browser.get_log("browser")
                  if e.get("level") == "SEVERE"]
        assert severe == []
    finally:
        web.stop()
