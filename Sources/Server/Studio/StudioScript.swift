extension StudioPage {
    /// The page's behaviour: plain ES2020, no framework, talking only to this server's API.
    /// Anything that came from a user or the server goes into the page as text (`textContent`,
    /// form values, attribute values), never as markup.
    static let script = #"""
'use strict';

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = 'panorama.studio.v1';
const COLOURS = ['#ff6b6b', '#4fc3f7', '#ffd54f', '#81c784', '#ba68c8', '#ff8a65', '#4db6ac', '#f06292'];
const SNAP = 8;
const FINAL_STATES = new Set(['done', 'failed', 'cancelled', 'interrupted']);
/** Form controls kept in localStorage, by id. */
const SAVED_FIELDS = ['prompt', 'negative-prompt', 'width', 'height', 'steps', 'cfg', 'seed', 'n-iter', 'sampler',
  'scheduler', 'circular', 'denoising', 'mask-blur', 'brush-size', 'window-weights', 'few-step', 'bootstrap-steps', 'spot',
  'outpaint-place', 'outpaint-overlap'];

const state = {
  config: null,
  mode: 'txt2img',
  tool: 'regions',
  size: { w: 2048, h: 512 },
  regions: [],
  selected: null,
  nextRegionId: 1,
  initImage: null,
  lastSeed: null,
  myJobs: new Set(),
  handledJobs: new Set(),
  jobs: [],
  gallery: { items: [], total: 0 },
  canvasSource: null,
  previews: 0,
  detail: null,
  finishedSignature: '',
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, messages) {
    super(messages.join('\n'));
    this.status = status;
    this.messages = messages;
  }
}

/** The messages of an error body: FastAPI's `detail` string or list of field problems. */
function errorMessages(data, response, what) {
  const detail = data && data.detail;
  if (Array.isArray(detail)) {
    return detail.map((problem) => {
      const where = Array.isArray(problem.loc) ? problem.loc.filter((part) => part !== 'body').join('.') : '';
      return where ? `${where}: ${problem.msg}` : String(problem.msg);
    });
  }
  if (typeof detail === 'string' && detail) return [detail];
  if (response.status === 429) return ['The queue is full: wait for a job to finish.'];
  return [`${what} answered ${response.status} ${response.statusText}`.trim()];
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) throw new ApiError(response.status, errorMessages(data, response, `${method} ${path.split('?')[0]}`));
  return data;
}

const galleryURL = (id) => `/panorama/v1/gallery/${encodeURIComponent(id)}`;
const stripDataURL = (url) => url.slice(url.indexOf(',') + 1);

// ---------------------------------------------------------------- small helpers

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const snap = (v) => Math.round(v / SNAP) * SNAP;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const intOf = (id, fallback) => { const v = parseInt($(id).value, 10); return Number.isFinite(v) ? v : fallback; };
const numberOf = (id, fallback) => { const v = parseFloat($(id).value); return Number.isFinite(v) ? v : fallback; };

function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), rest = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

/** Sets a control's value as if typed, so its listeners (token counts, saving) run. */
function setValue(id, value) {
  const node = $(id);
  if (node.type === 'checkbox') node.checked = Boolean(value);
  else node.value = value;
  node.dispatchEvent(new Event('input', { bubbles: true }));
  node.dispatchEvent(new Event('change', { bubbles: true }));
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error('the picture could not be read'));
    image.src = src;
  });
}

function showErrors(messages) {
  const list = $('errors');
  list.replaceChildren(...messages.map((message) => el('li', { text: message })));
}

function setStatus(id, text, kind = '') {
  const node = $(id);
  node.textContent = text;
  node.className = `status ${kind}`;
}

// ---------------------------------------------------------------- persistence

let saveTimer = null;
function saveSoon() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(save, 250);
}

function save() {
  const fields = {};
  for (const id of SAVED_FIELDS) fields[id] = $(id).type === 'checkbox' ? $(id).checked : $(id).value;
  const regions = state.regions.map(({ id, ...region }) => region);
  // jobs still to finish, so a reload goes on showing their previews and results
  const pending = [...state.myJobs].filter((id) => !state.handledJobs.has(id));
  const saved = { fields, mode: state.mode, regions, size: state.size, lastSeed: state.lastSeed, pending };
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
  } catch {
    // uploaded masks can outgrow the storage quota: keep everything else
    saved.regions = regions.filter((region) => !region.mask);
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify(saved)); } catch { /* storage unavailable */ }
  }
}

function restore() {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || 'null'); } catch { saved = null; }
  if (!saved) return false;
  for (const [id, value] of Object.entries(saved.fields || {})) {
    const node = $(id);
    if (!node || !SAVED_FIELDS.includes(id)) continue;
    if (node.type === 'checkbox') node.checked = Boolean(value);
    else if (node.tagName !== 'SELECT' || [...node.options].some((o) => o.value === value)) node.value = value;
  }
  if (saved.size) state.size = { w: saved.size.w, h: saved.size.h };
  state.lastSeed = saved.lastSeed ?? null;
  for (const id of saved.pending || []) state.myJobs.add(id);
  state.regions = [];
  for (const region of saved.regions || []) addRegion(region, false);
  setMode(saved.mode || 'txt2img');
  return true;
}

// ---------------------------------------------------------------- configuration and pickers

async function loadConfig() {
  const config = await api('GET', '/panorama/v1/config');
  applyConfig(config);
  return config;
}

function fillSelect(select, entries, keep) {
  const previous = keep ? select.value : null;
  select.replaceChildren(...entries.map(([value, label]) => el('option', { value, text: label })));
  if (previous && entries.some(([value]) => value === previous)) select.value = previous;
}

function applyConfig(config) {
  state.config = config;
  const models = config.models || [];
  fillSelect($('model'), models.map((m) => [m.title, m.title]), false);
  const current = models.find((m) => m.title === config.model || m.model_name === config.model);
  if (current) $('model').value = current.title;
  fillSelect($('sampler'), (config.samplers || []).map((s) => [s, s]), true);
  fillSelect($('scheduler'), (config.schedulers || []).map((s) => [s.name, s.label]), true);
  fillSelect($('lora-picker'), [['', '+ LoRA…'], ...(config.loras || []).map((n) => [n, n])], false);
  fillSelect($('embedding-picker'), [['', '+ Embedding…'], ...(config.embeddings || []).map((n) => [n, n])], false);
  $('lora-picker').disabled = !(config.loras || []).length;
  $('embedding-picker').disabled = !(config.embeddings || []).length;
  setStatus('model-status', config.inpainting ? 'inpainting model' : '');
  updateSizeInfo();
}

async function switchModel() {
  const select = $('model');
  const title = select.value;
  select.disabled = true;
  $('generate').disabled = true;
  setStatus('model-status', 'loading…', 'busy');
  try {
    await api('POST', '/sdapi/v1/options', { sd_model_checkpoint: title });
    await loadConfig();
    setStatus('model-status', 'ready');
  } catch (error) {
    setStatus('model-status', error.message, 'bad');
    if (state.config) applyConfig(state.config);
  } finally {
    select.disabled = false;
    $('generate').disabled = false;
  }
}

