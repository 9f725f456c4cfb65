"""The admin as an admin uses it, in a real browser: log in, disable and re-enable a plugin, issue an API key
and see it exactly once, look at a finished image job's picture, play a speech job's audio, filter jobs."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from aigc_saas.accounts.models import ApiKey
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginRecord

pytestmark = pytest.mark.django_db(transaction=True)
KEY_PATTERN = re.compile(r"aigc_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


def wait(browser: Any, timeout: float = 15) -> WebDriverWait:
    return WebDriverWait(browser, timeout)


@pytest.fixture
def logged_in(browser, live_server, admin_user) -> Any:  # noqa: ANN001
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "user-tools")))
    return browser


def test_an_admin_logs_in_and_sees_the_site_administration(logged_in) -> None:  # noqa: ANN001
    assert "Site administration" in logged_in.title
    assert "Generator plugins" in logged_in.page_source


def test_disable_and_re_enable_a_plugin(logged_in, live_server) -> None:  # noqa: ANN001
    record = PluginRecord.objects.get(name="transformers-text")
    change = f"{live_server.url}/admin/plugins/pluginrecord/{record.pk}/change/"

    for wanted in (False, True):
        logged_in.get(change)
        box = logged_in.find_element(By.NAME, "enabled")
        if box.is_selected() != wanted:
            box.click()
        logged_in.find_element(By.NAME, "_save").click()
        wait(logged_in).until(EC.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success")))
        record.refresh_from_db()
        assert record.enabled is wanted


def test_an_issued_api_key_is_shown_exactly_once_and_works(logged_in, live_server, tenant) -> None:  # noqa: ANN001
    logged_in.get(f"{live_server.url}/admin/accounts/tenant/")
    logged_in.find_element(By.CSS_SELECTOR, f"input.action-select[value='{tenant.pk}']").click()
    Select(logged_in.find_element(By.NAME, "action")).select_by_value("issue_api_key")
    logged_in.find_element(By.NAME, "index").click()

    message = wait(logged_in).until(EC.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li")))
    keys = KEY_PATTERN.findall(message.text)
    assert len(keys) == 1, message.text
    raw = keys[0]
    assert logged_in.page_source.count(raw) == 1
    response = requests.get(f"{live_server.url}/api/v1/account", headers={"Authorization": f"Bearer {raw}"}, timeout=10)
    assert response.status_code == 200, response.text  # the key shown is a real one

    key = ApiKey.objects.get(prefix=raw.split("_")[1])
    for page in ("/admin/accounts/tenant/", "/admin/accounts/apikey/", f"/admin/accounts/apikey/{key.pk}/change/"):
        logged_in.get(f"{live_server.url}{page}")
        assert raw not in logged_in.page_source, page  # never shown again
        # The secret is everything after `aigc_<prefix>_`: token_urlsafe may itself contain "_" (rsplit took the
        # part after its last one, once just "D", which every admin page holds in "Django").
        assert raw.split("_", 2)[2] not in logged_in.page_source, page


@pytest.fixture
def finished_media_jobs(api, worker) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    """A real image job and a real speech job, run by the session's worker on the tiny models."""
    image = api.submit("diffusers-image", {"prompt": "a red mug", "width": 64, "height": 64, "steps": 2, "seed": 1})
    speech = api.submit("transformers-speech", {"text": "Fresh bread every morning.", "seed": 1})
    done = {"image": api.wait(image), "speech": api.wait(speech)}
    assert {job["state"] for job in done.values()} == {"succeeded"}, done
    return done


def test_a_finished_image_job_shows_its_picture(logged_in, live_server, finished_media_jobs) -> None:  # noqa: ANN001
    job = finished_media_jobs["image"]
    logged_in.get(f"{live_server.url}/admin/jobs/job/{job['id']}/change/")

    image = wait(logged_in).until(EC.presence_of_element_located((By.CSS_SELECTOR, "img.aigc-artifact-image")))
    wait(logged_in).until(lambda d: d.execute_script("return arguments[0].complete", image))
    size = logged_in.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
    assert size == [64, 64]  # decoded by the browser: the real PNG, served to the admin


def test_a_speech_job_plays_its_audio(logged_in, live_server, finished_media_jobs) -> None:  # noqa: ANN001
    job = finished_media_jobs["speech"]
    logged_in.get(f"{live_server.url}/admin/jobs/job/{job['id']}/change/")
    audio = wait(logged_in).until(EC.presence_of_element_located((By.CSS_SELECTOR, "audio.aigc-artifact-audio")))

    logged_in.execute_script("arguments[0].load()", audio)
    wait(logged_in).until(lambda d: d.execute_script("return arguments[0].readyState", audio) >= 2)  # has data
    duration = logged_in.execute_script("return arguments[0].duration", audio)
    expected = job["artifacts"][0]["metadata"]["duration_seconds"]
    assert duration == pytest.approx(expected, abs=0.05)
    logged_in.execute_script("arguments[0].play()", audio)
    wait(logged_in).until(lambda d: d.execute_script("return arguments[0].currentTime", audio) > 0)
    assert logged_in.execute_script("return arguments[0].error", audio) is None


def test_jobs_are_filtered_by_state(logged_in, live_server, finished_media_jobs, api) -> None:  # noqa: ANN001
    failed = api.submit("diffusers-image", {"prompt": "x", "width": 64, "height": 64, "steps": 2})
    api.post(f"jobs/{failed['id']}/cancel")  # queued or running: cancelled either way, soon
    api.wait(failed)
    logged_in.get(f"{live_server.url}/admin/jobs/job/")

    logged_in.find_element(By.LINK_TEXT, "Succeeded").click()
    wait(logged_in).until(EC.url_contains("state__exact=succeeded"))
    time.sleep(0.2)
    rows = logged_in.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == Job.objects.filter(state="succeeded").count() >= 2
    assert "cancelled" not in " ".join(row.text for row in rows).lower()
