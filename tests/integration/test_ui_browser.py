"""The web UI in a real headless browser (Debian's Chromium, driven by its chromedriver)
against the daemons and ``sluice api-server`` as real processes.

Tasks wait on a gate file the test creates, so what the page shows while they
run is certain; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.api_server import start_api_server
from tests.cluster import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900")
USERS = {"admin": ("admin", "ui-test-password")}

GATED = '''
import time
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

GATE = Path({gate!r})


def wait_for_gate():
    deadline = time.monotonic() + 90
    while not GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def ui_mapped():
    @task
    def gen() -> list[int]:
        return list(range(12))

    @task(map_index_template="item {{{{ item_name }}}}")
    def work(x: int) -> int:
        get_current_context()["item_name"] = f"#{{x}}"
        wait_for_gate()
        return x

    work.expand(x=gen())


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def ui_log():
    @task
    def talk() -> str:
        print("first line before the gate", flush=True)
        wait_for_gate()
        print("second line after the gate", flush=True)
        return "done"

    talk()


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     params={{"count": 3, "name": "small", "flag": False, "tags": ["a"]}})
def ui_params():
    @task
    def show() -> None:
        pass

    show()


ui_mapped()
ui_log()
ui_params()
'''


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="sluice-ui-chromium-") as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
async def ui(cluster, browser, tmp_path):
    """The daemons and the api-server up, the gated DAGs parsed, the browser logged in."""
    gate = tmp_path / "gate"
    cluster.write_dag("ui_dags.py", GATED.format(gate=str(gate)))
    cluster.start_all()
    base = await start_api_server(cluster, USERS)
    for dag_id in ("ui_mapped", "ui_log", "ui_params"):
        await cluster.wait_dag(dag_id, timeout=120)  # the scheduler imports Airflow first
    browser.get(f"{base}/ui/")
    until(browser, lambda d: d.find_elements(By.ID, "username"), "the login form")
    browser.find_element(By.ID, "username").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys(USERS["admin"][1])
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    until(browser, lambda d: d.find_elements(By.ID, "dag-list"), "the DAG list")
    yield base, gate
    browser.get("about:blank")  # closes the page's event streams before the server stops


def until(driver: WebDriver, check, what: str, timeout: float = 30.0):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, f"waiting for {what}")


def go(driver: WebDriver, base: str, fragment: str) -> None:
    driver.get(f"{base}/ui/#{fragment}")


def attr(driver: WebDriver, css: str, name: str) -> str | None:
    """An attribute read in the page itself (live updates replace elements at any time)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])",
        css, name)


def texts(driver: WebDriver, css: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)


async def ti_state(cluster, run_id: str, task_id: str) -> set[str | None]:
    conn = await cluster.connect()
    try:
        rows = await conn.fetch("SELECT ti.state FROM task_instance ti JOIN dag_run r "
                                "ON r.id = ti.run_pk WHERE r.run_id = $1 AND ti.task_id = $2",
                                run_id, task_id)
    finally:
        await conn.close()
    return {r["state"] for r in rows}


async def test_grid_of_a_running_mapped_run_changes_without_reload(cluster, browser, ui):
    base, gate = ui
    run_id = await cluster.trigger("ui_mapped")
    await wait_for(lambda: _expanded(cluster, run_id), 90, "work to expand")
    go(browser, base, f"/dags/ui_mapped/grid?run={quote(run_id, safe='')}&task=work")
    cell = f'.cell[data-task="work"][data-run="{run_id}"]'
    until(browser, lambda d: attr(d, cell, "data-total") == "12", "work [12] in the grid")
    assert attr(browser, cell, "data-state") in {"queued", "running", "scheduled"}
    assert texts(browser, 'th[data-task="work"]') == ["work [12]"]
    until(browser, lambda d: len(texts(d, "#mapped-instances tbody tr")) == 12,
          "the per-index drill-down")
    browser.execute_script("window.__sameDocument = true")

    gate.touch()
    until(browser, lambda d: attr(d, cell, "data-state") == "success", "work to turn success")
    until(browser, lambda d: attr(d, f'.bar[data-run="{run_id}"]', "data-state") == "success",
          "the run to turn success")
    assert browser.execute_script("return window.__sameDocument") is True  # never reloaded
    states = "#mapped-instances tbody tr td:nth-child(3)"
    until(browser, lambda d: set(texts(d, states)) == {"success"},
          "every index success in the drill-down")
    labels = texts(browser, "#mapped-instances tbody tr td:nth-child(2)")
    assert labels == [f"item #{i}" for i in range(12)]