/** Inserts `text` at the prompt's cursor, with a comma before it when needed. */
function insertIntoPrompt(text) {
  const prompt = $('prompt');
  const start = prompt.selectionStart ?? prompt.value.length;
  const end = prompt.selectionEnd ?? start;
  const before = prompt.value.slice(0, start);
  const separator = before && !/[\s,]$/.test(before) ? ', ' : '';
  prompt.value = before + separator + text + prompt.value.slice(end);
  const caret = (before + separator + text).length;
  prompt.focus();
  prompt.setSelectionRange(caret, caret);
  prompt.dispatchEvent(new Event('input', { bubbles: true }));
}

/** "12/75" beside a prompt box, from the server's tokenizer, 300 ms after typing stops. */
function tokenCounter(textarea, label) {
  let timer = null;
  let sequence = 0;
  const update = async () => {
    const mine = ++sequence;
    try {
      const count = await api('POST', '/panorama/v1/tokens', { prompt: textarea.value });
      if (mine !== sequence) return;
      label.textContent = `${count.tokens}/${count.limit}`;
      label.classList.toggle('over', count.chunks > 1);
      label.title = `${count.tokens} tokens in ${count.chunks} chunk${count.chunks === 1 ? '' : 's'} of 75`;
    } catch {
      if (mine === sequence) label.textContent = '–';
    }
  };
  textarea.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(update, 300); });
  update();
}

// ---------------------------------------------------------------- size

function windowSize() { return (state.config && state.config.window) || 512; }

/** Problems with the requested size against the model's window and the server's limits. */
function sizeProblems(w, h) {
  const problems = [];
  const window = windowSize();
  const limits = (state.config && state.config.limits) || {};
  if (w < window || h < window) problems.push(`Width and height must be at least the model's window, ${window} px.`);
  if (limits.max_side && (w > limits.max_side || h > limits.max_side)) problems.push(`A side may be at most ${limits.max_side} px.`);
  if (limits.max_pixels && w * h > limits.max_pixels) problems.push(`${(w * h / 1e6).toFixed(1)} MP is more than this server's ${(limits.max_pixels / 1e6).toFixed(0)} MP.`);
  return problems;
}

function updateSizeInfo() {
  const { w, h } = state.size;
  const problems = sizeProblems(w, h);
  const info = $('size-info');
  info.textContent = problems.length ? problems[0] : `${(w * h / 1e6).toFixed(2)} MP · ${(w / windowSize()).toFixed(w % windowSize() ? 1 : 0)} windows wide`;
  info.classList.toggle('status', problems.length > 0);
  info.classList.toggle('bad', problems.length > 0);
  $('canvas-size').textContent = `${w} × ${h}${$('circular').checked ? ' · 360°' : ''}`;
  $('canvas-frame').classList.toggle('circular', $('circular').checked);
  const window = windowSize();
  const presets = { '1:1': [window, window, false], '4:1': [4 * window, window, false], '8:1': [8 * window, window, false], '360': [4 * window, window, true] };
  for (const button of document.querySelectorAll('#presets button')) {
    const [pw, ph, circular] = presets[button.dataset.preset];
    button.setAttribute('aria-pressed', String(pw === w && ph === h && circular === $('circular').checked));
  }
}

/** Applies width and height from the inputs (multiples of 8), scaling regions and the mask. */
function applySize() {
  // a field being retyped: wait for its number
  if ($('width').value.trim() === '' || $('height').value.trim() === '') return;
  const limits = (state.config && state.config.limits) || {};
  const maxSide = limits.max_side || 16384;
  const w = clamp(snap(intOf('width', state.size.w)), SNAP, maxSide);
  const h = clamp(snap(intOf('height', state.size.h)), SNAP, maxSide);
  $('width').value = w;
  $('height').value = h;
  if (w !== state.size.w || h !== state.size.h) {
    const sx = w / state.size.w, sy = h / state.size.h;
    for (const region of state.regions) {
      region.x = snap(region.x * sx); region.w = Math.max(SNAP * 2, snap(region.w * sx));
      region.y = snap(region.y * sy); region.h = Math.max(SNAP * 2, snap(region.h * sy));
    }
    resizeMask(w, h);
    state.size = { w, h };
  }
  layoutCanvas();
  renderRegions();
  updateSizeInfo();
  if (state.mode === 'outpaint') showSourceOrNothing();
  saveSoon();
}

function applyPreset(preset) {
  const window = windowSize();
  const sizes = { '1:1': [window, window], '4:1': [4 * window, window], '8:1': [8 * window, window], '360': [4 * window, window] };
  const [w, h] = sizes[preset];
  $('width').value = w;
  $('height').value = h;
  $('circular').checked = preset === '360';
  applySize();
}

/** Fits the canvas frame in its area with the picture's aspect. */
function layoutCanvas() {
  const area = $('canvas-area');
  const style = getComputedStyle(area);
  const availableWidth = area.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const availableHeight = Math.max(160, window.innerHeight * 0.46);
  const scale = Math.min(availableWidth / state.size.w, availableHeight / state.size.h);
  const frame = $('canvas-frame');
  frame.style.width = `${Math.floor(state.size.w * scale)}px`;
  frame.style.height = `${Math.floor(state.size.h * scale)}px`;
  updateBrushCursor();
}

// ---------------------------------------------------------------- canvas picture

/** Shows a picture behind the regions: the source, a live preview or a result. */
function showCanvasImage(src, kind) {
  const image = $('canvas-image');
  state.canvasSource = kind;
  if (!src) {
    image.hidden = true;
    image.removeAttribute('src');
    $('canvas-frame').classList.remove('has-picture');
    return;
  }
  if (image.getAttribute('src') !== src) image.src = src;
  image.hidden = false;
  $('canvas-frame').classList.add('has-picture');
  image.dataset.kind = kind;
}

function showSourceOrNothing() {
  renderOutpaintBox();
  if (state.mode === 'outpaint' && state.initImage) showCanvasImage(outpaintPicture().toDataURL('image/png'), 'source');
  else if (state.mode !== 'txt2img' && state.initImage) showCanvasImage(state.initImage.src, 'source');
  else if (state.canvasSource === 'source') showCanvasImage(null, null);
}

// ---------------------------------------------------------------- modes and source picture

function setMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll('#mode-tabs button')) tab.setAttribute('aria-selected', String(tab.dataset.mode === mode));
  $('image-group').hidden = mode === 'txt2img';
  $('mask-tools').hidden = mode !== 'inpaint' && mode !== 'outpaint';
  $('outpaint-tools').hidden = mode !== 'outpaint';
  for (const id of ['brush-size-label', 'mask-erase', 'mask-clear']) $(id).hidden = mode !== 'inpaint';
  $('mask-tools').querySelector('.hint').hidden = mode !== 'inpaint';
  $('tool-mask').hidden = mode !== 'inpaint';
  $('mask-canvas').hidden = mode !== 'inpaint';
  // the server takes regions with txt2img only: other modes keep them, hidden, for later
  const regionsOn = mode === 'txt2img';
  $('regions-panel').hidden = !regionsOn;
  $('regions-off').hidden = regionsOn || !state.regions.length;
  $('tool-regions').hidden = !regionsOn;
  $('canvas-frame').classList.toggle('regions-off', !regionsOn);
  setTool(mode === 'inpaint' ? 'mask' : regionsOn ? 'regions' : 'none');
  showSourceOrNothing();
  saveSoon();
}

