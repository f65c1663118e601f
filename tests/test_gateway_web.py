"""The web page at /: pick a voice, type, listen (streamed), in headless Chromium.

Needs Debian's `chromium` and `chromium-driver` and selenium from PyPI; skipped without them."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.registry import AdapterRegistry
from adapters.store import AdapterStore
from adapters.synthetic import demo_consent, make_adapter, make_standin, save_standin
from gateway.config import GatewaySettings
from gateway.testing.contract_model import write_repository
from gateway.testing.harness import ThreadedGateway
from gateway.testing.stack import TTS_CONFIG, make_keys
from gateway.testing.triton import TritonProcess

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="chromium + chromium-driver (apt) not installed"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gateway-web")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITONE_HOME", str(root / "home"))
        uri = f"sqlite:///{root / 'mlflow.db'}"
        registry = AdapterRegistry(uri, store=AdapterStore(root / "store"))
        pin = registry.register_base(save_standin(make_standin(0), root / "base"))
        info = registry.register(
            make_adapter(root / "demo", make_standin(0), pin, voice="demo", tenant="public"),
            consent=demo_consent(),
        )
        registry.promote("public.demo", version=info.version)
        keys = make_keys(root / "api-keys", {"web": ("web", {})})
        triton = TritonProcess(
            write_repository(root / "repo", TTS_CONFIG), log_file=root / "triton.log"
        ).start()
        settings = GatewaySettings.from_env(
            triton_urls=[triton.grpc_url],
            mlflow_uri=uri,
            api_keys_file=keys.path,
            host="127.0.0.1",
            http_port=0,
            grpc_port=0,
            log_level="warning",
        )
        gw = ThreadedGateway(settings).start()
        try:
            deadline = time.monotonic() + 30
            while not gw.server.gateway.readiness()[0]:  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.1)
            yield {"url": gw.http, "key": keys["web"]}
        finally:
            gw.stop()
            triton.stop()


def test_pick_a_voice_type_and_listen(site: dict[str, Any], tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(dir=tmp_path)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--autoplay-policy=no-user-gesture-required", "--window-size=1000,900",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        driver.get(site["url"] + "/")
        key = driver.find_element(By.ID, "key")
        key.send_keys(site["key"])
        driver.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
        WebDriverWait(driver, 20).until(lambda d: "voices" in d.find_element(By.ID, "status").text)
        voices = Select(driver.find_element(By.ID, "voice"))
        assert [o.text for o in voices.options] == ["public.demo (public)"]
        text = driver.find_element(By.ID, "text")
        text.clear()
        text.send_keys("Hello from the browser. This streams while it is generated.")
        driver.find_element(By.ID, "speak").click()
        WebDriverWait(driver, 60).until(
            lambda d: d.find_element(By.ID, "status").text.startswith(("done", "failed"))
        )
        status = driver.find_element(By.ID, "status").text
        assert status.startswith("done"), status
        assert "first audio after" in status
        player = driver.find_element(By.ID, "player")
        assert int(player.get_attribute("data-samples") or 0) > 32_000
        assert (player.get_attribute("src") or "").startswith("blob:")
        driver.save_screenshot(str(tmp_path / "page.png"))
        # an error shows up in the page
        text.clear()
        text.send_keys("Привет")
        driver.find_element(By.ID, "speak").click()
        WebDriverWait(driver, 30).until(lambda d: "(400)" in d.find_element(By.ID, "status").text)
    finally:
        driver.quit()
