/// The studio page's HTML and CSS (the script is in StudioScript.swift), compiled into the
/// binary so `panorama serve` needs no files and no network: nothing here names another origin.
enum StudioPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>panorama studio</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/studio/studio.css">
<script src="/studio/studio.js" defer></script>
</head>
<body>
<header class="topbar">
  <h1>panorama <span>studio</span></h1>
  <label class="model" title="The checkpoint that renders (switching waits for it to load)">Model
    <select id="model" data-testid="model"></select>
  </label>
  <span id="model-status" class="status" role="status"></span>
  <span class="spacer"></span>
  <span id="server-status" class="status" role="status"></span>
</header>

<main class="layout">
  <aside class="controls" id="controls">
    <div class="tabs" role="tablist" id="mode-tabs">
      <button type="button" role="tab" data-mode="txt2img" id="mode-txt2img" title="Text to image: render from the prompts alone">txt2img</button>
      <button type="button" role="tab" data-mode="img2img" id="mode-img2img" title="Image to image: start from an uploaded picture">img2img</button>
      <button type="button" role="tab" data-mode="inpaint" id="mode-inpaint" title="Repaint the parts of a picture you paint over">Inpaint</button>
      <button type="button" role="tab" data-mode="outpaint" id="mode-outpaint" title="Place a picture on a larger canvas and paint the rest around it">Outpaint</button>
    </div>

    <section class="field">
      <div class="label-row"><label for="prompt">Prompt</label><span class="tokens" id="prompt-tokens" title="Tokens used / tokens available (75 per chunk)">0/75</span></div>
      <textarea id="prompt" rows="4" placeholder="snowy mountains at sunset" spellcheck="false"></textarea>
    </section>
    <section class="field">
      <div class="label-row"><label for="negative-prompt">Negative prompt</label><span class="tokens" id="negative-tokens" title="Tokens used / tokens available (75 per chunk)">0/75</span></div>
      <textarea id="negative-prompt" rows="2" placeholder="fog, blur" spellcheck="false"></textarea>
    </section>
    <div class="row">
      <select id="lora-picker" title="Insert a LoRA into the prompt"><option value="">+ LoRA…</option></select>
      <select id="embedding-picker" title="Insert a textual-inversion embedding into the prompt"><option value="">+ Embedding…</option></select>
    </div>

    <section class="group" id="image-group" hidden>
      <h2>Source picture</h2>
      <div class="row">
        <label class="file-button" title="A PNG, JPEG or WebP picture to start from">Choose…<input type="file" id="init-image" accept="image/png,image/jpeg,image/webp"></label>
        <button type="button" id="init-match" title="Set the canvas to the picture's size (multiples of 8, at least the model's window)">Use its size</button>
        <button type="button" id="init-clear">Remove</button>
      </div>
      <p class="hint" id="init-info">No picture yet: choose one or drop it on the canvas.</p>
      <label class="slider" title="How much of the picture is repainted: 0 keeps it, 1 ignores it">Denoising strength
        <input type="range" id="denoising" min="0.05" max="1" step="0.05" value="0.6"><output id="denoising-value">0.60</output>
      </label>
      <div id="outpaint-tools" hidden>
        <label title="Where the picture sits on the canvas; the rest is painted">Place the picture
          <select id="outpaint-place">
            <option value="center">In the middle</option><option value="left">At the left</option>
            <option value="right">At the right</option><option value="top">At the top</option><option value="bottom">At the bottom</option>
          </select>
        </label>
        <label class="slider" title="How far the new painting reaches into the picture, to blend the seam">Overlap<input type="range" id="outpaint-overlap" min="0" max="128" step="8" value="32"><output id="outpaint-overlap-value">32</output></label>
        <p class="hint">Make the canvas larger than the picture (e.g. a 4:1 preset): the area around it is painted.</p>
      </div>
      <div id="mask-tools" hidden>
        <label class="slider" id="brush-size-label">Brush size<input type="range" id="brush-size" min="4" max="256" step="4" value="48"><output id="brush-size-value">48</output></label>
        <label class="slider" title="Blur of the mask's edge, in pixels">Mask blur<input type="range" id="mask-blur" min="0" max="64" step="1" value="4"><output id="mask-blur-value">4</output></label>
        <div class="row">
          <button type="button" id="mask-erase" aria-pressed="false" title="Paint to remove mask">Eraser</button>
          <button type="button" id="mask-clear">Clear mask</button>
        </div>
        <p class="hint">Paint over the canvas where the picture should be repainted.</p>
      </div>
    </section>

    <section class="group">
      <h2>Size</h2>
      <div class="presets" id="presets">
        <button type="button" data-preset="1:1" title="One window: the model's native square">1:1</button>
        <button type="button" data-preset="4:1" title="Four windows wide">4:1</button>
        <button type="button" data-preset="8:1" title="Eight windows wide">8:1</button>
        <button type="button" data-preset="360" title="4:1 whose right edge wraps to the left (a 360° panorama)">360°</button>
      </div>
      <div class="row">
        <label class="num">Width<input type="number" id="width" min="8" step="8" value="2048"></label>
        <span class="times">×</span>
        <label class="num">Height<input type="number" id="height" min="8" step="8" value="512"></label>
        <button type="button" id="swap-size" title="Swap width and height">⇄</button>
      </div>
      <div class="row">
        <label class="check" title="The right edge continues the left one: a seamless 360° panorama"><input type="checkbox" id="circular"> 360° wrap</label>
        <span class="hint" id="size-info"></span>
      </div>
    </section>

    <section class="group">
      <h2>Sampling</h2>
      <div class="grid2">
        <label>Sampler<select id="sampler"></select></label>
        <label title="How the noise levels are spaced over the steps">Schedule type<select id="scheduler"></select></label>
        <label class="num">Steps<input type="number" id="steps" min="1" max="150" value="20"></label>
        <label class="num" title="Classifier-free guidance: how strongly the prompt is followed">CFG scale<input type="number" id="cfg" min="0" max="30" step="0.5" value="7"></label>
        <div class="seed-line">
          <label class="num seed">Seed
            <span class="seed-row"><input type="number" id="seed" min="-1" step="1" value="-1">
            <button type="button" id="seed-random" title="Random seed (-1)">⚄</button>
            <button type="button" id="seed-reuse" title="The last picture's seed">♻</button></span>
          </label>
          <label class="num batch" title="How many pictures, one after another">Batch count<input type="number" id="n-iter" min="1" max="100" value="1"></label>
        </div>
      </div>
      <details class="advanced">
        <summary>Panorama options</summary>
        <div class="grid2">
          <label title="How overlapping windows are blended">Window weights<select id="window-weights"><option value="uniform">Uniform</option><option value="gaussian">Gaussian</option></select></label>
          <label title="Few-step handling of regions for LCM / TCD models">Few-step regions<select id="few-step"><option value="auto">Auto</option><option value="on">On</option><option value="off">Off</option></select></label>
          <label class="num" title="Steps at the start where each region is denoised on its own before blending">Bootstrap steps<input type="number" id="bootstrap-steps" min="0" max="50" value="" placeholder="auto"></label>
          <label class="check" title="SpotDiffusion: shifting non-overlapping windows (faster, rougher)"><input type="checkbox" id="spot"> Spot windows</label>
        </div>
      </details>
    </section>

    <div class="generate-row">
      <button type="button" id="generate" data-testid="generate" class="primary" title="Ctrl+Enter">Generate</button>
    </div>
    <ul id="errors" class="errors" role="alert" data-testid="errors"></ul>
  </aside>

  <section class="stage" id="stage">
    <div class="stage-bar">
      <div class="tools" id="tools">
        <button type="button" id="tool-regions" aria-pressed="true" title="Drag on the canvas to draw a region; drag a region to move it, its corners to resize">▭ Regions</button>
        <button type="button" id="tool-mask" aria-pressed="false" hidden title="Paint the inpaint mask">✎ Mask</button>
      </div>
      <div class="progress" id="progress" data-state="idle">
        <div class="bar"><div class="fill" id="progress-fill"></div></div>
        <span id="progress-text" data-testid="progress-text">Idle</span>
      </div>
      <button type="button" id="cancel-current" class="danger" disabled title="Cancel the running job">Cancel</button>
    </div>
    <div class="canvas-area" id="canvas-area">
      <div class="canvas-frame" id="canvas-frame" data-testid="canvas">
        <img id="canvas-image" alt="" hidden draggable="false">
        <canvas id="mask-canvas" hidden></canvas>
        <div class="region-layer" id="region-layer" data-testid="region-layer"></div>
        <span class="canvas-size" id="canvas-size"></span>
      </div>
    </div>
    <p class="hint" id="regions-off" hidden>Regions apply to txt2img only: they are kept for when you switch back.</p>
    <div class="regions-panel" id="regions-panel">
    <div class="regions-head">
      <h2>Regions <span class="hint">each region gets its own prompt; the main prompt covers the rest</span></h2>
      <div class="row">
        <button type="button" id="region-add" title="Add a region over the middle of the canvas">+ Region</button>
        <button type="button" id="region-delete" disabled title="Delete the selected region (Delete key)">Delete</button>
        <button type="button" id="region-clear">Clear all</button>
      </div>
    </div>
    <ol class="region-list" id="region-list" data-testid="region-list"></ol>
    </div>
    <div class="queue-panel">
      <h2>Queue</h2>
      <ol class="queue" id="queue-list" data-testid="queue"></ol>
      <p class="hint" id="queue-empty">Nothing queued.</p>
    </div>
  </section>
