"""The operator's path through the Dagster UI, in a real (headless) Chromium.

`./dev dagster` on the demo estate: open the lineage, find `mysql/staging_restore` in the
asset graph, materialize one partition through the UI's own dialogs (the newest day the
UI lists, host `demo`), follow the toast to the run page and read "Success" there. The
demo estate's staging server is the target; the restored data is checked afterwards.
Screenshots land in the test's tmp dir (shots/) when a step fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from backup_pipelines.core.mysqld import free_port

pytestmark = [pytest.mark.dagster, pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def demo_estate(tmp_path: Path) -> Iterator[Path]:
    """`backup-pipelines demo-env up` (source + staging server), with one base backup taken."""
    cli = str(BIN / "backup-pipelines")
    work = tmp_path / "demo"
    up = subprocess.run([cli, "demo-env", "up", "--work-dir", str(work)], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    config = Path(up.stdout.strip())
    try:
        base = subprocess.run(
            [cli, "-c", str(config), "backup", "full", "--host", "demo", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert base.returncode == 0, base.stderr[-3000:]
        yield config
    finally:
        subprocess.run([cli, "demo-env", "down", "--work-dir", str(work)], capture_output=True, timeout=180)


@pytest.fixture
def dagster_dev(demo_estate: Path, tmp_path: Path) -> Iterator[str]:
    """What `./dev dagster` runs: `dagster dev` (webserver + daemon) on the demo estate's config."""
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")  # the defaults: queued runs, launched by dagster dev's daemon
    port = free_port()
    env = {**os.environ, "BACKUP_PIPELINES_CONFIG": str(demo_estate), "DAGSTER_HOME": str(home)}
    log = open(tmp_path / "dagster-dev.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "dagster dev did not serve within 180s"
                time.sleep(0.5)
        _wait_for_restore_days(home)
        yield url
    finally:
        # dagster dev stops its webserver, daemon and code servers on SIGINT; the group is ours.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any straggler left in the group
        log.close()


def _wait_for_restore_days(home: Path) -> None:
    """The daemon's first restore_window tick opens the day partitions the dialog will list."""
    from dagster import DagsterInstance

    from backup_pipelines.defs.partitions import RESTORE_DAYS

    with DagsterInstance.from_config(str(home)) as instance:
        deadline = time.monotonic() + 120
        while not instance.get_dynamic_partitions(RESTORE_DAYS):
            assert time.monotonic() < deadline, "the restore_window sensor did not tick within 120s"
            time.sleep(1)


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    shots = tmp_path / "shots"
    try:
        yield driver
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            shots.mkdir(exist_ok=True)
            driver.save_screenshot(str(shots / "failure.png"))
            (shots / "failure.html").write_text(driver.page_source)
            print(f"screenshots of the failure: {shots}")
        driver.quit()


class UI:
    """A person's moves, found by visible text, titles and aria labels (never CSS hashes)."""

    def __init__(self, driver, shots: Path) -> None:
        from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.d = driver
        # Re-renders replace elements, and toasts/overlays come and go: both are retried, not failures.
        self.wait = WebDriverWait(
            driver, 60, ignored_exceptions=(StaleElementReferenceException, ElementClickInterceptedException)
        )
        self.shots = shots
        self.step = 0

    def shot(self, name: str) -> None:
        self.step += 1
        self.shots.mkdir(exist_ok=True)
        self.d.save_screenshot(str(self.shots / f"{self.step:02d}-{name}.png"))

    def find(self, xpath: str, within=None):
        """The first displayed, enabled match, waiting for it (the UI renders asynchronously)."""
        return self.wait.until(lambda _: next((e for e in self.all(xpath, within) if e.is_enabled()), None))

    def all(self, xpath: str, within=None) -> list:
        from selenium.webdriver.common.by import By

        return [e for e in (within or self.d).find_elements(By.XPATH, xpath) if e.is_displayed()]

    def dismiss_community_dialog(self, patience: float = 15) -> None:
        """A first visit opens "Join the Dagster community" over the page: Skip it, as a person would."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            skip = self.all("//*[@role='dialog']//button[normalize-space(.)='Skip']")
            if skip:
                skip[0].click()
                time.sleep(0.5)
                return
            time.sleep(0.5)

    def escape(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        time.sleep(0.5)

    def popover(self):
        """The open partition picker: its filter box and what it lists."""
        return self.find(
            "//input[@placeholder='Filter partitions']/ancestor::*[.//*[starts-with(normalize-space(text()),"
            "'Select all')]][1]",
        )

    def listed_days(self, popover) -> list:
        """The day options the picker shows now (one script call: the list is long and virtual)."""
        return self.d.execute_script(
            "return [...arguments[0].querySelectorAll('*')].filter(e => !e.children.length"
            " && /^\\d{4}-\\d{2}-\\d{2}$/.test(e.textContent.trim()) && e.offsetParent !== null"
            " && getComputedStyle(e).visibility === 'visible' && e.getBoundingClientRect().height > 0);",
            popover,
        )

    def shows(self, text: str) -> bool:
        from selenium.webdriver.common.by import By

        return text in self.d.find_element(By.TAG_NAME, "body").text


def test_a_person_restores_the_demo_host_into_staging_from_the_ui(dagster_dev, browser, tmp_path, demo_estate):
    ui = UI(browser, tmp_path / "shots")
    browser.get(dagster_dev + "/overview")

    # The asset graph: Lineage in the navigation, once the first-visit community dialog is skipped.
    ui.dismiss_community_dialog()
    ui.find("//a[normalize-space(.)='Lineage']").click()
    ui.wait.until(lambda d: d.title == "Global asset lineage")
    group = ui.find("//*[@title='restore_points' or normalize-space(text())='restore_points']/ancestor::div"
                    "[.//*[@aria-label='arrow_drop_down']][1]")  # fmt: skip
    ui.find(".//*[@aria-label='arrow_drop_down']", within=group).click()
    ui.find("//*[@title='staging_restore']").click()
    ui.find("//*[normalize-space(text())='mysql / staging_restore']")  # the selected asset's side panel
    ui.shot("graph")

    # Materialize it: the launch dialog asks for a partition per dimension.
    ui.find("//button[contains(normalize-space(.),'Materialize selected')]").click()
    launch = "//*[@role='dialog'][.//*[contains(normalize-space(.),'Launch runs to materialize')]]"
    confirm = "//*[@role='dialog']//button[normalize-space(.)='Confirm']"

    def launch_dialog(_):
        # "Upstream not materialized yet" may come first: a staging restore reads the backups, not that asset.
        for button in ui.all(confirm):
            button.click()
        return next(iter(ui.all(launch)), None)

    dialog = ui.wait.until(launch_dialog)
    ui.wait.until(lambda _: ui.all(".//*[normalize-space(text())='Select a partition or create one']", dialog))
    pickers = ui.all(".//*[normalize-space(text())='Select a partition or create one']", dialog)
    assert len(pickers) == 2, dialog.text

    # day: the newest day the UI lists (the list is virtual: scroll to its end).
    pickers[0].click()
    popover = ui.popover()
    last = None
    for _ in range(40):
        days = ui.listed_days(popover)
        assert days, popover.text[:500]
        if days[-1].text == last:
            break
        last = days[-1].text
        browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", days[-1])
        time.sleep(0.3)
    newest = ui.listed_days(popover)[-1]
    day = newest.text.strip()
    newest.click()
    ui.escape()

    # host: demo.
    ui.all(".//*[normalize-space(text())='Select a partition or create one']", dialog)[0].click()
    ui.find(".//*[not(*) and normalize-space(text())='demo']", within=ui.popover()).click()
    ui.escape()
    assert "1 partition" in dialog.text, dialog.text
    ui.shot("dialog")
    ui.find(".//button[normalize-space(.)='Launch 1 run']", within=dialog).click()

    # The toast links to the run; its page shows the status.
    view = ui.find("//a[normalize-space(.)='View'][contains(@href,'/runs/')]")
    run_url = view.get_attribute("href")
    view.click()
    ui.wait.until(lambda _: ui.shows(f"partition: {day}|demo"))
    deadline = time.monotonic() + 300
    while not ui.all("//*[normalize-space(text())='Success']"):
        failed = ui.all("//*[normalize-space(text())='Failure']")
        assert not failed, f"the run failed: {run_url}"
        assert time.monotonic() < deadline, f"the run did not succeed within 300s: {run_url}"
        time.sleep(2)
    ui.shot("run-success")
    assert ui.all("//*[contains(normalize-space(.),'RUN_SUCCESS')]")

    # The staging server now holds the demo host's data.
    import pymysql
    import yaml

    (staging,) = (t["socket"] for t in yaml.safe_load(demo_estate.read_text())["staging"].values())

    with pymysql.connect(unix_socket=str(staging), user=_os_user()) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM shop.accounts")
        assert cur.fetchone()[0] == 1000


def _os_user() -> str:
    import getpass

    return getpass.getuser()