function setTool(tool) {
  state.tool = tool;
  $('tool-regions').setAttribute('aria-pressed', String(tool === 'regions'));
  $('tool-mask').setAttribute('aria-pressed', String(tool === 'mask'));
  $('region-layer').classList.toggle('painting', tool === 'mask');
  $('region-layer').classList.toggle('inert', tool === 'none');
  if (tool !== 'regions') selectRegion(null);
  updateBrushCursor();
}

async function setInitImage(src, name) {
  const image = await loadImage(src);
  state.initImage = { src, name, image, width: image.naturalWidth, height: image.naturalHeight };
  $('init-info').textContent = `${name}: ${image.naturalWidth} × ${image.naturalHeight}`;
  if (state.mode === 'txt2img') setMode('img2img');
  else showSourceOrNothing();
}

async function chooseInitImage(file) {
  try {
    await setInitImage(await readFile(file), file.name);
  } catch (error) {
    showErrors([`${file.name}: ${error.message}`]);
  }
}

function clearInitImage() {
  state.initImage = null;
  $('init-info').textContent = 'No picture yet: choose one or drop it on the canvas.';
  $('init-image').value = '';
  showSourceOrNothing();
}

/** The picture's size in multiples of 8, scaled up when a side is below the model's window. */
function matchInitSize() {
  if (!state.initImage) return;
  const { width, height } = state.initImage;
  const scale = Math.max(1, windowSize() / Math.min(width, height));
  $('width').value = Math.max(windowSize(), snap(width * scale));
  $('height').value = Math.max(windowSize(), snap(height * scale));
  $('circular').checked = false;
  applySize();
}

// ---------------------------------------------------------------- mask brush

const maskCanvas = () => $('mask-canvas');

/** An off-screen canvas of w x h pixels. */
function blankCanvas(w, h) {
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  return canvas;
}

function resizeMask(w, h) {
  const canvas = maskCanvas();
  const copy = blankCanvas(canvas.width, canvas.height);
  copy.getContext('2d').drawImage(canvas, 0, 0);
  canvas.width = w;
  canvas.height = h;
  canvas.getContext('2d').drawImage(copy, 0, 0, w, h);
}

function paintStroke(from, to) {
  const context = maskCanvas().getContext('2d');
  context.globalCompositeOperation = $('mask-erase').getAttribute('aria-pressed') === 'true' ? 'destination-out' : 'source-over';
  context.strokeStyle = '#ff4040';
  context.lineCap = 'round';
  context.lineJoin = 'round';
  context.lineWidth = intOf('brush-size', 48);
  context.beginPath();
  context.moveTo(from.x, from.y);
  context.lineTo(to.x + 0.01, to.y);
  context.stroke();
}

/** The mask as a black-and-white PNG (white: repaint), or null when nothing is painted. */
function maskPNG() {
  const canvas = maskCanvas();
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let painted = 0;
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const on = data[i + 3] > 0 ? 255 : 0;
    painted += on ? 1 : 0;
    data[i] = data[i + 1] = data[i + 2] = on;
    data[i + 3] = 255;
  }
  if (!painted) return null;
  const out = blankCanvas(canvas.width, canvas.height);
  out.getContext('2d').putImageData(pixels, 0, 0);
  return out.toDataURL('image/png');
}

function clearMask() {
  const canvas = maskCanvas();
  canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height);
}

let brushCursor = null;
function updateBrushCursor(point) {
  if (state.tool !== 'mask') { if (brushCursor) brushCursor.hidden = true; return; }
  if (!brushCursor) {
    brushCursor = el('div', { className: 'brush-cursor', hidden: true });
    $('canvas-frame').append(brushCursor);
  }
  const scale = $('canvas-frame').clientWidth / state.size.w;
  const size = intOf('brush-size', 48) * scale;
  brushCursor.style.width = brushCursor.style.height = `${size}px`;
  if (point) {
    brushCursor.style.left = `${point.x * scale}px`;
    brushCursor.style.top = `${point.y * scale}px`;
    brushCursor.hidden = false;
  }
}

// ---------------------------------------------------------------- outpaint

/** Where the source picture sits on the canvas: its natural size, shrunk to fit when larger. */
function outpaintPlacement() {
  const { w: W, h: H } = state.size;
  const image = state.initImage;
  const fit = Math.min(1, W / image.width, H / image.height);
  const w = Math.round(image.width * fit), h = Math.round(image.height * fit);
  const place = $('outpaint-place').value;
  const x = place === 'left' ? 0 : place === 'right' ? W - w : Math.round((W - w) / 2);
  const y = place === 'top' ? 0 : place === 'bottom' ? H - h : Math.round((H - h) / 2);
  return { x, y, w, h };
}

/** The picture to start from: the source in place over a blurred stretch of itself, so the new
 *  area starts from the picture's colours rather than from grey. */
function outpaintPicture() {
  const { w: W, h: H } = state.size;
  const canvas = blankCanvas(W, H);
  const context = canvas.getContext('2d');
  const { image } = state.initImage;
  context.filter = 'blur(24px)';
  // drawn beyond the edges so the blur does not darken them
  context.drawImage(image, -48, -48, W + 96, H + 96);
  context.filter = 'none';
  const p = outpaintPlacement();
  context.drawImage(image, p.x, p.y, p.w, p.h);
  return canvas;
}

/** White (repaint) everywhere but the picture, which the overlap eats into on its inner sides. */
function outpaintMask() {
  const { w: W, h: H } = state.size;
  const canvas = blankCanvas(W, H);
  const context = canvas.getContext('2d');
  context.fillStyle = '#fff';
  context.fillRect(0, 0, W, H);
  const p = outpaintPlacement();
  const overlap = intOf('outpaint-overlap', 32);
  const left = p.x > 0 ? overlap : 0, right = p.x + p.w < W ? overlap : 0;
  const top = p.y > 0 ? overlap : 0, bottom = p.y + p.h < H ? overlap : 0;
  context.fillStyle = '#000';
  context.fillRect(p.x + left, p.y + top, Math.max(0, p.w - left - right), Math.max(0, p.h - top - bottom));
  return canvas;
}

function renderOutpaintBox() {
  let box = document.querySelector('.outpaint-box');
  if (state.mode !== 'outpaint' || !state.initImage) { if (box) box.remove(); return; }
  if (!box) {
    box = el('div', { className: 'outpaint-box', title: 'The picture; the rest is painted' });
    $('canvas-frame').append(box);
  }
  const p = outpaintPlacement();
  positionRegion(p, box);
}