</main>

<section class="lower">
  <div class="gallery-panel">
    <div class="gallery-head">
      <h2>Gallery <span class="hint" id="gallery-count"></span></h2>
      <label class="file-button" title="Read the parameters stored in any PNG">PNG Info…<input type="file" id="png-info-file" accept="image/png"></label>
      <button type="button" id="gallery-refresh" title="Reload the gallery">↻</button>
    </div>
    <div class="gallery" id="gallery-grid" data-testid="gallery"></div>
    <button type="button" id="gallery-more" hidden>Load more</button>
  </div>
</section>

<dialog id="detail-dialog" data-testid="detail">
  <div class="detail">
    <div class="detail-picture"><img id="detail-image" alt="" data-testid="detail-image"></div>
    <div class="detail-side">
      <h2 id="detail-title">PNG Info</h2>
      <pre id="detail-info" data-testid="detail-info"></pre>
      <div class="row">
        <button type="button" id="detail-use" class="primary" data-testid="use-parameters">Use these parameters</button>
        <button type="button" id="detail-canvas" title="Show the picture on the canvas">Show on canvas</button>
        <button type="button" id="detail-source" title="Start img2img, inpaint or outpaint from this picture">Use as source</button>
        <a id="detail-download" class="button" download>Download</a>
        <button type="button" id="detail-close">Close</button>
      </div>
    </div>
  </div>
