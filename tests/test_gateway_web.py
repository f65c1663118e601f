"""The web page at /: pick a voice, type, listen (streamed), in headless Chromium, over the real
`tts` model on Triton (tiny base).

Needs Debian's `chromium` and `chromium-driver` and selenium from PyPI; skipped without them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.testing.stack import GatewayStack, lora_targets

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="chromium + chromium-driver (apt) not installed"
)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, tiny_base: Any, reference_voice: Any
) -> Iterator[dict[str, Any]]:
    """The gateway over the real `tts` model (tiny base, one public voice, embedded registry).

    The page sends the default parameters (up to 1500 tokens a sentence); the voice's LoRA leaves
    GPT alone, so its sentences end when the tiny base's do: within a second or so."""
    with GatewayStack.running(
        tmp_path_factory.mktemp("gateway-web"),
        base=tiny_base.model,
        base_dir=tiny_base.path,
        prompt=reference_voice,
        tenants={"web": ("web", {})},
        voices=[("public", "demo", 3)],
        voice_targets=lora_targets(gpt=False),
        mlflow_server=False,
    ) as stack:
        assert stack.gateway is not None
        yield {"url": stack.gateway.http, "key": stack.keys["web"]}


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
        WebDriverWait(driver, 180).until(
            lambda d: d.find_element(By.ID, "status").text.startswith(("done", "failed"))
        )
        status = driver.find_element(By.ID, "status").text
        assert status.startswith("done"), status
        assert "first audio after" in status
        player = driver.find_element(By.ID, "player")
        # the tiny random model stops each sentence early, but says something
        assert int(player.get_attribute("data-samples") or 0) > 16_000
        assert (player.get_attribute("src") or "").startswith("blob:")
        driver.save_screenshot(str(tmp_path / "page.png"))
        # an error shows up in the page
        text.clear()
        text.send_keys("Привет")
        driver.find_element(By.ID, "speak").click()
        WebDriverWait(driver, 30).until(lambda d: "(400)" in d.find_element(By.ID, "status").text)
    finally:
        driver.quit()