// ---------------------------------------------------------------- regions

/** Adds a region: `rect` in canvas pixels (or a `mask`), with its prompts. */
function addRegion(spec, select = true) {
  const id = state.nextRegionId++;
  const [x, y, w, h] = spec.rect || [spec.x ?? 0, spec.y ?? 0, spec.w ?? state.size.w, spec.h ?? state.size.h];
  const region = {
    id,
    x: snap(x), y: snap(y), w: Math.max(SNAP * 2, snap(w)), h: Math.max(SNAP * 2, snap(h)),
    prompt: spec.prompt || '', negative: spec.negative ?? spec.negative_prompt ?? '',
    weight: spec.weight ?? 1, feather: spec.feather ?? '', guidance: spec.guidance ?? '', mask: spec.mask || null,
  };
  if (region.mask && !region.mask.startsWith('data:')) region.mask = `data:image/png;base64,${region.mask}`;
  state.regions.push(region);
  if (select) state.selected = id;
  renderRegions();
  saveSoon();
  return region;
}

/** Colours follow the list order, as the labels "Region 1", "Region 2"… do. */
const regionColour = (index) => COLOURS[index % COLOURS.length];

function regionById(id) { return state.regions.find((r) => r.id === id) || null; }

function deleteRegion(id) {
  state.regions = state.regions.filter((r) => r.id !== id);
  if (state.selected === id) state.selected = null;
  renderRegions();
  saveSoon();
}

function selectRegion(id) {
  if (state.selected === id) return;
  state.selected = id;
  for (const node of document.querySelectorAll('.region, .region-item')) {
    node.classList.toggle('selected', Number(node.dataset.region) === id);
  }
  $('region-delete').disabled = id === null;
}

function positionRegion(region, node) {
  const { w, h } = state.size;
  node.style.left = `${region.x / w * 100}%`;
  node.style.top = `${region.y / h * 100}%`;
  node.style.width = `${region.w / w * 100}%`;
  node.style.height = `${region.h / h * 100}%`;
}

/** Redraws the regions on the canvas and their list. */
function renderRegions() {
  const layer = $('region-layer');
  const shapes = [];
  const items = [];
  state.regions.forEach((region, index) => {
    const label = `${index + 1}${region.prompt ? ` · ${region.prompt}` : ''}`;
    if (region.mask) {
      const overlay = el('img', { className: 'region-mask', src: region.mask, alt: '', draggable: false });
      shapes.push(overlay);
    } else {
      const shape = el('div', { className: 'region', dataset: { region: region.id, testid: `region-${index}` } },
        [el('span', { className: 'tag', text: label }),
         ...['nw', 'ne', 'sw', 'se'].map((corner) => el('div', { className: 'handle', dataset: { corner } }))]);
      shape.style.setProperty('--c', regionColour(index));
      positionRegion(region, shape);
      shape.classList.toggle('selected', region.id === state.selected);
      shapes.push(shape);
    }
    items.push(regionItem(region, index));
  });
  layer.replaceChildren(...shapes);
  $('region-list').replaceChildren(...items);
  $('region-delete').disabled = state.selected === null;
}

function regionItem(region, index) {
  const item = el('li', { className: 'region-item', dataset: { region: region.id, testid: `region-item-${index}` } });
  item.style.setProperty('--c', regionColour(index));
  item.classList.toggle('selected', region.id === state.selected);
  const where = region.mask ? 'mask' : `${region.x}, ${region.y} · ${region.w} × ${region.h}`;
  const tokens = el('span', { className: 'tokens', text: '' });
  const prompt = el('textarea', {
    rows: 2, value: region.prompt, placeholder: 'what this region shows', spellcheck: false,
    dataset: { testid: `region-prompt-${index}` },
    oninput: () => { region.prompt = prompt.value; updateRegionTag(region, index); saveSoon(); },
  });
  const negative = el('input', {
    type: 'text', value: region.negative, placeholder: 'negative prompt (optional)',
    oninput: () => { region.negative = negative.value; saveSoon(); },
  });
  const weight = el('input', {
    type: 'number', value: region.weight, min: 0, max: 10, step: 0.1, title: 'How strongly this region\'s prompt counts where regions overlap',
    oninput: () => { region.weight = parseFloat(weight.value); saveSoon(); },
  });
  const guidance = el('input', {
    type: 'number', value: region.guidance, min: 0, max: 30, step: 0.5, placeholder: 'same', title: 'This region\'s own CFG scale (empty: the main one)',
    oninput: () => { region.guidance = guidance.value; saveSoon(); },
  });
  const feather = el('input', {
    type: 'number', value: region.feather, min: 0, step: 8, placeholder: 'auto', title: 'Soft edge width in pixels',
    oninput: () => { region.feather = feather.value; saveSoon(); },
  });
  const maskInput = el('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp', onchange: () => useRegionMask(region, maskInput.files[0]) });
  item.append(
    el('div', { className: 'head' }, [
      el('strong', { text: `Region ${index + 1}` }), el('span', { text: where }), el('span', { className: 'spacer' }), tokens,
      el('button', { type: 'button', text: '✕', title: 'Delete this region', onclick: () => deleteRegion(region.id) }),
    ]),
    prompt, negative,
    el('div', { className: 'opts' }, [
      el('label', { text: 'Weight ' }, [weight]), el('label', { text: 'CFG ' }, [guidance]), el('label', { text: 'Feather ' }, [feather]),
      el('span', { className: 'spacer' }),
      region.mask
        ? el('button', { type: 'button', text: 'Use a rectangle', onclick: () => { region.mask = null; renderRegions(); saveSoon(); } })
        : el('label', { className: 'file-button', text: 'Mask…', title: 'Use a mask picture (white = inside) instead of the rectangle' }, [maskInput]),
    ]),
  );
  item.addEventListener('pointerdown', () => selectRegion(region.id));
  tokenCounter(prompt, tokens);
  return item;
}

function updateRegionTag(region, index) {
  const tag = document.querySelector(`.region[data-region="${region.id}"] .tag`);
  if (tag) tag.textContent = `${index + 1}${region.prompt ? ` · ${region.prompt}` : ''}`;
}

/** A region's mask picture, stretched to the canvas size. */
async function useRegionMask(region, file) {
  if (!file) return;
  try {
    const image = await loadImage(await readFile(file));
    const canvas = blankCanvas(state.size.w, state.size.h);
    canvas.getContext('2d').drawImage(image, 0, 0, canvas.width, canvas.height);
    region.mask = canvas.toDataURL('image/png');
    renderRegions();
    saveSoon();
  } catch (error) {
    showErrors([`${file.name}: ${error.message}`]);
  }
}

// ---------------------------------------------------------------- canvas pointer: draw, move, resize, paint

let drag = null;