</dialog>
<div class="drop-hint" id="drop-hint" hidden>Drop a PNG to read its parameters, or a picture for image to image</div>
</body>
</html>
"""#
}

extension StudioPage {
    static let css = #"""
:root {
  --bg: #121417; --panel: #1b1e23; --panel2: #23272e; --line: #323843; --text: #e6e8eb;
  --muted: #9aa3ae; --accent: #4f8cff; --accent2: #3a6fd8; --danger: #e0545a; --ok: #46b37a;
  --warn: #e2a33b; --radius: 6px;
  color-scheme: dark;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
h1 { font-size: 17px; margin: 0; font-weight: 600; letter-spacing: .2px; }
h1 span { color: var(--accent); font-weight: 500; }
h2 { font-size: 13px; margin: 0 0 8px; font-weight: 600; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); }
h2 .hint { text-transform: none; letter-spacing: 0; font-weight: 400; margin-left: 6px; }
button, select, input, textarea, .button {
  font: inherit; color: var(--text); background: var(--panel2); border: 1px solid var(--line);
  border-radius: var(--radius); }
button, .button { padding: 5px 10px; cursor: pointer; text-decoration: none; display: inline-block; }
button:hover:not(:disabled), .button:hover { border-color: var(--accent); }
button:disabled { opacity: .45; cursor: default; }
button[aria-pressed="true"] { background: var(--accent2); border-color: var(--accent); }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; font-weight: 600; }
button.primary:hover:not(:disabled) { background: var(--accent2); }
button.danger { border-color: #6b2e31; }
button.danger:hover:not(:disabled) { background: var(--danger); border-color: var(--danger); }
select, input { padding: 5px 7px; min-width: 0; }
textarea { width: 100%; padding: 7px 8px; resize: vertical; line-height: 1.35; }
input:focus, textarea:focus, select:focus, button:focus-visible { outline: 2px solid var(--accent); outline-offset: -1px; }
input[type="checkbox"] { accent-color: var(--accent); }
input[type="range"] { accent-color: var(--accent); padding: 0; background: none; border: 0; }
.hint { color: var(--muted); font-size: 12px; }
.row { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.spacer { flex: 1; }
.status { color: var(--muted); font-size: 13px; }
.status.busy { color: var(--warn); }
.status.bad { color: var(--danger); }

.topbar { display: flex; align-items: center; gap: 16px; padding: 10px 16px; border-bottom: 1px solid var(--line); background: var(--panel); }
.topbar .model { display: flex; gap: 8px; align-items: center; color: var(--muted); }
.topbar .model select { min-width: 200px; }

.layout { display: grid; grid-template-columns: 340px minmax(0, 1fr); gap: 14px; padding: 14px 16px 0; }
.controls { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px; display: flex; flex-direction: column; gap: 12px; align-self: start; }
.tabs { display: grid; grid-template-columns: repeat(4, 1fr); gap: 4px; background: var(--bg); padding: 3px; border-radius: 8px; }
.tabs button { border: 0; background: transparent; padding: 6px 4px; font-size: 13px; }
.tabs button[aria-selected="true"] { background: var(--panel2); color: #fff; box-shadow: inset 0 -2px 0 var(--accent); }
.field { display: flex; flex-direction: column; gap: 4px; }
.label-row { display: flex; justify-content: space-between; align-items: baseline; }
.label-row label { font-weight: 600; }
.tokens { font-variant-numeric: tabular-nums; color: var(--muted); font-size: 12px; }
.tokens.over { color: var(--warn); }
.row > select { flex: 1; }
.group { border-top: 1px solid var(--line); padding-top: 10px; display: flex; flex-direction: column; gap: 8px; }
.presets { display: grid; grid-template-columns: repeat(4, 1fr); gap: 4px; }
.presets button[aria-pressed="true"] { background: var(--accent2); }
label.num, .grid2 > label { display: flex; flex-direction: column; gap: 3px; font-size: 12px; color: var(--muted); }
label.num input { width: 100%; }
.row label.num { flex: 1; }
.times { color: var(--muted); padding-top: 16px; }
#swap-size { margin-top: 16px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.grid2 select, .grid2 input { color: var(--text); }
.seed-line { grid-column: 1 / -1; display: flex; gap: 8px; }
.seed-line .seed { flex: 2.2; }
.seed-line .batch { flex: 1; }
label.num { font-size: 12px; color: var(--muted); }
.seed-row { display: flex; gap: 4px; }
.seed-row input { flex: 1; }
.seed-row button { padding: 4px 7px; }
label.check { display: flex; gap: 6px; align-items: center; font-size: 13px; color: var(--text); }
.grid2 > label.check { flex-direction: row; padding-top: 16px; color: var(--text); }
.advanced summary { cursor: pointer; color: var(--muted); font-size: 12px; margin: 4px 0 8px; }
label.slider { display: grid; grid-template-columns: 1fr 44px; gap: 2px 8px; font-size: 12px; color: var(--muted); }
label.slider input { grid-column: 1; }
label.slider output { grid-column: 2; grid-row: 1 / span 2; align-self: end; text-align: right; color: var(--text); font-variant-numeric: tabular-nums; }
.file-button { position: relative; overflow: hidden; display: inline-block; padding: 5px 10px; border: 1px solid var(--line); border-radius: var(--radius); background: var(--panel2); cursor: pointer; font-size: 14px; color: var(--text); }
.file-button:hover { border-color: var(--accent); }
.file-button input { position: absolute; inset: 0; opacity: 0; cursor: pointer; }
.generate-row button { width: 100%; padding: 10px; font-size: 16px; }
.errors { margin: 0; padding: 0; list-style: none; color: var(--danger); font-size: 13px; }
.errors li { padding: 6px 8px; background: #2a1719; border: 1px solid #5a2a2e; border-radius: var(--radius); margin-top: 4px; white-space: pre-wrap; }
.errors:empty { display: none; }

.stage { display: flex; flex-direction: column; gap: 10px; min-width: 0; }
.stage-bar { display: flex; gap: 10px; align-items: center; }
.tools { display: flex; gap: 4px; }
.progress { flex: 1; display: flex; align-items: center; gap: 10px; min-width: 0; }
.progress .bar { flex: 1; height: 8px; background: var(--panel2); border-radius: 4px; overflow: hidden; border: 1px solid var(--line); }
.progress .fill { height: 100%; width: 0; background: linear-gradient(90deg, var(--accent2), var(--accent)); transition: width .3s; }
.progress[data-state="done"] .fill { background: var(--ok); }
.progress[data-state="failed"] .fill { background: var(--danger); }
#progress-text { font-variant-numeric: tabular-nums; color: var(--muted); white-space: nowrap; min-width: 170px; text-align: right; font-size: 13px; }
.canvas-area { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 14px; display: flex; justify-content: center; align-items: center; min-height: 200px; }
.canvas-frame { position: relative; background-color: #1f242b;
  background-image: linear-gradient(45deg, #262c34 25%, transparent 25%), linear-gradient(-45deg, #262c34 25%, transparent 25%),
    linear-gradient(45deg, transparent 75%, #262c34 75%), linear-gradient(-45deg, transparent 75%, #262c34 75%);
  background-size: 24px 24px; background-position: 0 0, 0 12px, 12px -12px, -12px 0;
  box-shadow: 0 0 0 1px var(--line), 0 6px 24px rgba(0,0,0,.35); user-select: none; touch-action: none; }
.canvas-frame.circular::before, .canvas-frame.circular::after { content: "↻"; position: absolute; top: 50%; transform: translateY(-50%); color: var(--accent); font-size: 16px; }
.canvas-frame.circular::before { left: -14px; }
.canvas-frame.circular::after { right: -14px; }
#canvas-image { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: fill; pointer-events: none; image-rendering: auto; }
#mask-canvas { position: absolute; inset: 0; width: 100%; height: 100%; opacity: .5; pointer-events: none; }
.region-layer { position: absolute; inset: 0; cursor: crosshair; }
.region-layer.painting { cursor: none; }
.canvas-size { position: absolute; right: 6px; bottom: 4px; font-size: 11px; color: rgba(255,255,255,.75); text-shadow: 0 1px 2px #000; pointer-events: none; font-variant-numeric: tabular-nums; }
.region { position: absolute; border: 2px solid var(--c); background: color-mix(in srgb, var(--c) 16%, transparent); cursor: move; }
.region.selected { background: color-mix(in srgb, var(--c) 28%, transparent); box-shadow: 0 0 0 1px #000, 0 0 0 3px color-mix(in srgb, var(--c) 50%, transparent); z-index: 2; }
.region .tag { position: absolute; left: 0; top: 0; max-width: 100%; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; background: var(--c); color: #111; font-size: 11px; font-weight: 600; padding: 1px 5px; pointer-events: none; }
.region .handle { position: absolute; width: 11px; height: 11px; background: #fff; border: 2px solid var(--c); border-radius: 2px; display: none; }
.region.selected .handle { display: block; }
.handle[data-corner="nw"] { left: -6px; top: -6px; cursor: nwse-resize; }
.handle[data-corner="ne"] { right: -6px; top: -6px; cursor: nesw-resize; }
.handle[data-corner="sw"] { left: -6px; bottom: -6px; cursor: nesw-resize; }
.handle[data-corner="se"] { right: -6px; bottom: -6px; cursor: nwse-resize; }
.outpaint-box { position: absolute; border: 2px dashed #fff; box-shadow: 0 0 0 1px #000; pointer-events: none; }
#outpaint-tools label:not(.slider) { display: flex; flex-direction: column; gap: 3px; font-size: 12px; color: var(--muted); }
.region-mask { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; opacity: .35; mix-blend-mode: screen; }
.brush-cursor { position: absolute; border: 1px solid #fff; border-radius: 50%; pointer-events: none; box-shadow: 0 0 0 1px #000; transform: translate(-50%, -50%); }
.regions-head { display: flex; justify-content: space-between; align-items: center; flex-wrap: wrap; gap: 6px; }
.regions-head h2 { margin: 0; }
.regions-panel { display: flex; flex-direction: column; gap: 10px; }
.canvas-frame.regions-off .region, .canvas-frame.regions-off .region-mask { display: none; }
.region-layer.inert { cursor: default; }
.region-list { list-style: none; margin: 0; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 8px; }
.region-list:empty::before { content: "No regions: drag on the canvas to draw one."; color: var(--muted); font-size: 12px; }
.region-item { background: var(--panel); border: 1px solid var(--line); border-left: 4px solid var(--c); border-radius: 6px; padding: 8px; display: flex; flex-direction: column; gap: 6px; }
.region-item.selected { border-color: var(--c); }
.canvas-frame.has-picture .region:not(.selected) { background: transparent; }
.canvas-frame.has-picture .region .tag { opacity: .85; }
.region-item .head { display: flex; gap: 8px; align-items: center; font-size: 12px; color: var(--muted); }
.region-item .head strong { color: var(--c); }
.region-item .head .spacer { flex: 1; }
.region-item .head button { padding: 1px 7px; font-size: 12px; }
.region-item textarea { font-size: 13px; }
.region-item .opts { display: flex; flex-wrap: wrap; gap: 6px 10px; align-items: center; font-size: 12px; color: var(--muted); }
.region-item .opts label:not(.file-button) { display: flex; align-items: center; gap: 4px; white-space: nowrap; }
.region-item .opts input[type="number"] { width: 58px; padding: 3px 5px; }
.region-item .opts .file-button { font-size: 12px; padding: 2px 8px; }

.lower { padding: 14px 16px 24px; }
.queue-panel, .gallery-panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px; min-width: 0; }
.queue { list-style: none; margin: 0; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 6px; max-height: 300px; overflow: auto; }
.job { border: 1px solid var(--line); border-radius: 6px; padding: 7px 8px; background: var(--panel2); display: grid; grid-template-columns: 1fr auto; gap: 3px 8px; font-size: 12px; }
.job.mine { border-left: 3px solid var(--accent); }
.job .prompt { grid-column: 1 / -1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: var(--text); font-size: 13px; }
.job .meta { color: var(--muted); }
.job .state { font-weight: 600; text-transform: capitalize; }
.job[data-state="running"] .state { color: var(--accent); }
.job[data-state="queued"] .state { color: var(--warn); }
.job[data-state="done"] .state { color: var(--ok); }
.job[data-state="failed"] .state, .job[data-state="interrupted"] .state, .job[data-state="cancelled"] .state { color: var(--danger); }
.job .bar { grid-column: 1 / -1; height: 4px; background: var(--bg); border-radius: 2px; overflow: hidden; }
.job .bar div { height: 100%; background: var(--accent); }
.job .error { grid-column: 1 / -1; color: var(--danger); white-space: pre-wrap; }
.job button { padding: 1px 8px; font-size: 12px; align-self: start; }
.job .thumbs { grid-column: 1 / -1; display: flex; gap: 4px; overflow: hidden; }
.job .thumbs img { height: 36px; border-radius: 3px; cursor: pointer; border: 1px solid var(--line); }
.gallery-head { display: flex; align-items: center; gap: 8px; margin-bottom: 8px; }
.gallery-head h2 { margin: 0; flex: 1; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.gallery:empty::before { content: "No pictures yet."; color: var(--muted); font-size: 12px; }
.gallery-item { padding: 0; border: 1px solid var(--line); border-radius: 5px; overflow: hidden; background: var(--bg); height: 110px; flex: 0 1 auto; max-width: 100%; }
.gallery-item img { height: 100%; max-width: 100%; display: block; object-fit: cover; }
.gallery-item:hover { border-color: var(--accent); }
#gallery-more { margin-top: 10px; }

dialog { background: var(--panel); color: var(--text); border: 1px solid var(--line); border-radius: 10px; padding: 0; width: min(1200px, 94vw); max-height: 92vh; }
dialog::backdrop { background: rgba(0,0,0,.65); }
.detail { display: flex; flex-direction: column; gap: 0; max-height: 90vh; }
.detail-picture { background: #000; display: flex; justify-content: center; align-items: center; padding: 10px; }
.detail-picture img { width: 100%; max-height: 55vh; object-fit: contain; display: block; }
#detail-title { text-transform: none; letter-spacing: 0; font-size: 14px; color: var(--text); }
.detail-side { padding: 12px 14px; display: flex; flex-direction: column; gap: 10px; overflow: auto; }
.detail-side pre { margin: 0; white-space: pre-wrap; word-break: break-word; background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 10px; font: 12px/1.45 ui-monospace, "SF Mono", Menlo, Consolas, monospace; max-height: 24vh; overflow: auto; }
.drop-hint { position: fixed; inset: 12px; border: 3px dashed var(--accent); border-radius: 14px; background: rgba(18,20,23,.8); display: flex; align-items: center; justify-content: center; font-size: 20px; z-index: 10; pointer-events: none; }
.drop-hint[hidden] { display: none; }
[hidden] { display: none !important; }
@media (max-width: 900px) {
  .layout { grid-template-columns: 1fr; }
}
"""#
}
