"""page_check.py — `kiln serve`'s chat page in headless Chromium (selenium): the model name
appears, a message gets a streamed reply, a second turn follows, the stop button ends a long
reply, model text is shown as text. Run by tests/serve/test_server.c:
python3 page_check.py URL KEY SCREENSHOT.png. Exits 77 when selenium or chromium is missing."""
import shutil
import sys
import time

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    print("selenium missing")
    sys.exit(77)

URL, KEY, SHOT = sys.argv[1], sys.argv[2], sys.argv[3]
chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
driver_bin = shutil.which("chromedriver")
if not chromium or not driver_bin:
    print("chromium or chromedriver missing")
    sys.exit(77)

opts = webdriver.ChromeOptions()
opts.binary_location = chromium
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,800"):
    opts.add_argument(a)
drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def idle(d):
    return d.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == "0"


def replies():
    return [e.text for e in drv.find_elements(By.CSS_SELECTOR, ".msg.assistant")]


def say(text, temperature="0", max_tokens="24"):
    for field, value in (("temp", temperature), ("maxtok", max_tokens)):
        el = drv.find_element(By.ID, field)
        drv.execute_script("arguments[0].value = arguments[1]", el, value)
    box = drv.find_element(By.ID, "input")
    box.send_keys(text)
    drv.find_element(By.ID, "send").click()


try:
    drv.get(URL + "/")
    key = drv.find_element(By.ID, "key")
    drv.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))", key, KEY)
    WebDriverWait(drv, 30).until(lambda d: d.find_element(By.ID, "model").text.endswith(".gguf"))
    check(True, "model name shown: " + drv.find_element(By.ID, "model").text)

    say("What is the capital of France?")
    # streamed: the reply grows while the page is busy, then the page is idle again
    WebDriverWait(drv, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == "1")
    WebDriverWait(drv, 120).until(idle)
    r = replies()
    check(len(r) == 1 and len(r[0]) > 0, f"first reply: {r}")
    check("tok/s" in drv.find_element(By.ID, "stats").text, "tokens/s shown: " + drv.find_element(By.ID, "stats").text)

    say("And of Germany? Answer with <b>bold</b> HTML.")
    WebDriverWait(drv, 120).until(lambda d: idle(d) and len(replies()) == 2)
    r = replies()
    check(len(r) == 2 and len(r[1]) > 0, f"second turn: {r[1] if len(r) > 1 else r}")
    check(not drv.find_elements(By.CSS_SELECTOR, "#log b"), "no model or user text became HTML")

    say("Write a very long story about a dragon.", temperature="0.8", max_tokens="2000")
    WebDriverWait(drv, 60).until(lambda d: len(replies()) == 3 and len(replies()[2]) > 20)
    drv.find_element(By.ID, "stop").click()
    WebDriverWait(drv, 10).until(idle)
    n = len(replies()[2])
    time.sleep(1.5)
    check(len(replies()[2]) == n, f"stop: the reply stopped growing at {n} characters")
    check(bool(drv.find_elements(By.CSS_SELECTOR, ".msg.assistant.stopped")), "stopped reply marked")
    drv.save_screenshot(SHOT)
    print("screenshot: " + SHOT)

    drv.find_element(By.ID, "new").click()
    check(not replies(), "new chat clears the log")
except Exception as e:  # noqa: BLE001 - any failure is the test's failure
    check(False, f"page: {type(e).__name__}: {e}")
    try:
        drv.save_screenshot(SHOT)
        print("screenshot: " + SHOT)
    except Exception:  # noqa: BLE001
        pass
finally:
    drv.quit()
print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