function canvasPoint(event) {
  const box = $('region-layer').getBoundingClientRect();
  return {
    x: clamp((event.clientX - box.left) / box.width * state.size.w, 0, state.size.w),
    y: clamp((event.clientY - box.top) / box.height * state.size.h, 0, state.size.h),
    screenX: event.clientX, screenY: event.clientY,
  };
}

function onPointerDown(event) {
  if (event.button !== 0) return;
  const point = canvasPoint(event);
  // leave any text field, so Delete then removes the selected region
  if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
  $('region-layer').setPointerCapture(event.pointerId);
  event.preventDefault();
  if (state.tool === 'none') return;
  if (state.tool === 'mask') {
    drag = { kind: 'paint', last: point };
    paintStroke(point, point);
    return;
  }
  const handle = event.target.closest('.handle');
  const shape = event.target.closest('.region');
  if (shape) {
    const region = regionById(Number(shape.dataset.region));
    selectRegion(region.id);
    drag = { kind: handle ? 'resize' : 'move', corner: handle && handle.dataset.corner, region, start: point, original: { ...region } };
  } else {
    selectRegion(null);
    drag = { kind: 'draw', start: point, region: null };
  }
}

function onPointerMove(event) {
  const point = canvasPoint(event);
  if (state.tool === 'mask') updateBrushCursor(point);
  if (!drag) return;
  const { w: W, h: H } = state.size;
  if (drag.kind === 'paint') {
    paintStroke(drag.last, point);
    drag.last = point;
    return;
  }
  if (drag.kind === 'draw') {
    // a click is not a region: wait for a few pixels of movement
    if (!drag.region && Math.hypot(point.screenX - drag.start.screenX, point.screenY - drag.start.screenY) < 6) return;
    const x0 = snap(Math.min(drag.start.x, point.x)), y0 = snap(Math.min(drag.start.y, point.y));
    const x1 = snap(Math.max(drag.start.x, point.x)), y1 = snap(Math.max(drag.start.y, point.y));
    const rect = [x0, y0, Math.max(SNAP * 2, x1 - x0), Math.max(SNAP * 2, y1 - y0)];
    if (!drag.region) {
      drag.region = addRegion({ rect });
    } else {
      [drag.region.x, drag.region.y, drag.region.w, drag.region.h] = rect;
    }
  } else if (drag.kind === 'move') {
    const o = drag.original;
    drag.region.x = clamp(snap(o.x + point.x - drag.start.x), 0, W - o.w);
    drag.region.y = clamp(snap(o.y + point.y - drag.start.y), 0, H - o.h);
  } else if (drag.kind === 'resize') {
    const o = drag.original;
    let left = o.x, top = o.y, right = o.x + o.w, bottom = o.y + o.h;
    if (drag.corner.includes('w')) left = clamp(snap(point.x), 0, right - SNAP * 2);
    if (drag.corner.includes('e')) right = clamp(snap(point.x), left + SNAP * 2, W);
    if (drag.corner.includes('n')) top = clamp(snap(point.y), 0, bottom - SNAP * 2);
    if (drag.corner.includes('s')) bottom = clamp(snap(point.y), top + SNAP * 2, H);
    Object.assign(drag.region, { x: left, y: top, w: right - left, h: bottom - top });
  }
  if (drag.region) {
    const shape = document.querySelector(`.region[data-region="${drag.region.id}"]`);
    if (shape) positionRegion(drag.region, shape);
  }
}

function onPointerUp() {
  if (!drag) return;
  const moved = drag.region;
  drag = null;
  if (moved) { renderRegions(); saveSoon(); }
}

// ---------------------------------------------------------------- generate

/** The job request from the form, or the problems that stop it. */
function buildRequest() {
  const problems = [];
  const { w, h } = state.size;
  problems.push(...sizeProblems(w, h));
  const body = {
    mode: state.mode === 'txt2img' ? 'txt2img' : 'img2img',
    prompt: $('prompt').value,
    negative_prompt: $('negative-prompt').value,
    steps: intOf('steps', 20),
    cfg_scale: numberOf('cfg', 7),
    width: w,
    height: h,
    seed: intOf('seed', -1),
    sampler_name: $('sampler').value,
    scheduler: $('scheduler').value,
    n_iter: intOf('n-iter', 1),
    batch_size: 1,
    panorama_circular: $('circular').checked,
    panorama_spot: $('spot').checked,
    panorama_window_weights: $('window-weights').value,
    panorama_few_step: $('few-step').value,
  };
  const bootstrap = parseInt($('bootstrap-steps').value, 10);
  if (Number.isFinite(bootstrap)) body.panorama_bootstrap_steps = bootstrap;
  if (state.regions.length && state.mode === 'txt2img') {
    body.panorama_regions = state.regions.map((region, index) => {
      if (!region.prompt.trim()) problems.push(`Region ${index + 1} has no prompt.`);
      const spec = region.mask ? { mask: stripDataURL(region.mask) } : { rect: [region.x, region.y, region.w, region.h] };
      spec.prompt = region.prompt;
      if (region.negative) spec.negative_prompt = region.negative;
      if (Number.isFinite(region.weight) && region.weight !== 1) spec.weight = region.weight;
      const feather = parseInt(region.feather, 10);
      if (Number.isFinite(feather)) spec.feather = feather;
      const guidance = parseFloat(region.guidance);
      if (Number.isFinite(guidance)) spec.guidance = guidance;
      return spec;
    });
  }
  if (state.mode !== 'txt2img') {
    if (!state.initImage) problems.push('Choose a source picture first.');
    else if (state.mode === 'outpaint') body.init_images = [stripDataURL(outpaintPicture().toDataURL('image/png'))];
    else body.init_images = [stripDataURL(state.initImage.src)];
    body.denoising_strength = numberOf('denoising', 0.6);
  }
  if (state.mode === 'outpaint' && state.initImage) {
    const place = outpaintPlacement();
    if (place.w >= w && place.h >= h) problems.push('Make the canvas larger than the picture: there is nothing around it to paint.');
    body.mask = stripDataURL(outpaintMask().toDataURL('image/png'));
    body.mask_blur = intOf('mask-blur', 4);
  }
  if (state.mode === 'inpaint') {
    const mask = maskPNG();
    if (!mask) problems.push('Paint over the part of the picture to repaint.');
    else body.mask = stripDataURL(mask);
    body.mask_blur = intOf('mask-blur', 4);
  }
  return { body, problems };
}

async function generate() {
  showErrors([]);
  const { body, problems } = buildRequest();
  if (problems.length) { showErrors(problems); return; }
  const button = $('generate');
  button.disabled = true;
  try {
    const job = await api('POST', '/panorama/v1/jobs', body);
    state.myJobs.add(job.id);
    setProgress(0, job.position > 1 ? `Queued: position ${job.position}` : 'Starting…', 'running');
    pollSoon(100);
  } catch (error) {
    showErrors(error.messages || [error.message]);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- progress, queue

function setProgress(fraction, text, kind) {
  $('progress-fill').style.width = `${clamp(fraction, 0, 1) * 100}%`;
  $('progress-text').textContent = text;
  $('progress').dataset.state = kind;
}

let pollTimer = null;
function pollSoon(delay) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, delay);
}

