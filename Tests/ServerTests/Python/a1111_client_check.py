"""Drives `panorama serve` with AUTOMATIC1111's own Python client, `webuiapi`, used as it is.

Usage: a1111_client_check.py --port PORT --auth-port PORT2 --window PIXELS
PORT serves without authentication; PORT2 with basic auth alice:secret. WINDOW is the loaded
model's window: the height used, the width being a panorama beyond it. Exits non-zero with a
message at the first check that fails.
"""
import argparse
import sys
import threading
import time

import webuiapi
from PIL import Image, ImageDraw

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--auth-port", type=int, required=True)
parser.add_argument("--window", type=int, required=True)
args = parser.parse_args()
started = time.monotonic()


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)


def step(name):
    print(f"[{time.monotonic() - started:6.2f} s] {name}", flush=True)


api = webuiapi.WebUIApi(host="127.0.0.1", port=args.port, sampler="Euler a", steps=2)

step("listings")
models = api.get_sd_models()
check(isinstance(models, list) and models, f"get_sd_models: {models!r}")
for m in models:
    check({"title", "model_name", "hash", "sha256", "filename", "config"} <= m.keys(), f"sd-models entry keys: {m}")
    if m["sha256"] is not None:
        check(m["hash"] == m["sha256"][:10], f"hash is sha256's first 10 hex digits: {m}")
check(any(m["hash"] for m in models), f"every fixture model is small enough to be hashed: {models}")
samplers = api.util_get_sampler_names()
check("Euler a" in samplers and "DPM++ 2M" in samplers, f"samplers: {samplers}")
if hasattr(api, "get_schedulers"):
    schedulers = api.util_get_scheduler_names()
    check("automatic" in schedulers and "karras" in schedulers, f"schedulers: {schedulers}")
check(isinstance(api.get_loras(), list), "get_loras")
check("loaded" in api.get_embeddings(), "get_embeddings")

step("model switch")
current = api.util_get_current_model()
check(current in api.util_get_model_names(), f"current model {current!r} is listed")
other = next(t for t in api.util_get_model_names() if t != current)
api.util_set_model(other)  # what webuiapi does: POST options {"sd_model_checkpoint": title}
check(api.get_options()["sd_model_checkpoint"] == other, f"switched to {other}")
check(api.set_options({"sd_model_checkpoint": current}) is None, "set_options answers null, as A1111")
check(api.util_get_current_model() == current, f"switched back to {current}")

step("override_settings: another model for one job")
other_name = next(m["model_name"] for m in models if m["title"] == other)
once = api.txt2img(prompt="x", width=args.window, height=args.window, steps=1, seed=2,
                   override_settings={"sd_model_checkpoint": other})
check(once.info["sd_model_name"] == other_name, f"the job used {other}: {once.info['sd_model_name']}")
check(api.util_get_current_model() == current, "the loaded model is back afterwards")
check(api.get_options()["sd_checkpoint_hash"] in (None, next(m["sha256"] for m in models if m["title"] == current)),
      "sd_checkpoint_hash is the loaded model's sha256")

step("unknown endpoints answer JSON")
check(api.get_cmd_flags() == {"detail": "Not Found"}, "an endpoint this server lacks is FastAPI's JSON 404")

step("txt2img panorama, n_iter=2")
width, height = 2 * args.window + 64, args.window
result = api.txt2img(prompt="a long mountain ridge", negative_prompt="blur", width=width, height=height,
                     steps=2, sampler_name="Euler a", seed=1234, cfg_scale=6, n_iter=2)
check(len(result.images) == 2, f"two images, got {len(result.images)}")
for image in result.images:
    check(image.size == (width, height), f"image size {image.size}, wanted {(width, height)}")
info = result.info
check(isinstance(info, dict), f"info is JSON: {info!r}")
check(info["seed"] == 1234 and info["all_seeds"] == [1234, 1235], f"seeds: {info['seed']}, {info['all_seeds']}")
check(info["width"] == width and info["height"] == height and info["sampler_name"] == "Euler a", f"info: {info}")
check(len(info["infotexts"]) == 2 and "Seed: 1235" in info["infotexts"][1], f"infotexts: {info['infotexts']}")
parameters = result.parameters
check(parameters["prompt"] == "a long mountain ridge" and parameters["n_iter"] == 2 and parameters["steps"] == 2,
      f"parameters echo the request: {parameters}")
check(result.image.info.get("parameters") == info["infotexts"][0], "the PNG's parameters chunk is the infotext")

step("png_info round trip")
png = api.png_info(result.image)
check(png.info == info["infotexts"][0], f"png-info info: {png.info!r}")
check(png.parameters.get("Prompt") == "a long mountain ridge" and png.parameters.get("Seed") == "1234"
      and png.parameters.get("Size-1") == str(width), f"png-info parameters: {png.parameters}")