async def _expanded(cluster, run_id: str) -> bool:
    conn = await cluster.connect()
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk "
            "WHERE r.run_id = $1 AND ti.task_id = 'work'", run_id) == 12
    finally:
        await conn.close()


async def test_instance_log_is_followed_while_the_try_runs(cluster, browser, ui):
    base, gate = ui
    run_id = await cluster.trigger("ui_log")
    await wait_for(lambda: _running(cluster, run_id), 90, "talk to run")
    go(browser, base, f"/dags/ui_log/runs/{quote(run_id, safe='')}/tasks/talk/-1")
    log_text = lambda d: "".join(texts(d, "#log"))  # noqa: E731
    until(browser, lambda d: "first line before the gate" in log_text(d), "the first line")
    assert attr(browser, "#log", "data-complete") == "false"
    assert "second line" not in log_text(browser)

    gate.touch()
    until(browser, lambda d: "second line after the gate" in log_text(d), "the second line")
    until(browser, lambda d: attr(d, "#log", "data-complete") == "true", "the log to end")
    until(browser, lambda d: texts(d, "#instance-state") == ["success"],
          "the instance to show success")
    assert "INFO" in log_text(browser)  # every line with its level (and time)
    assert "return_value" in "".join(texts(browser, "#xcoms"))


async def _running(cluster, run_id: str) -> bool:
    return await ti_state(cluster, run_id, "talk") == {"running"}


async def test_trigger_a_run_from_the_params_form(cluster, browser, ui):
    base, _ = ui
    go(browser, base, "/dags/ui_params/trigger")
    until(browser, lambda d: d.find_elements(By.ID, "param-count"), "the params form")
    assert browser.find_element(By.ID, "param-count").get_attribute("type") == "number"
    assert browser.find_element(By.ID, "param-flag").get_attribute("type") == "checkbox"
    count = browser.find_element(By.ID, "param-count")
    count.clear()
    count.send_keys("7")
    name = browser.find_element(By.ID, "param-name")
    name.clear()
    name.send_keys("from the form")
    browser.find_element(By.ID, "param-flag").click()
    tags = browser.find_element(By.ID, "param-tags")
    tags.clear()
    tags.send_keys('["x", "y"]')
    browser.find_element(By.ID, "trigger-submit").click()

    until(browser, lambda d: "/dags/ui_params/grid?run=" in d.current_url, "the grid after triggering")
    conn = await cluster.connect()
    try:
        [run] = await conn.fetch("SELECT run_id, conf FROM dag_run WHERE dag_id = 'ui_params'")
    finally:
        await conn.close()
    assert run["conf"] == {"count": 7, "name": "from the form", "flag": True, "tags": ["x", "y"]}
    assert (await cluster.wait_run(run["run_id"], 120))["state"] == "success"
    until(browser, lambda d: attr(d, f'.bar[data-run="{run["run_id"]}"]', "data-state") == "success",
          "the triggered run to show success in the grid")


async def test_pause_a_dag_from_the_dag_list(cluster, browser, ui):
    base, _ = ui
    go(browser, base, "/dags")
    toggle = '#dag-list tr[data-dag="ui_params"] input.pause-toggle'
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, toggle), "the DAG list")
    assert browser.find_element(By.CSS_SELECTOR, toggle).is_selected()  # active
    browser.find_element(By.CSS_SELECTOR, f'{toggle} + span').click()
    await wait_for(lambda: _paused(cluster, "ui_params"), 15, "ui_params to be paused")

    browser.refresh()
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, toggle), "the DAG list again")
    assert not browser.find_element(By.CSS_SELECTOR, toggle).is_selected()


async def _paused(cluster, dag_id: str) -> bool:
    conn = await cluster.connect()
    try:
        return await conn.fetchval("SELECT is_paused FROM dag WHERE dag_id = $1", dag_id)
    finally:
        await conn.close()