async function poll() {
  let busy = false;
  try {
    const list = await api('GET', '/panorama/v1/jobs');
    state.jobs = list.jobs || [];
    setStatus('server-status', '');
    busy = state.jobs.some((job) => !FINAL_STATES.has(job.state));
    const running = state.jobs.find((job) => job.state === 'running');
    if (running) await showRunning(running);
    $('cancel-current').disabled = !running;
    renderQueue();
    await handleFinished();
  } catch (error) {
    setStatus('server-status', `Server: ${error.message}`, 'bad');
  }
  pollSoon(busy ? 700 : 4000);
}

/** The running job's step, ETA and (for this page's own jobs) live preview. */
async function showRunning(job) {
  const mine = state.myJobs.has(job.id);
  const progress = await api('GET', `/sdapi/v1/progress${mine ? '' : '?skip_current_image=true'}`);
  const s = progress.state || {};
  const fraction = progress.progress ?? job.progress ?? 0;
  const parts = [];
  if (s.job_no > 0) parts.push(`image ${s.job_no + 1}`);
  if (s.sampling_steps) parts.push(`step ${s.sampling_step}/${s.sampling_steps}`);
  parts.push(`ETA ${formatDuration(progress.eta_relative ?? job.eta)}`);
  setProgress(fraction, parts.join(' · '), 'running');
  if (mine && progress.current_image) {
    const src = `data:image/png;base64,${progress.current_image}`;
    if ($('canvas-image').getAttribute('src') !== src) {
      showCanvasImage(src, 'preview');
      state.previews += 1;
      $('canvas-image').dataset.previews = String(state.previews);
    }
  }
}

/** Shows the results and errors of this page's jobs once they end. */
async function handleFinished() {
  let refresh = false;
  for (const job of state.jobs) {
    if (!state.myJobs.has(job.id) || !FINAL_STATES.has(job.state) || state.handledJobs.has(job.id)) continue;
    state.handledJobs.add(job.id);
    refresh = true;
    if (job.state === 'done') {
      const images = job.images || [];
      if (images.length) {
        const last = images[images.length - 1];
        showCanvasImage(galleryURL(last), 'result');
        const seed = /-(\d+)\.png$/.exec(last);
        if (seed) state.lastSeed = Number(seed[1]);
      }
      setProgress(1, `Done: ${images.length} picture${images.length === 1 ? '' : 's'}`, 'done');
    } else {
      setProgress(job.progress || 0, job.state === 'failed' ? 'Failed' : `${job.state[0].toUpperCase()}${job.state.slice(1)}`, 'failed');
      if (job.error) showErrors([job.error]);
      if (state.canvasSource === 'preview') showSourceOrNothing();
    }
  }
  // a job the server no longer lists (it restarted, or the job aged out) will not finish here
  for (const id of state.myJobs) if (!state.jobs.some((job) => job.id === id)) state.handledJobs.add(id);
  const anyRunning = state.jobs.some((job) => job.state === 'running');
  if (!anyRunning && $('progress').dataset.state === 'running' && ![...state.myJobs].some((id) => !state.handledJobs.has(id))) {
    setProgress(0, 'Idle', 'idle');
  }
  // any job finishing (this page's or another client's) adds pictures to the gallery
  const finished = state.jobs.filter((job) => job.state === 'done').map((job) => job.id).join(',');
  if (finished !== state.finishedSignature) {
    refresh = refresh || state.finishedSignature !== '';
    state.finishedSignature = finished;
  }
  if (refresh) { saveSoon(); await loadGallery(true); }
}

const jobNodes = new Map();
/** Keeps one element per job and updates it in place, so a Cancel button is never replaced
 *  under the pointer while its job's progress moves. */
function renderQueue() {
  const shown = state.jobs.slice(0, 20);
  const nodes = shown.map((job) => {
    let entry = jobNodes.get(job.id);
    if (!entry) {
      entry = jobItem(job);
      jobNodes.set(job.id, entry);
    }
    updateJobItem(entry, job);
    return entry.node;
  });
  for (const id of [...jobNodes.keys()]) if (!shown.some((job) => job.id === id)) jobNodes.delete(id);
  const list = $('queue-list');
  if (nodes.length !== list.children.length || nodes.some((node, i) => list.children[i] !== node)) list.replaceChildren(...nodes);
  $('queue-empty').hidden = shown.length > 0;
}

/** A job's element and the parts that change. */
function jobItem(job) {
  // a model switch goes through the queue too, as a job without a picture
  const loading = job.mode === 'load-model';
  const parts = {
    state: el('span', { className: 'state' }),
    meta: el('span', { text: loading ? ' · model switch' : ` · ${job.width} × ${job.height} · ${job.steps} steps · ${job.mode}` }),
    cancel: el('button', { type: 'button', className: 'danger', text: 'Cancel', dataset: { testid: `cancel-${job.id}` }, onclick: () => cancelJob(job.id) }),
    time: el('span', { className: 'meta', text: job.submitted ? new Date(job.submitted * 1000).toLocaleTimeString() : '' }),
    fill: el('div'),
    error: el('span', { className: 'error' }),
    thumbs: el('div', { className: 'thumbs' }),
  };
  parts.bar = el('div', { className: 'bar' }, [parts.fill]);
  const node = el('li', { className: `job${state.myJobs.has(job.id) ? ' mine' : ''}`, dataset: { job: job.id, testid: `job-${job.id}` } }, [
    el('span', { className: 'prompt', text: loading ? `Loading ${job.prompt || 'a model'}` : job.prompt || '(no prompt)', title: job.prompt || '' }),
    el('span', { className: 'meta' }, [parts.state, parts.meta]),
    parts.cancel, parts.time, parts.bar, parts.error, parts.thumbs,
  ]);
  return { node, parts, images: '' };
}

function updateJobItem(entry, job) {
  const { node, parts } = entry;
  node.dataset.state = job.state;
  let stateText = job.state;
  if (job.state === 'queued' && job.position) stateText = `queued #${job.position}`;
  if (job.state === 'running') stateText = `running ${Math.round((job.progress || 0) * 100)} %${job.eta > 0 ? ` · ETA ${formatDuration(job.eta)}` : ''}`;
  parts.state.textContent = stateText;
  const live = !FINAL_STATES.has(job.state);
  parts.cancel.hidden = !live;
  parts.time.hidden = live;
  parts.bar.hidden = job.state !== 'running';
  parts.fill.style.width = `${(job.progress || 0) * 100}%`;
  parts.error.textContent = job.error || '';
  parts.error.hidden = !job.error;
  const images = (job.images || []).join('/');
  if (images !== entry.images) {
    entry.images = images;
    parts.thumbs.replaceChildren(...(job.images || []).slice(0, 8).map((id) =>
      el('img', { src: galleryURL(id), alt: id, title: id, loading: 'lazy', onclick: () => openGalleryItem(id) })));
  }
  parts.thumbs.hidden = !images;
}