step("img2img")
source = result.image.convert("RGB")
again = api.img2img(images=[source], prompt="a ridge at dusk", denoising_strength=0.5, width=width, height=height,
                    steps=2, seed=7, cfg_scale=5)
check(len(again.images) == 1 and again.image.size == (width, height), f"img2img: {again.images}")
check(again.info["denoising_strength"] == 0.5, f"denoising_strength: {again.info['denoising_strength']}")
check("init_images" not in again.parameters, "the echo leaves the images out")

step("inpaint")
mask = Image.new("L", (width, height), 0)
ImageDraw.Draw(mask).rectangle([0, 0, width // 2 - 1, height - 1], fill=255)
painted = api.img2img(images=[source], mask_image=mask, mask_blur=0, prompt="snow", denoising_strength=1,
                      width=width, height=height, steps=2, seed=8)
check(painted.image.size == (width, height), f"inpaint size {painted.image.size}")
out, kept = painted.image.convert("RGB"), source
right = [(x, y) for x in range(width // 2 + 8, width, 37) for y in range(0, height, 29)]
check(all(out.getpixel(p) == kept.getpixel(p) for p in right), "the unmasked half is kept exactly")
left = [(x, y) for x in range(0, width // 2 - 8, 37) for y in range(0, height, 29)]
check(any(out.getpixel(p) != kept.getpixel(p) for p in left), "the masked half is repainted")

step("interrupt from another thread")
outcome = {}


def long_job():
    worker = webuiapi.WebUIApi(host="127.0.0.1", port=args.port)  # a session of its own
    try:
        outcome["result"] = worker.txt2img(prompt="a long job", width=height, height=height, steps=400,
                                           sampler_name="Euler", seed=5)
    except Exception as error:  # reported below
        outcome["error"] = error


thread = threading.Thread(target=long_job)
thread.start()
deadline = time.monotonic() + 60
progress = api.get_progress()
while progress["state"]["sampling_step"] == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
    progress = api.get_progress()
check(progress["state"]["sampling_step"] > 0, f"the long job is sampling: {progress['state']}")
check(progress["state"]["job_count"] >= 1 and progress["progress"] > 0, f"progress: {progress['state']}")
check(progress["state"]["sampling_steps"] == 400, f"sampling_steps: {progress['state']}")
check(isinstance(progress.get("current_image"), str), "progress has a current_image preview")
check(api.interrupt() == {}, "interrupt answers {}")
thread.join(timeout=60)
check(not thread.is_alive(), "the interrupted call returns")
check("error" not in outcome, f"the interrupted call succeeds: {outcome.get('error')!r}")
check(len(outcome["result"].images) == 1, "the interrupted job returns its picture so far")
api.util_wait_for_ready(check_interval=0.1)
check(api.get_progress()["state"]["job_count"] == 0, "the queue is empty")

step("skip the current picture of a batch")
outcome = {}


def batch_job():
    worker = webuiapi.WebUIApi(host="127.0.0.1", port=args.port)
    outcome["result"] = worker.txt2img(prompt="a batch", width=height, height=height, steps=400,
                                       sampler_name="Euler", seed=11, n_iter=2)


thread = threading.Thread(target=batch_job)
thread.start()
deadline = time.monotonic() + 60
while api.get_progress()["state"]["sampling_step"] == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
api.skip()
while api.get_progress()["state"]["job_no"] != 1 and time.monotonic() < deadline:
    time.sleep(0.05)
check(api.get_progress()["state"]["job_no"] == 1, "skip moves on to the batch's next picture")
api.interrupt()
thread.join(timeout=60)
check(len(outcome["result"].images) == 2, f"the skipped picture and the interrupted one: {len(outcome['result'].images)}")
check(outcome["result"].info["all_seeds"] == [11, 12], f"seeds: {outcome['result'].info['all_seeds']}")

step("basic auth")
locked = webuiapi.WebUIApi(host="127.0.0.1", port=args.auth_port)
refused = locked.session.get(f"{locked.baseurl}/samplers")
check(refused.status_code == 401 and refused.json() == {"detail": "Incorrect username or password"},
      f"no credentials: {refused.status_code} {refused.text}")
try:
    locked.txt2img(prompt="x", width=height, height=height, steps=1)
    check(False, "txt2img without credentials raises")
except RuntimeError as error:
    check(error.args[0] == 401, f"txt2img without credentials: {error.args}")
locked.set_auth("alice", "wrong")
check(locked.session.get(f"{locked.baseurl}/samplers").status_code == 401, "a wrong password is 401")
locked.set_auth("alice", "secret")
check("Euler a" in locked.util_get_sampler_names(), "samplers with credentials")
signed = webuiapi.WebUIApi(host="127.0.0.1", port=args.auth_port, username="alice", password="secret")
done = signed.txt2img(prompt="x", width=height, height=height, steps=1, seed=3)
check(done.image.size == (height, height) and done.info["seed"] == 3, "txt2img with credentials")

step("all checks passed")
