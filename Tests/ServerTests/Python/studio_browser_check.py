#!/usr/bin/env python3
"""Drives the studio page in headless Chromium through Selenium, as a user would.

Opens the page, inserts a LoRA from the picker, types a prompt, sets a small size, draws two
regions with the mouse (moves and resizes one, deletes a third with the Delete key), gives each
a prompt, generates with Ctrl+Enter, watches the live preview arrive, waits for the result,
reuses its seed, opens it in the gallery, checks its PNG Info, puts its parameters back in the
form with "Use these parameters", and reloads to see the form kept. Screenshots of each stage
go to --screenshots.

Exit status 0 on success; 1 with a message naming the failed step otherwise.
Uses Debian's /usr/bin/chromium and /usr/bin/chromedriver: Selenium Manager never runs (there
is no network to download a driver from).
"""
import argparse
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

PROMPT = "snowy mountains at sunset"
REGION_PROMPTS = ["a calm sea under a starry night sky", "snowy mountains at noon"]


class CheckFailed(Exception):
    pass


class Check:
    def __init__(self, url, screenshots, width, height, steps):
        self.url = url
        self.screenshots = screenshots
        self.size = (width, height)
        self.steps = steps
        self.started = time.monotonic()
        os.makedirs(screenshots, exist_ok=True)
        options = Options()
        options.binary_location = os.environ.get("PANORAMA_CHROMIUM", "/usr/bin/chromium")
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                         "--disable-gpu", "--no-first-run", "--disable-extensions"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(os.environ.get("PANORAMA_CHROMEDRIVER", "/usr/bin/chromedriver"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(30)

    # -- helpers

    def log(self, message):
        print(f"[{time.monotonic() - self.started:5.1f} s] {message}", flush=True)

    def shot(self, name):
        path = os.path.join(self.screenshots, f"{name}.png")
        self.driver.save_screenshot(path)
        self.log(f"screenshot {path}")

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, what, condition, timeout=10, poll=0.1):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=poll).until(lambda d: condition())
        except TimeoutException:
            errors = [e.text for e in self.finds("#errors li")]
            raise CheckFailed(f"timed out after {timeout} s waiting for {what}"
                              + (f"; the page shows: {errors}" if errors else "")) from None

    def type_into(self, css, text):
        field = self.find(css)
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(text)
        return field

    def set_number(self, css, value):
        field = self.type_into(css, str(value))
        field.send_keys(Keys.TAB)  # the change event applies the size

    def drag(self, element, start, end):
        """Drags with the mouse from `start` to `end`, fractions of `element`'s box."""
        box = element.rect
        def offset(point):  # Selenium 4 offsets are from the element's centre
            return (int(box["width"] * (point[0] - 0.5)), int(box["height"] * (point[1] - 0.5)))
        (x0, y0), (x1, y1) = offset(start), offset(end)
        (ActionChains(self.driver, duration=50)
         .move_to_element_with_offset(element, x0, y0).click_and_hold()
         .move_by_offset((x1 - x0) // 2, (y1 - y0) // 2).move_by_offset(x1 - x0 - (x1 - x0) // 2, y1 - y0 - (y1 - y0) // 2)
         .release().perform())

    def regions(self):
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#region-list .region-item')].map(i => i.querySelector('.head span').textContent)")

    def console_problems(self):
        try:
            entries = self.driver.get_log("browser")
        except Exception:  # some drivers have no log endpoint
            return []
        bad = []
        for entry in entries:
            message = entry.get("message", "")
            if entry.get("level") == "SEVERE" and ("Content Security Policy" in message or "Uncaught" in message
                                                   or "studio.js" in message):
                bad.append(message)
            elif entry.get("level") in ("SEVERE", "WARNING"):
                self.log(f"console: {message}")
        return bad

    # -- the steps

    def run(self):
        d = self.driver
        d.get(self.url)
        self.wait("the server's configuration (the sampler list)", lambda: len(self.finds("#sampler option")) > 0)
        self.wait("the canvas", lambda: self.find("#canvas-frame").rect["width"] > 100)
        if d.execute_script("return [...document.querySelectorAll('script[src],link[href],img[src]')]"
                            ".some(e => /^https?:/.test(e.getAttribute('src') || e.getAttribute('href') || '') && !(e.src || e.href).startsWith(location.origin))"):
            raise CheckFailed("the page loads something from another origin")
        self.shot("01-loaded")

        loras = [o.get_attribute("value") for o in self.finds("#lora-picker option") if o.get_attribute("value")]
        if loras:
            Select(self.find("#lora-picker")).select_by_value(loras[0])
            if f"<lora:{loras[0]}:1>" not in self.find("#prompt").get_attribute("value"):
                raise CheckFailed(f"choosing LoRA {loras[0]} left the prompt {self.find('#prompt').get_attribute('value')!r}")
        self.type_into("#prompt", PROMPT)
        self.wait("the prompt's token count", lambda: self.find("#prompt-tokens").text not in ("", "0/75", "–"), timeout=5)
        self.log(f"token counter: {self.find('#prompt-tokens').text}")
        self.type_into("#negative-prompt", "fog")
        self.set_number("#width", self.size[0])
        self.set_number("#height", self.size[1])
        self.set_number("#steps", self.steps)
        self.set_number("#seed", 42)
        frame = self.find("#canvas-frame").rect
        ratio = frame["width"] / frame["height"]
        if abs(ratio - self.size[0] / self.size[1]) > 0.02:
            raise CheckFailed(f"the canvas shows {frame['width']}x{frame['height']}, not the aspect of {self.size}")

        layer = self.find("#region-layer")
        self.drag(layer, (0.04, 0.08), (0.46, 0.92))
        self.drag(layer, (0.55, 0.15), (0.9, 0.8))
        self.wait("two regions on the canvas", lambda: len(self.finds("#region-layer .region")) == 2, timeout=3)
        before = self.regions()
        # a third region, deleted again with the Delete key
        self.drag(layer, (0.47, 0.3), (0.53, 0.7))
        self.wait("a third region", lambda: len(self.finds("#region-layer .region")) == 3, timeout=3)
        ActionChains(d).send_keys(Keys.DELETE).perform()
        self.wait("the Delete key to remove the selected region", lambda: len(self.finds("#region-layer .region")) == 2, timeout=3)
        if self.regions() != before:
            raise CheckFailed(f"Delete removed the wrong region: {before} -> {self.regions()}")
        # move the second region right, then resize it by its bottom-right corner
        self.drag(layer, (0.7, 0.5), (0.75, 0.5))
        handle = self.find("#region-layer .region.selected .handle[data-corner='se']")
        ActionChains(d, duration=50).click_and_hold(handle).move_by_offset(-10, 20).move_by_offset(-10, 20).release().perform()
        after = self.regions()
        self.log(f"regions drawn: {before}; after a move and a resize: {after}")
        if before[0] != after[0] or before[1] == after[1]:
            raise CheckFailed(f"moving/resizing region 2 did not work as expected: {before} -> {after}")
        for index, text in enumerate(REGION_PROMPTS):
            self.type_into(f"[data-testid='region-prompt-{index}']", text)
        self.shot("02-regions")

        ActionChains(d).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        self.wait("the job in the queue (after Ctrl+Enter)", lambda: len(self.finds("#queue-list .job.mine")) > 0, timeout=10)
        self.log(f"queued: {self.find('#queue-list .job.mine').text!r}")
        self.wait("a live preview on the canvas", lambda: int(self.find("#canvas-image").get_attribute("data-previews") or 0) > 0
                  or self.find("#progress-text").text.startswith(("Done", "Failed", "Interrupted")), timeout=60, poll=0.05)
        progress = self.find("#progress-text").text
        source = self.find("#canvas-image").get_attribute("src") or ""
        if not source.startswith("data:image/png"):
            raise CheckFailed(f"no live preview arrived while the job ran (progress: {progress!r})")
        self.log(f"preview arrived; progress: {progress!r}")
        self.shot("03-rendering")

        self.wait("the job to finish", lambda: self.find("#progress-text").text.startswith(("Done", "Failed", "Cancelled", "Interrupted")), timeout=60)
        if not self.find("#progress-text").text.startswith("Done"):
            raise CheckFailed(f"the job ended as {self.find('#progress-text').text!r}: {[e.text for e in self.finds('#errors li')]}")
        self.wait("the result on the canvas", lambda: "/panorama/v1/gallery/" in (self.find("#canvas-image").get_attribute("src") or ""))
        self.wait("the result to load", lambda: d.execute_script("const i = document.getElementById('canvas-image'); return i.complete && i.naturalWidth > 0"))
        self.log(f"done: {self.find('#progress-text').text!r}")
        self.shot("04-done")
        self.find("#seed-random").click()
        self.find("#seed-reuse").click()
        if self.find("#seed").get_attribute("value") != "42":
            raise CheckFailed(f"the last-seed button set the seed to {self.find('#seed').get_attribute('value')!r}, not 42")

        # change the form, then get the picture's parameters back from the gallery
        self.type_into("#prompt", "something else")
        self.find("#region-clear").click()
        self.set_number("#width", self.size[0] + 512)
        self.wait("a gallery thumbnail", lambda: len(self.finds("#gallery-grid .gallery-item")) > 0, timeout=10)
        self.finds("#gallery-grid .gallery-item")[0].click()
        self.wait("the picture's details", lambda: self.find("#detail-dialog").get_attribute("open") is not None
                  and self.find("#detail-info").text.strip() != "")
        self.wait("the picture in the details", lambda: d.execute_script("const i = document.getElementById('detail-image'); return i.complete && i.naturalWidth > 0"))
        info = self.find("#detail-info").text
        self.log("PNG Info: " + info.replace("\n", " | "))
        for expected in (PROMPT, "Regions: 2", f"Size: {self.size[0]}x{self.size[1]}"):
            if expected not in info:
                raise CheckFailed(f"the PNG Info lacks {expected!r}: {info!r}")
        self.shot("05-gallery-detail")
        self.find("#detail-use").click()
        self.wait("the dialog to close", lambda: self.find("#detail-dialog").get_attribute("open") is None)
        values = d.execute_script("return ['prompt','negative-prompt','width','height','steps','seed'].map(id => document.getElementById(id).value)")
        expected = [PROMPT, "fog", str(self.size[0]), str(self.size[1]), str(self.steps), "42"]
        if values != expected:
            raise CheckFailed(f"'Use these parameters' filled {values}, expected {expected}")
        prompts = [e.get_attribute("value") for e in self.finds("#region-list textarea")]
        if prompts != REGION_PROMPTS:
            raise CheckFailed(f"'Use these parameters' restored the regions {prompts}, expected {REGION_PROMPTS}")
        self.shot("06-parameters-used")

        # the form survives a reload
        time.sleep(0.5)
        d.refresh()
        self.wait("the page after a reload", lambda: len(self.finds("#sampler option")) > 0)
        kept = self.find("#prompt").get_attribute("value")
        if kept != PROMPT or len(self.finds("#region-layer .region")) != 2:
            raise CheckFailed(f"after a reload the prompt is {kept!r} with {len(self.finds('#region-layer .region'))} regions")
        problems = self.console_problems()
        if problems:
            raise CheckFailed(f"the browser console reports: {problems}")
        self.log("all steps passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the studio page, e.g. http://127.0.0.1:7860/")
    parser.add_argument("--screenshots", required=True, help="folder for the screenshots")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    check = None
    try:
        check = Check(args.url, args.screenshots, args.width, args.height, args.steps)
        check.run()
    except CheckFailed as failure:
        print(f"FAILED: {failure}", flush=True)
        if check:
            check.shot("failure")
        return 1
    except Exception as error:  # a driver or browser problem: say which
        print(f"FAILED: {type(error).__name__}: {error}", flush=True)
        if check:
            try:
                check.shot("failure")
            except Exception:
                pass
        return 1
    finally:
        if check:
            check.driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