async function cancelJob(id) {
  try {
    await api('DELETE', `/panorama/v1/jobs/${encodeURIComponent(id)}`);
  } catch (error) {
    showErrors(error.messages || [error.message]);
  }
  pollSoon(50);
}

// ---------------------------------------------------------------- gallery and PNG info

async function loadGallery(reset) {
  const offset = reset ? 0 : state.gallery.items.length;
  try {
    const page = await api('GET', `/panorama/v1/gallery?offset=${offset}&limit=60`);
    const items = page.items || [];
    state.gallery.items = reset ? items : state.gallery.items.concat(items);
    state.gallery.total = page.total ?? state.gallery.items.length;
    renderGallery();
  } catch (error) {
    $('gallery-count').textContent = `(${error.message})`;
  }
}

const galleryNodes = new Map();
function renderGallery() {
  const nodes = state.gallery.items.map((item) => {
    let node = galleryNodes.get(item.id);
    if (!node) {
      const prompt = (item.parameters && item.parameters.Prompt) || '';
      node = el('button', { type: 'button', className: 'gallery-item', title: `${item.width} × ${item.height}\n${prompt}`, dataset: { id: item.id, testid: 'gallery-item' }, onclick: () => openGalleryItem(item.id) },
        [el('img', { src: galleryURL(item.id), alt: prompt, loading: 'lazy', draggable: false })]);
      galleryNodes.set(item.id, node);
    }
    return node;
  });
  $('gallery-grid').replaceChildren(...nodes);
  $('gallery-count').textContent = state.gallery.total ? `${state.gallery.total} picture${state.gallery.total === 1 ? '' : 's'}` : '';
  $('gallery-more').hidden = state.gallery.items.length >= state.gallery.total;
}

async function openGalleryItem(id) {
  let item = state.gallery.items.find((i) => i.id === id);
  if (!item) {
    await loadGallery(true);
    item = state.gallery.items.find((i) => i.id === id);
  }
  if (!item) { showErrors([`${id} is not in the gallery.`]); return; }
  openDetail({ title: item.id, src: galleryURL(item.id), info: item.info || '', parameters: item.parameters || {}, regions: item.regions || null, download: item.id });
}

function openDetail(detail) {
  state.detail = detail;
  $('detail-title').textContent = detail.title;
  $('detail-image').src = detail.src;
  $('detail-info').textContent = detail.info || 'This picture holds no parameters.';
  $('detail-use').disabled = !detail.info;
  $('detail-download').href = detail.src;
  $('detail-download').download = detail.download;
  const dialog = $('detail-dialog');
  if (!dialog.open) dialog.showModal();
}

async function readPNGInfo(file) {
  try {
    const src = await readFile(file);
    const result = await api('POST', '/sdapi/v1/png-info', { image: stripDataURL(src) });
    openDetail({ title: file.name, src, info: result.info || '', parameters: result.parameters || {}, regions: storedRegions(result), download: file.name });
  } catch (error) {
    showErrors([`${file.name}: ${error.message}`]);
  }
}

/** The rectangle regions of a picture's "regions" text chunk (as `panorama compose` and the
 *  server write it), in pixels; rectangles given as fractions are scaled to the picture's size. */
function storedRegions(result) {
  let regions;
  try { regions = JSON.parse((result.items || {}).regions || 'null'); } catch { return null; }
  if (!Array.isArray(regions)) return null;
  // a dropped file's mask regions name files beside it, which the page cannot read
  return regions.filter((r) => Array.isArray(r.rect));
}

/** Regions as stored with a picture, ready for the editor: rectangles given as fractions scaled
 *  to the picture's size, masks named as gallery files (`NAME-regionK.png`) read as data URLs. */
async function loadStoredRegions(regions, w, h) {
  const ready = [];
  for (const region of regions) {
    if (Array.isArray(region.rect) && region.rect.length === 4) {
      const r = region.rect;
      const rect = r.every((v) => v <= 1) && w && h ? [r[0] * w, r[1] * h, r[2] * w, r[3] * h] : r;
      ready.push({ ...region, rect });
    } else if (typeof region.mask === 'string') {
      let mask = region.mask;
      if (/^\d+-\d+-region\d+\.png$/.test(mask)) {
        const response = await fetch(galleryURL(mask));
        if (!response.ok) continue;
        mask = await readFile(await response.blob());
      }
      ready.push({ ...region, mask });
    }
  }
  return ready;
}

/** Fills the form from A1111's parsed parameters (and the regions stored with a picture). */
async function useParameters(p, regions) {
  const has = (key) => p[key] !== undefined && p[key] !== null && p[key] !== '';
  setValue('prompt', p.Prompt ?? '');
  setValue('negative-prompt', p['Negative prompt'] ?? '');
  if (has('Steps')) setValue('steps', parseInt(p.Steps, 10));
  if (has('CFG scale')) setValue('cfg', parseFloat(p['CFG scale']));
  if (has('Seed')) setValue('seed', parseInt(p.Seed, 10));
  if (has('Sampler')) {
    const karras = p.Sampler === 'DPM++ 2M Karras';
    const sampler = karras ? 'DPM++ 2M' : p.Sampler;
    if ([...$('sampler').options].some((o) => o.value === sampler)) setValue('sampler', sampler);
    if (karras) setValue('scheduler', 'karras');
  }
  if (has('Schedule type')) {
    const wanted = String(p['Schedule type']).toLowerCase();
    const match = ((state.config && state.config.schedulers) || []).find((s) => s.label.toLowerCase() === wanted || s.name === wanted);
    if (match) setValue('scheduler', match.name);
  }
  if (has('Denoising strength')) setValue('denoising', parseFloat(p['Denoising strength']));
  setValue('circular', String(p.Circular).toLowerCase() === 'true');
  setValue('spot', String(p.SpotDiffusion).toLowerCase() === 'true');
  if (has('Window weights')) setValue('window-weights', String(p['Window weights']).startsWith('gaussian') ? 'gaussian' : 'uniform');
  let w = parseInt(p['Size-1'], 10), h = parseInt(p['Size-2'], 10);
  if (!(w && h) && has('Size')) [w, h] = String(p.Size).split('x').map((v) => parseInt(v, 10));
  if (w && h) {
    $('width').value = w;
    $('height').value = h;
    // the stored regions are in the picture's pixels: no scaling from the old size
    state.regions = [];
    state.size = { w: snap(w), h: snap(h) };
    resizeMask(state.size.w, state.size.h);
  }
  if (Array.isArray(regions)) {
    const ready = await loadStoredRegions(regions, state.size.w, state.size.h);
    state.regions = [];
    state.selected = null;
    for (const region of ready) addRegion(region, false);
  }
  applySize();
  renderRegions();
  saveSoon();
}

// ---------------------------------------------------------------- drag and drop of files

function setUpDrop() {
  let depth = 0;
  const hint = $('drop-hint');
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes('Files');
  window.addEventListener('dragenter', (event) => { if (hasFiles(event)) { depth += 1; hint.hidden = false; } });
  window.addEventListener('dragleave', () => { depth = Math.max(0, depth - 1); if (!depth) hint.hidden = true; });
  window.addEventListener('dragover', (event) => { if (hasFiles(event)) event.preventDefault(); });
  window.addEventListener('drop', (event) => {
    depth = 0;
    hint.hidden = true;
    const file = event.dataTransfer?.files?.[0];
    if (!file) return;
    event.preventDefault();
    // on the canvas outside text to image: a source picture; anywhere else: its PNG Info
    if (state.mode !== 'txt2img' && event.target.closest && event.target.closest('#canvas-area')) chooseInitImage(file);
    else if (file.type === 'image/png') readPNGInfo(file);
    else chooseInitImage(file);
  });
}

// ---------------------------------------------------------------- wiring

function bind() {
  for (const tab of document.querySelectorAll('#mode-tabs button')) {
    tab.addEventListener('click', () => {
      // new area starts from a blur of the picture: it needs (nearly) full strength
      if (tab.dataset.mode === 'outpaint' && state.mode !== 'outpaint') setValue('denoising', 1);
      setMode(tab.dataset.mode);
    });
  }
  for (const button of document.querySelectorAll('#presets button')) button.addEventListener('click', () => applyPreset(button.dataset.preset));
  $('width').addEventListener('change', applySize);
  $('height').addEventListener('change', applySize);
  $('circular').addEventListener('change', () => { updateSizeInfo(); saveSoon(); });
  $('swap-size').addEventListener('click', () => {
    const w = $('width').value;
    $('width').value = $('height').value;
    $('height').value = w;
    applySize();
  });
  $('model').addEventListener('change', switchModel);
  $('lora-picker').addEventListener('change', (event) => {
    if (event.target.value) insertIntoPrompt(`<lora:${event.target.value}:1>`);
    event.target.value = '';
  });
  $('embedding-picker').addEventListener('change', (event) => {
    if (event.target.value) insertIntoPrompt(event.target.value);
    event.target.value = '';
  });
  $('seed-random').addEventListener('click', () => setValue('seed', -1));
  $('seed-reuse').addEventListener('click', () => { if (state.lastSeed !== null) setValue('seed', state.lastSeed); });
  for (const [input, output, digits] of [['denoising', 'denoising-value', 2], ['brush-size', 'brush-size-value', 0], ['mask-blur', 'mask-blur-value', 0], ['outpaint-overlap', 'outpaint-overlap-value', 0]]) {
    const show = () => { $(output).textContent = Number($(input).value).toFixed(digits); };
    $(input).addEventListener('input', show);
    show();
  }
  $('brush-size').addEventListener('input', () => updateBrushCursor());
  $('init-image').addEventListener('change', (event) => { if (event.target.files[0]) chooseInitImage(event.target.files[0]); });
  $('init-match').addEventListener('click', matchInitSize);
  $('init-clear').addEventListener('click', clearInitImage);
  $('mask-clear').addEventListener('click', clearMask);
  $('outpaint-place').addEventListener('change', showSourceOrNothing);
  $('mask-erase').addEventListener('click', () => {
    const on = $('mask-erase').getAttribute('aria-pressed') !== 'true';
    $('mask-erase').setAttribute('aria-pressed', String(on));
  });
  $('tool-regions').addEventListener('click', () => setTool('regions'));
  $('tool-mask').addEventListener('click', () => setTool('mask'));

  const layer = $('region-layer');
  layer.addEventListener('pointerdown', onPointerDown);
  layer.addEventListener('pointermove', onPointerMove);
  layer.addEventListener('pointerup', onPointerUp);
  layer.addEventListener('pointercancel', onPointerUp);
  layer.addEventListener('pointerleave', () => { if (brushCursor) brushCursor.hidden = true; });
  $('region-add').addEventListener('click', () => {
    const { w, h } = state.size;
    addRegion({ rect: [w / 4, h / 4, w / 2, h / 2] });
  });
  $('region-delete').addEventListener('click', () => { if (state.selected !== null) deleteRegion(state.selected); });
  $('region-clear').addEventListener('click', () => { state.regions = []; state.selected = null; renderRegions(); saveSoon(); });

  $('generate').addEventListener('click', generate);
  $('cancel-current').addEventListener('click', () => {
    const running = state.jobs.find((job) => job.state === 'running');
    if (running) cancelJob(running.id);
  });
  $('gallery-refresh').addEventListener('click', () => loadGallery(true));
  $('gallery-more').addEventListener('click', () => loadGallery(false));
  $('png-info-file').addEventListener('change', (event) => { if (event.target.files[0]) readPNGInfo(event.target.files[0]); event.target.value = ''; });
  $('detail-close').addEventListener('click', () => $('detail-dialog').close());
  $('detail-dialog').addEventListener('click', (event) => { if (event.target === $('detail-dialog')) $('detail-dialog').close(); });
  $('detail-use').addEventListener('click', async () => {
    if (!state.detail) return;
    $('detail-dialog').close();
    await useParameters(state.detail.parameters, state.detail.regions);
  });
  $('detail-canvas').addEventListener('click', () => {
    if (state.detail) showCanvasImage(state.detail.src, 'result');
    $('detail-dialog').close();
  });
  $('detail-source').addEventListener('click', async () => {
    if (!state.detail) return;
    const { src, title } = state.detail;
    $('detail-dialog').close();
    // a dropped file is already a data: URL (which the page's policy would not fetch)
    const dataURL = src.startsWith('data:') ? src : await readFile(await (await fetch(src)).blob());
    await setInitImage(dataURL, title);
    if (state.mode === 'txt2img') setMode('img2img');
  });

  for (const id of SAVED_FIELDS) $(id).addEventListener('input', saveSoon);
  for (const id of SAVED_FIELDS) $(id).addEventListener('change', saveSoon);
  document.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
      event.preventDefault();
      generate();
      return;
    }
    const typing = event.target.closest && event.target.closest('input, textarea, select');
    if (typing || $('detail-dialog').open) return;
    if ((event.key === 'Delete' || event.key === 'Backspace') && state.selected !== null) {
      event.preventDefault();
      deleteRegion(state.selected);
    } else if (event.key === 'Escape') {
      selectRegion(null);
    }
  });
  new ResizeObserver(layoutCanvas).observe($('canvas-area'));
  window.addEventListener('resize', layoutCanvas);
  setUpDrop();
}

async function start() {
  bind();
  try {
    await loadConfig();
  } catch (error) {
    setStatus('server-status', `Could not read the server's configuration: ${error.message}`, 'bad');
  }
  if (!restore()) {
    applyPreset('4:1');
    setMode('txt2img');
  }
  $('width').value = state.size.w;
  $('height').value = state.size.h;
  resizeMask(state.size.w, state.size.h);
  applySize();
  tokenCounter($('prompt'), $('prompt-tokens'));
  tokenCounter($('negative-prompt'), $('negative-tokens'));
  loadGallery(true);
  poll();
}

document.addEventListener('DOMContentLoaded', start);
"""#
}
