// Carina's browser annotation viewer: Niivue over the MONAI Label API of the server that serves
// this page. Every call goes to this server (same origin, ../ of /viewer/); nothing else is
// fetched. Points sent to models are voxel indices of the image as the server reads it: Niivue
// reports millimetres, turned into indices with the inverse of the NIfTI affine the server sent.

const nvlib = window.niivue;
const API = new URL("../", window.location.href);
const TAG = "final";
const CLIENT_ID = "carina-viewer";
const PRESETS = {
  soft: { level: 40, width: 400, name: "CT soft tissue" },
  bone: { level: 400, width: 1800, name: "CT bone" },
  lung: { level: -600, width: 1500, name: "CT lung" },
};

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem("carina.token"),
  user: null,
  roles: [],
  authEnabled: false,
  info: null,
  objects: {},
  current: null, // {kind: "datastore" | "session", id, name}
  inverseAffine: null,
  labels: [], // [{name, value, color: [r, g, b], visible}]
  labelValue: 1,
  tool: "navigate",
  points: { foreground: [], background: [], extreme: [] },
  interactionBase: null, // the drawing before the current DeepGrow / DExtr3D interaction
  committed: null, // the drawing as of the last history entry
  history: [],
  future: [],
  dirty: false,
  busy: null, // {controller, started, timer}
  pointerDown: null,
};

// -- the server ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Call the server; answers JSON (default), an ArrayBuffer (as: "buffer") or the Response. */
async function api(path, { method = "GET", query = {}, form = null, body = null, as = "json", signal } = {}) {
  const url = new URL(path, API);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, value);
  }
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let payload = body;
  if (form) {
    payload = new FormData();
    for (const [key, value] of Object.entries(form)) {
      if (value instanceof Blob) payload.append(key, value, value.name || key);
      else payload.append(key, typeof value === "string" ? value : JSON.stringify(value));
    }
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const error = (await response.json()).error;
      if (error && error.message) message = [].concat(error.message).join("; ");
    } catch (_) {
      // not the error body: keep the status line
    }
    if (response.status === 401 && state.authEnabled) {
      state.token = null;
      sessionStorage.removeItem("carina.token");
      signIn();
    }
    throw new ApiError(response.status, message);
  }
  if (as === "buffer") return response.arrayBuffer();
  if (as === "response") return response;
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

function say(text, { error = false } = {}) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", error);
}

function fail(error) {
  if (error && error.name === "AbortError") {
    say("Cancelled.");
    return;
  }
  console.error(error);
  say(error instanceof ApiError ? error.message : `Error: ${error.message || error}`, { error: true });
}

/** Run long server work with a progress line (elapsed seconds) and a Cancel button. */
async function busy(what, work) {
  if (state.busy) throw new Error("wait for the running work to finish or cancel it (Esc)");
  const controller = new AbortController();
  const started = performance.now();
  const text = $("progress-text");
  const tick = () => {
    text.textContent = `${what}… ${((performance.now() - started) / 1000).toFixed(1)} s`;
  };
  tick();
  state.busy = { controller, timer: setInterval(tick, 100) };
  $("progress").hidden = false;
  say("");
  try {
    return await work(controller.signal);
  } finally {
    clearInterval(state.busy.timer);
    state.busy = null;
    $("progress").hidden = true;
  }
}

function cancel() {
  if (state.busy) state.busy.controller.abort();
}

// -- sign-in -------------------------------------------------------------------------------------

/** Ask for a user and password; resolves once signed in (one dialog however many ask). */
function signIn() {
  const dialog = $("sign-in");
  if (!dialog.open) {
    dialog.showModal();
    state.signingIn = new Promise((resolve) => {
      state.signedIn = resolve;
    });
  }
  return state.signingIn;
}

async function onSignIn(event) {
  event.preventDefault();
  const data = new FormData(event.target);
  const body = new URLSearchParams({
    username: data.get("username"),
    password: data.get("password"),
    grant_type: "password",
  });
  try {
    const response = await fetch(new URL("auth/token", API), { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) throw new Error([].concat(answer.error?.message || response.statusText).join("; "));
    state.token = answer.access_token;
    sessionStorage.setItem("carina.token", state.token);
    $("sign-in-error").textContent = "";
    $("sign-in").close();
    await whoAmI();
    if (state.signedIn) state.signedIn();
  } catch (error) {
    $("sign-in-error").textContent = error.message;
  }
}

async function whoAmI() {
  const me = await api("auth/token/valid");
  state.user = me.username;
  state.roles = me.roles || [];
  $("who").textContent = state.authEnabled ? `${state.user} (${state.roles.join(", ")})` : "";
  $("sign-out").hidden = !state.authEnabled;
  updateButtons();
}

function signOut() {
  if (state.dirty && !confirm("Your edits are not saved. Sign out anyway?")) return;
  sessionStorage.removeItem("carina.token");
  state.token = null;
  window.location.reload();
}

function hasRole(role) {
  const order = ["user", "annotator", "reviewer", "admin"];
  const needed = order.indexOf(role);
  return state.roles.some((r) => order.indexOf(r) >= needed);
}

// -- worklist ------------------------------------------------------------------------------------

async function loadInfo() {
  state.info = await api("info/");
  const models = Object.entries(state.info.models || {});
  const select = $("model");
  select.replaceChildren();
  for (const [name, model] of models) {
    if ((model.guidance || "none") !== "none") continue;
    select.append(new Option(`${name} (${model.labels.join(", ")})`, name));
  }
  const strategies = $("strategy");
  strategies.replaceChildren();
  for (const name of Object.keys(state.info.strategies || {})) strategies.append(new Option(name, name));
}

function interactiveModel(guidance) {
  const models = Object.entries(state.info?.models || {}).filter(([, m]) => m.guidance === guidance);
  models.sort(([, a], [, b]) => (b.dimension || 3) - (a.dimension || 3)); // 3D before 2D
  return models.length ? models[0][0] : null;
}

async function loadWorklist() {
  const listing = await api("datastore/", { query: { output: "all" } });
  state.objects = listing.objects || {};
  renderWorklist();
}

function imageStatus(entry) {
  return entry.image?.info?.status || (entry.labels?.[TAG] ? "labelled" : "unlabelled");
}

function renderWorklist() {
  const needle = $("search").value.trim().toLowerCase();
  const list = $("images");
  list.replaceChildren();
  const counts = { unlabelled: 0, labelled: 0, approved: 0 };
  for (const [id, entry] of Object.entries(state.objects).sort(([a], [b]) => a.localeCompare(b))) {
    const status = imageStatus(entry);
    counts[status] = (counts[status] || 0) + 1;
    if (needle && !id.toLowerCase().includes(needle)) continue;
    const item = document.createElement("li");
    item.dataset.id = id;
    item.classList.toggle("current", state.current?.kind === "datastore" && state.current.id === id);
    const name = document.createElement("span");
    name.textContent = id;
    const badge = document.createElement("span");
    badge.className = `status ${status}`;
    badge.textContent = status;
    item.append(name, badge);
    item.addEventListener("click", () => openImage(id).catch(fail));
    list.append(item);
  }
  const total = Object.keys(state.objects).length;
  $("counts").textContent =
    `${total} images: ${counts.unlabelled} unlabelled, ${counts.labelled} labelled, ${counts.approved} approved`;
}

async function nextImage() {
  const strategy = $("strategy").value;
  if (!strategy) return;
  const found = await api(`activelearning/${encodeURIComponent(strategy)}`, {
    method: "POST",
    body: JSON.stringify({ client_id: CLIENT_ID }),
  });
  if (!found.id) {
    say("Every image is labelled.");
    return;
  }
  await openImage(found.id);
}

// -- opening images ------------------------------------------------------------------------------

function leaveOk() {
  return !state.dirty || confirm("Your edits are not saved. Discard them?");
}

async function openImage(id) {
  if (!leaveOk()) return;
  await busy(`Opening ${id}`, async (signal) => {
    const buffer = await api("viewer/api/image", { query: { image: id }, as: "buffer", signal });
    await showImage(buffer, { kind: "datastore", id, name: id });
    let label = null;
    if (state.objects[id]?.labels?.[TAG]) {
      label = await api("datastore/label", { query: { label: id, tag: TAG }, as: "buffer", signal });
    }
    setupLabels(id);
    if (label) await loadDrawing(label);
    else nv.createEmptyDrawing();
    resetHistory();
    await showLabelState();
  });
  renderWorklist();
}

async function showImage(buffer, current) {
  const bytes = await inflate(buffer);
  const window = estimateWindow(bytes);
  releaseImage();
  const options = { url: bytes, name: "image.nii", colormap: "gray" };
  if (window) Object.assign(options, { cal_min: window.level - window.width / 2, cal_max: window.level + window.width / 2 });
  const image = await nvlib.NVImage.loadFromUrl(options);
  nv.volumes = [];
  nv.addVolume(image);
  state.current = current;
  state.inverseAffine = invert4(image.hdr.affine);
  $("empty").hidden = true;
  $("image-title").textContent = current.kind === "session" ? `${current.name} (session)` : current.name;
  if (window) showWindow(window.level, window.width);
  else applyPreset("auto");
  resetPoints();
  setTool(state.tool);
  updateButtons();
}

/** The NIfTI bytes uncompressed (the browser's own gzip is faster than Niivue's). */
async function inflate(buffer) {
  const head = new Uint8Array(buffer, 0, 2);
  if (head[0] !== 0x1f || head[1] !== 0x8b) return buffer;
  const stream = new Blob([buffer]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer();
}

/** A window for a NIfTI-1 image before Niivue reads it (so that its textures are built once):
 * CT soft tissue when the image holds Hounsfield air, else the 2nd to 98th percentile. */
function estimateWindow(bytes) {
  const view = new DataView(bytes);
  if (bytes.byteLength < 352) return null;
  const little = view.getInt32(0, true) === 348;
  if (!little && view.getInt32(0, false) !== 348) return null; // NIfTI-2: Niivue decides
  const dims = [1, 2, 3].map((i) => Math.max(1, view.getInt16(40 + 2 * i, little)));
  const readers = {
    2: [1, (o) => view.getUint8(o)], 4: [2, (o) => view.getInt16(o, little)],
    8: [4, (o) => view.getInt32(o, little)], 16: [4, (o) => view.getFloat32(o, little)],
    64: [8, (o) => view.getFloat64(o, little)], 256: [1, (o) => view.getInt8(o)],
    512: [2, (o) => view.getUint16(o, little)], 768: [4, (o) => view.getUint32(o, little)],
  };
  const reader = readers[view.getInt16(70, little)];
  if (!reader) return null;
  const [size, read] = reader;
  const offset = Math.round(view.getFloat32(108, little));
  const slope = view.getFloat32(112, little) || 1;
  const intercept = view.getFloat32(116, little) || 0;
  const count = dims[0] * dims[1] * dims[2];
  if (offset + count * size > bytes.byteLength) return null;
  const step = Math.max(1, Math.floor(count / 100000));
  const samples = [];
  for (let i = 0; i < count; i += step) {
    const value = read(offset + i * size) * slope + intercept;
    if (Number.isFinite(value)) samples.push(value);
  }
  if (!samples.length) return null;
  samples.sort((a, b) => a - b);
  if (samples[0] < -500) return { ...PRESETS.soft };
  const low = samples[Math.floor(samples.length * 0.02)];
  const high = samples[Math.floor(samples.length * 0.98)];
  return { level: (low + high) / 2, width: Math.max(high - low, 1e-6) };
}

/** Free the open image's GPU textures before the next one is read (software WebGL is slow
 * to reuse them). */
function releaseImage() {
  if (!nv.volumes.length) return;
  nv.closeDrawing();
  const gl = nv.gl;
  for (const key of ["volumeTexture", "gradientTexture", "overlayTexture", "drawTexture"]) {
    if (nv[key]) {
      gl.deleteTexture(nv[key]);
      nv[key] = null;
    }
  }
}

async function loadDrawing(buffer) {
  const image = await nvlib.NVImage.loadFromUrl({ url: buffer, name: "label.nii.gz" });
  const ras = image.img2RAS();
  nv.createEmptyDrawing();
  nv.drawBitmap.set(ras);
  const present = new Uint8Array(256);
  for (let i = 0; i < ras.length; i++) present[ras[i]] = 1;
  present.forEach((seen, value) => seen && value > 0 && labelFor(null, value));
  renderLabels();
  nv.refreshDrawing(true);
}

/** A local file: into the datastore (admins, or anyone with sign-in off) or a session. The
 * open image and its edits stay until the new one has arrived (and the user agreed). */
async function dropFile(file) {
  if (!file) return;
  $("drop-name").textContent = file.name;
  $("drop-datastore").disabled = !hasRole("admin");
  const dialog = $("drop-choice");
  dialog.returnValue = "";
  dialog.showModal();
  const choice = await new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }));
  if (choice === "datastore") {
    const id = file.name.replace(/(\.nii)?(\.gz)?$|\.(nrrd|mha|mhd|zip|dcm)$/i, "").replace(/[^A-Za-z0-9._-]/g, "_");
    await busy(`Uploading ${file.name}`, (signal) =>
      api("datastore/image", { method: "PUT", query: { image: id }, form: { file, params: { client_id: CLIENT_ID } }, signal }),
    );
    await loadWorklist();
    await openImage(id);
  } else if (choice === "session") {
    await busy(`Opening ${file.name}`, async (signal) => {
      const session = await api("session/", { method: "POST", form: { image: file }, signal });
      const buffer = await api("viewer/api/image", { query: { session_id: session.session_id }, as: "buffer", signal });
      if (!leaveOk()) return;
      await showImage(buffer, { kind: "session", id: session.session_id, name: file.name });
      setupLabels(null);
      nv.createEmptyDrawing();
      resetHistory();
      $("label-state").textContent = "not saved on the server: download the label";
    });
    renderWorklist();
  }
}

// -- labels --------------------------------------------------------------------------------------

function modelColors() {
  const colors = {};
  for (const model of Object.values(state.info?.models || {})) {
    for (const [name, color] of Object.entries(model.label_colors || {})) colors[name] ??= color;
  }
  return colors;
}

const FALLBACK = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]];

/** The datastore's label names (with their values), else the first segmentation model's. */
function setupLabels(id) {
  state.labels = [];
  let names = null;
  for (const entry of Object.values(state.objects)) {
    const found = entry.labels?.[TAG]?.info?.params?.label_names;
    if (found && Object.keys(found).length) {
      names = found;
      if (!id || entry === state.objects[id]) break;
    }
  }
  if (names) {
    for (const [name, value] of Object.entries(names)) if (value > 0) labelFor(name, Number(value));
  } else {
    const first = Object.values(state.info?.models || {}).find((m) => (m.guidance || "none") === "none");
    (first?.labels || ["label"]).forEach((name, i) => labelFor(name, i + 1));
  }
  state.labelValue = state.labels[0]?.value || 1;
  renderLabels();
}

/** The label of this name (or value), added to the table when new. */
function labelFor(name, value = null) {
  let label = state.labels.find((l) => (name !== null ? l.name.toLowerCase() === name.toLowerCase() : l.value === value));
  if (label) return label;
  const used = new Set(state.labels.map((l) => l.value));
  if (value === null || used.has(value)) {
    value = 1;
    while (used.has(value)) value++;
  }
  if (value > 255) throw new Error("the viewer draws at most 255 labels");
  const color = modelColors()[name] || FALLBACK[(value - 1) % FALLBACK.length];
  label = { name: name ?? `label ${value}`, value, color, visible: true };
  state.labels.push(label);
  state.labels.sort((a, b) => a.value - b.value);
  return label;
}

function renderLabels() {
  const list = $("labels");
  list.replaceChildren();
  state.labels.forEach((label, position) => {
    const item = document.createElement("li");
    item.classList.toggle("current", label.value === state.labelValue);
    const visible = document.createElement("input");
    visible.type = "checkbox";
    visible.checked = label.visible;
    visible.title = "Show this label";
    visible.addEventListener("click", (event) => {
      event.stopPropagation();
      label.visible = visible.checked;
      applyColormap();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${label.color.join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label.name;
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = position < 9 ? String(position + 1) : "";
    item.append(visible, swatch, name, key);
    item.addEventListener("click", () => pickLabel(label.value));
    list.append(item);
  });
  applyColormap();
}

function pickLabel(value) {
  if (!state.labels.some((l) => l.value === value)) return;
  if (value !== state.labelValue) resetPoints();
  state.labelValue = value;
  renderLabels();
  setTool(state.tool);
}

function applyColormap() {
  if (!nv.volumes.length) return;
  const cmap = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["background"] };
  for (const label of state.labels) {
    cmap.R.push(label.color[0]);
    cmap.G.push(label.color[1]);
    cmap.B.push(label.color[2]);
    cmap.A.push(label.visible ? 255 : 0);
    cmap.I.push(label.value);
    cmap.labels.push(label.name);
  }
  if (nvlib.cmapper) {
    nv.drawLut = nvlib.cmapper.makeDrawLut(cmap); // the colours only: no volume texture rebuild
    nv.refreshColormaps();
  } else {
    nv.setDrawColormap(cmap);
  }
  nv.setDrawOpacity(Number($("opacity").value));
}

// -- the drawing's history (undo / redo) ---------------------------------------------------------

function resetHistory() {
  state.committed = nv.drawBitmap ? nv.drawBitmap.slice() : null;
  state.history = [];
  state.future = [];
  state.dirty = false;
  updateButtons();
}

/** Record what changed in the drawing since the last entry (one undo step). */
function commit() {
  const drawing = nv.drawBitmap;
  if (!drawing || !state.committed) return;
  const changed = [];
  for (let i = 0; i < drawing.length; i++) if (drawing[i] !== state.committed[i]) changed.push(i);
  if (!changed.length) return;
  const index = Int32Array.from(changed);
  const before = new Uint8Array(index.length);
  const after = new Uint8Array(index.length);
  index.forEach((voxel, n) => {
    before[n] = state.committed[voxel];
    after[n] = drawing[voxel];
    state.committed[voxel] = drawing[voxel];
  });
  state.history.push({ index, before, after });
  if (state.history.length > 100) state.history.shift();
  state.future = [];
  state.dirty = true;
  updateButtons();
}

function replay(from, to, values) {
  const step = from.pop();
  if (!step) return;
  const drawing = nv.drawBitmap;
  step.index.forEach((voxel, n) => {
    drawing[voxel] = step[values][n];
    state.committed[voxel] = step[values][n];
  });
  to.push(step);
  state.dirty = true;
  resetPoints();
  nv.refreshDrawing(true);
  updateButtons();
}

const undo = () => replay(state.history, state.future, "before");
const redo = () => replay(state.future, state.history, "after");

// -- tools ---------------------------------------------------------------------------------------

function setTool(tool) {
  if (tool !== state.tool) resetPoints();
  state.tool = tool;
  for (const button of document.querySelectorAll("#tool-buttons button")) {
    button.classList.toggle("active", button.dataset.tool === tool);
  }
  const drawing = tool === "brush" || tool === "eraser";
  if (nv.volumes.length) {
    nv.setDrawingEnabled(drawing);
    nv.opts.penSize = Number($("brush-size").value) || 1;
    nv.setPenValue(tool === "eraser" ? 0 : state.labelValue, $("fill").checked);
  }
  showPoints();
}

function resetPoints() {
  state.points = { foreground: [], background: [], extreme: [] };
  state.interactionBase = null;
  showPoints();
}

function showPoints() {
  const p = state.points;
  const text = {
    deepgrow: `DeepGrow: ${p.foreground.length} foreground, ${p.background.length} background (Shift+click)`,
    dextr3d: `DExtr3D: ${p.extreme.length} of 6 extreme points`,
  };
  $("points").textContent = text[state.tool] || "";
}

/** The voxel index [i, j, k] of the image as the server reads it, at millimetres ``mm``. */
function voxelAt(mm) {
  const m = state.inverseAffine;
  return [0, 1, 2].map((r) => Math.round(m[r][0] * mm[0] + m[r][1] * mm[1] + m[r][2] * mm[2] + m[r][3]));
}

/** Move the crosshair to voxel [i, j, k] of the image (as the server reads it) and return the
 * voxel centre's position on the page, in the first view that shows it. */
function goToVoxel([i, j, k]) {
  const a = nv.volumes[0].hdr.affine;
  const mm = [0, 1, 2].map((r) => a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3]);
  const frac = nv.mm2frac(mm);
  nv.scene.crosshairPos = frac;
  nv.drawScene();
  const position = nv.frac2canvasPos(frac);
  const rect = nv.canvas.getBoundingClientRect();
  const dpr = nv.uiData?.dpr || window.devicePixelRatio || 1;
  return [rect.left + position[0] / dpr, rect.top + position[1] / dpr];
}

function mmAtEvent(event) {
  const rect = nv.canvas.getBoundingClientRect();
  const dpr = nv.uiData?.dpr || window.devicePixelRatio || 1;
  const frac = nv.canvasPos2frac([(event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr]);
  if (!frac || frac[0] < 0) return null;
  return Array.from(nv.frac2mm(frac)).slice(0, 3);
}

function onPointerDown(event) {
  state.pointerDown = { x: event.clientX, y: event.clientY, button: event.button };
}

function onPointerUp(event) {
  const down = state.pointerDown;
  state.pointerDown = null;
  if (!down || down.button !== 0 || !nv.volumes.length) return;
  if (Math.hypot(event.clientX - down.x, event.clientY - down.y) > 4) return; // a drag
  if (state.tool !== "deepgrow" && state.tool !== "dextr3d") return;
  const mm = mmAtEvent(event);
  if (!mm) return;
  const point = voxelAt(mm);
  if (state.tool === "deepgrow") {
    (event.shiftKey ? state.points.background : state.points.foreground).push(point);
    if (!state.points.foreground.length) {
      showPoints();
      return;
    }
    runInteractive("clicks", { foreground: state.points.foreground, background: state.points.background }).catch(fail);
  } else {
    state.points.extreme.push(point);
    showPoints();
    if (state.points.extreme.length === 6) {
      const points = state.points.extreme;
      runInteractive("extreme_points", { foreground: points }).then(resetPoints, fail);
    }
  }
}

function inferTarget() {
  return state.current.kind === "session" ? { session_id: state.current.id } : { image: state.current.id };
}

async function infer(model, params, signal) {
  return api(`infer/${encodeURIComponent(model)}`, {
    method: "POST",
    query: { ...inferTarget(), output: "image" },
    form: { params: { ...params, result_extension: ".nii.gz", result_dtype: "uint8", client_id: CLIENT_ID } },
    as: "buffer",
    signal,
  });
}

/** The model's answer as an array in the drawing's (Niivue's RAS) voxel order. */
async function resultInDrawingOrder(buffer) {
  const image = await nvlib.NVImage.loadFromUrl({ url: buffer, name: "result.nii.gz" });
  const ras = image.img2RAS();
  if (ras.length !== nv.drawBitmap.length) throw new Error("the model's answer is not on this image's grid");
  return ras;
}

async function runInteractive(guidance, params) {
  const model = interactiveModel(guidance);
  if (!model) throw new Error(`this server has no ${guidance === "clicks" ? "DeepGrow" : "DExtr3D"} model`);
  if (!state.interactionBase) state.interactionBase = nv.drawBitmap.slice();
  showPoints();
  const mask = await busy(`Running ${model}`, async (signal) => resultInDrawingOrder(await infer(model, params, signal)));
  const drawing = nv.drawBitmap;
  drawing.set(state.interactionBase);
  for (let i = 0; i < drawing.length; i++) if (mask[i]) drawing[i] = state.labelValue;
  nv.refreshDrawing(true);
  commit();
  say(`${model}: ${countVoxels(mask)} voxels`);
}

async function runModel() {
  const model = $("model").value;
  if (!model || !state.current) return;
  const names = state.info.models[model].labels;
  const result = await busy(`Running ${model}`, async (signal) => resultInDrawingOrder(await infer(model, {}, signal)));
  const values = names.map((name) => labelFor(name).value);
  renderLabels();
  const produced = new Set(values);
  const drawing = nv.drawBitmap;
  for (let i = 0; i < drawing.length; i++) {
    if (result[i]) drawing[i] = values[result[i] - 1] ?? drawing[i];
    else if (produced.has(drawing[i])) drawing[i] = 0;
  }
  resetPoints();
  nv.refreshDrawing(true);
  commit();
  say(`${model}: ${countVoxels(result)} voxels labelled`);
}

function countVoxels(array) {
  let n = 0;
  for (let i = 0; i < array.length; i++) if (array[i]) n++;
  return n;
}

// -- saving --------------------------------------------------------------------------------------

async function drawingNifti() {
  return nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
}

async function save() {
  if (!state.current || state.current.kind !== "datastore") return download();
  const bytes = await drawingNifti();
  const file = new File([bytes], "label.nii", { type: "application/octet-stream" });
  const labelInfo = state.labels.map((l) => ({ name: l.name, idx: l.value }));
  await busy("Saving", (signal) =>
    api("datastore/label", {
      method: "PUT",
      query: { image: state.current.id, tag: TAG },
      form: { label: file, params: { label_info: labelInfo, client_id: CLIENT_ID } },
      signal,
    }),
  );
  state.dirty = false;
  await loadWorklist();
  await showLabelState();
  say("Saved.");
  updateButtons();
}

async function approve() {
  if (!state.current || state.current.kind !== "datastore") return;
  if (state.dirty) throw new Error("save your edits before approving");
  await busy("Approving", (signal) =>
    api("datastore/label/info", {
      method: "PUT",
      query: { label: state.current.id, tag: TAG },
      form: { params: { status: "approved" } },
      signal,
    }),
  );
  await loadWorklist();
  await showLabelState();
  say("Approved.");
}

async function download() {
  if (!state.current) return;
  const bytes = await drawingNifti();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([bytes]));
  link.download = `${state.current.name.replace(/(\.nii)?(\.gz)?$/, "")}_label.nii`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

async function showLabelState() {
  const element = $("label-state");
  if (!state.current || state.current.kind !== "datastore") return;
  try {
    const info = await api("datastore/label/info", { query: { label: state.current.id, tag: TAG } });
    const when = new Date(info.ts * 1000).toLocaleString();
    const status = imageStatus(state.objects[state.current.id] || {});
    element.textContent = `final v${info.version} by ${info.user}, ${when} (${status})`;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) element.textContent = "no saved label";
    else throw error;
  }
}

// -- display -------------------------------------------------------------------------------------

function applyPreset(name) {
  const volume = nv.volumes[0];
  if (!volume) return;
  const preset = PRESETS[name];
  const level = preset ? preset.level : (volume.robust_min + volume.robust_max) / 2;
  const width = preset ? preset.width : Math.max(1, volume.robust_max - volume.robust_min);
  setWindow(level, width);
}

function setWindow(level, width) {
  const volume = nv.volumes[0];
  if (!volume || !(width > 0)) return;
  volume.cal_min = level - width / 2;
  volume.cal_max = level + width / 2;
  showWindow(level, width);
  nv.updateGLVolume();
}

function showWindow(level, width) {
  const digits = width < 10 ? 2 : 0;
  $("level").value = level.toFixed(digits);
  $("width").value = width.toFixed(digits);
}

function setLayout(layout) {
  const types = { axial: nvlib.SLICE_TYPE.AXIAL, coronal: nvlib.SLICE_TYPE.CORONAL, sagittal: nvlib.SLICE_TYPE.SAGITTAL };
  nv.opts.multiplanarShowRender = layout === "render" ? nvlib.SHOW_RENDER.ALWAYS : nvlib.SHOW_RENDER.NEVER;
  nv.setSliceType(types[layout] ?? nvlib.SLICE_TYPE.MULTIPLANAR);
  for (const button of document.querySelectorAll("#layouts button")) {
    button.classList.toggle("active", button.dataset.layout === layout);
  }
}

function zoom(factor) {
  const pan = nv.scene.pan2Dxyzmm;
  nv.setPan2Dxyzmm([pan[0], pan[1], pan[2], Math.min(20, Math.max(0.2, pan[3] * factor))]);
}

function showReadout(location) {
  if (!location || !state.inverseAffine) return;
  const mm = Array.from(location.mm).slice(0, 3);
  const voxel = voxelAt(mm);
  const value = location.values?.[0]?.value;
  const drawn = nv.drawBitmap ? labelName(location) : "";
  $("readout").textContent =
    `voxel [${voxel.join(", ")}]  ${mm.map((v) => v.toFixed(1)).join(", ")} mm  value ${value ?? "-"}${drawn}`;
}

function labelName(location) {
  const vox = location.vox;
  const dims = nv.back.dimsRAS;
  const index = vox[0] + vox[1] * dims[1] + vox[2] * dims[1] * dims[2];
  const value = nv.drawBitmap[index];
  const label = state.labels.find((l) => l.value === value);
  return value ? `  label ${label ? label.name : value}` : "";
}

function updateButtons() {
  const open = Boolean(state.current);
  const stored = open && state.current.kind === "datastore";
  $("run").disabled = !open || !$("model").value;
  $("save").disabled = !open || !hasRole("annotator");
  $("save").textContent = stored ? "Save" : "Save (download)";
  $("approve").disabled = !stored || !hasRole("reviewer");
  $("download").disabled = !open;
  $("undo").disabled = !state.history.length;
  $("redo").disabled = !state.future.length;
  $("next").disabled = !$("strategy").value;
}

// -- keyboard ------------------------------------------------------------------------------------

const SHORTCUTS = [
  ["?", "this help", () => $("help").showModal()],
  ["N", "navigate", () => setTool("navigate")],
  ["G", "DeepGrow (click; Shift+click: background)", () => setTool("deepgrow")],
  ["X", "DExtr3D (six extreme points)", () => setTool("dextr3d")],
  ["B", "brush", () => setTool("brush")],
  ["E", "eraser", () => setTool("eraser")],
  ["F", "fill the brush outline on / off", () => { $("fill").checked = !$("fill").checked; setTool(state.tool); }],
  ["[ / ]", "brush smaller / larger", null],
  ["1 … 9", "pick a label", null],
  ["V", "show / hide every label", () => { const all = state.labels.every((l) => l.visible); state.labels.forEach((l) => (l.visible = !all)); renderLabels(); }],
  ["R", "run the segmentation model", () => runModel().catch(fail)],
  ["Enter", "finish the DeepGrow / DExtr3D interaction", () => resetPoints()],
  ["Esc", "cancel running work, or drop the pending points", () => (state.busy ? cancel() : resetPoints())],
  ["Ctrl+Z", "undo", () => undo()],
  ["Ctrl+Shift+Z, Ctrl+Y", "redo", () => redo()],
  ["Ctrl+S", "save the final label", () => save().catch(fail)],
  ["Shift+A", "approve the saved label", () => approve().catch(fail)],
  ["D", "download the label", () => download().catch(fail)],
  ["Shift+N", "next image by strategy", () => nextImage().catch(fail)],
  ["/", "search the worklist", () => $("search").focus()],
  ["T / O / L / A", "window: soft tissue / bone / lung / automatic", null],
  ["F1 … F5", "three planes / axial / coronal / sagittal / with 3D", null],
  ["+ / -", "zoom in / out (middle-drag pans, right-drag adjusts the window)", null],
  ["PageUp / PageDown, wheel", "next / previous slice", null],
];

/** Single keys (no modifier) and what they do, from the table above. */
const KEYS = Object.fromEntries(
  [["?", 0], ["n", 1], ["g", 2], ["x", 3], ["b", 4], ["e", 5], ["f", 6], ["v", 9], ["r", 10],
   ["Enter", 11], ["Escape", 12], ["d", 17], ["/", 19]].map(([key, row]) => [key, SHORTCUTS[row][2]]),
);

function onKey(event) {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.type !== "checkbox" && target.type !== "range") return;
  if (target instanceof HTMLSelectElement || document.querySelector("dialog[open]")) return;
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  const run = (action) => {
    event.preventDefault();
    action();
  };
  if (ctrl && key.toLowerCase() === "z") return run(event.shiftKey ? redo : undo);
  if (ctrl && key.toLowerCase() === "y") return run(redo);
  if (ctrl && key.toLowerCase() === "s") return run(() => save().catch(fail));
  if (ctrl || event.altKey) return;
  const presets = { t: "soft", o: "bone", l: "lung", a: "auto" };
  const layouts = { F1: "multi", F2: "axial", F3: "coronal", F4: "sagittal", F5: "render" };
  if (key === "A" && event.shiftKey) return run(() => approve().catch(fail));
  if (key === "N" && event.shiftKey) return run(() => nextImage().catch(fail));
  if (layouts[key]) return run(() => setLayout(layouts[key]));
  if (presets[key]) return run(() => applyPreset(presets[key]));
  if (/^[1-9]$/.test(key)) return run(() => state.labels[Number(key) - 1] && pickLabel(state.labels[Number(key) - 1].value));
  if (key === "[" || key === "]") {
    return run(() => {
      const size = $("brush-size");
      size.value = Math.max(1, Math.min(50, Number(size.value) + (key === "]" ? 1 : -1)));
      setTool(state.tool);
    });
  }
  if (key === "+" || key === "=") return run(() => zoom(1.2));
  if (key === "-") return run(() => zoom(1 / 1.2));
  if (key === "PageUp" || key === "PageDown") return run(() => nv.moveCrosshairInVox(0, 0, key === "PageUp" ? 1 : -1));
  const action = KEYS[key.length === 1 ? key.toLowerCase() : key];
  if (action && !(event.shiftKey && /^[a-z]$/i.test(key))) run(action);
}

function fillHelp() {
  const table = $("shortcuts");
  for (const [keys, what] of SHORTCUTS) {
    const row = table.insertRow();
    row.insertCell().textContent = keys;
    row.insertCell().textContent = what;
  }
}

// -- start ---------------------------------------------------------------------------------------

function invert4(rows) {
  // Gauss-Jordan on a 4x4 matrix given as rows (or a flat array of 16).
  const a = rows.length === 16 ? [0, 1, 2, 3].map((r) => Array.from(rows.slice(r * 4, r * 4 + 4))) : rows.map((r) => Array.from(r));
  const inv = [0, 1, 2, 3].map((r) => [0, 1, 2, 3].map((c) => (r === c ? 1 : 0)));
  for (let c = 0; c < 4; c++) {
    let pivot = c;
    for (let r = c + 1; r < 4; r++) if (Math.abs(a[r][c]) > Math.abs(a[pivot][c])) pivot = r;
    [a[c], a[pivot]] = [a[pivot], a[c]];
    [inv[c], inv[pivot]] = [inv[pivot], inv[c]];
    const scale = a[c][c];
    if (Math.abs(scale) < 1e-12) throw new Error("the image's affine cannot be inverted");
    for (let k = 0; k < 4; k++) {
      a[c][k] /= scale;
      inv[c][k] /= scale;
    }
    for (let r = 0; r < 4; r++) {
      if (r === c) continue;
      const f = a[r][c];
      for (let k = 0; k < 4; k++) {
        a[r][k] -= f * a[c][k];
        inv[r][k] -= f * inv[c][k];
      }
    }
  }
  return inv;
}

let nv = null;

/** Niivue uploads the whole drawing to the GPU after each pen move (8 MB for 256x256x128, far
 * more than a frame on a software renderer). A pen stroke only changes the slice it is drawn
 * on, so during a stroke only that slice is uploaded; anything else takes Niivue's own path. */
function uploadStrokeSliceOnly() {
  const original = nv.refreshDrawing.bind(nv);
  nv.refreshDrawing = (isForceRedraw = true, useClickToSegmentBitmap = false) => {
    const at = nv.drawPenLocation;
    const plane = nv.drawPenAxCorSag;
    const bitmap = nv.drawBitmap;
    const dims = nv.back?.dims;
    const stroking =
      nv.opts.drawingEnabled && !useClickToSegmentBitmap && !nv.opts.is2DSliceShader &&
      at && !Number.isNaN(at[0]) && plane >= 0 && plane <= 2 && bitmap && dims && nv.drawTexture;
    if (!stroking) return original(isForceRedraw, useClickToSegmentBitmap);
    const [nx, ny, nz] = [dims[1], dims[2], dims[3]];
    const gl = nv.gl;
    gl.activeTexture(gl.TEXTURE7);
    gl.bindTexture(gl.TEXTURE_3D, nv.drawTexture);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    if (plane === 0) {
      const z = at[2];
      gl.texSubImage3D(gl.TEXTURE_3D, 0, 0, 0, z, nx, ny, 1, gl.RED, gl.UNSIGNED_BYTE, bitmap.subarray(z * nx * ny, (z + 1) * nx * ny));
    } else if (plane === 1) {
      const y = at[1];
      const slab = new Uint8Array(nx * nz);
      for (let z = 0; z < nz; z++) slab.set(bitmap.subarray(z * nx * ny + y * nx, z * nx * ny + (y + 1) * nx), z * nx);
      gl.texSubImage3D(gl.TEXTURE_3D, 0, 0, y, 0, nx, 1, nz, gl.RED, gl.UNSIGNED_BYTE, slab);
    } else {
      const x = at[0];
      const slab = new Uint8Array(ny * nz);
      for (let z = 0; z < nz; z++) for (let y = 0; y < ny; y++) slab[z * ny + y] = bitmap[x + y * nx + z * nx * ny];
      gl.texSubImage3D(gl.TEXTURE_3D, 0, x, 0, 0, 1, ny, nz, gl.RED, gl.UNSIGNED_BYTE, slab);
    }
    if (isForceRedraw) nv.drawScene();
  };
}

async function start() {
  nv = new nvlib.Niivue({
    isColorbar: false,
    dragAndDropEnabled: false,
    multiplanarShowRender: nvlib.SHOW_RENDER.NEVER,
    isRadiologicalConvention: true,
    isForceMouseClickToVoxelCenters: true,
    clipPlaneHotKey: "",
    viewModeHotKey: "",
    backColor: [0, 0, 0, 1],
    crosshairWidth: 1,
    crosshairColor: [0.3, 0.7, 1, 0.8],
    maxDrawUndoBitmaps: 2,
    loadingText: "",
  });
  await nv.attachTo("gl");
  uploadStrokeSliceOnly();
  nv.setMouseEventConfig({
    leftButton: { primary: nvlib.DRAG_MODE.crosshair, withShift: nvlib.DRAG_MODE.crosshair, withCtrl: nvlib.DRAG_MODE.crosshair },
    rightButton: nvlib.DRAG_MODE.windowing,
    centerButton: nvlib.DRAG_MODE.pan,
  });
  nv.onLocationChange = showReadout;
  nv.onDrawingChanged = (action) => {
    if (action === "draw") commit();
  };
  nv.onIntensityChange = (volume) => {
    if (volume !== nv.volumes[0]) return;
    $("level").value = Math.round((volume.cal_min + volume.cal_max) / 2);
    $("width").value = Math.round(volume.cal_max - volume.cal_min);
  };
  window.carinaViewer = { nv, state, voxelAt, goToVoxel, drawingNifti, openImage };

  const canvas = $("gl");
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointerup", onPointerUp);
  document.addEventListener("keydown", onKey);
  $("sign-in-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", signOut);
  $("help-button").addEventListener("click", () => $("help").showModal());
  $("cancel").addEventListener("click", cancel);
  $("search").addEventListener("input", renderWorklist);
  $("next").addEventListener("click", () => nextImage().catch(fail));
  $("run").addEventListener("click", () => runModel().catch(fail));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("save").addEventListener("click", () => save().catch(fail));
  $("approve").addEventListener("click", () => approve().catch(fail));
  $("download").addEventListener("click", () => download().catch(fail));
  $("brush-size").addEventListener("change", () => setTool(state.tool));
  $("fill").addEventListener("change", () => setTool(state.tool));
  $("opacity").addEventListener("input", () => nv.setDrawOpacity(Number($("opacity").value)));
  $("level").addEventListener("change", () => setWindow(Number($("level").value), Number($("width").value)));
  $("width").addEventListener("change", () => setWindow(Number($("level").value), Number($("width").value)));
  $("add-label").addEventListener("click", () => {
    const name = $("new-label").value.trim();
    if (!name) return;
    pickLabel(labelFor(name).value);
    $("new-label").value = "";
  });
  for (const button of document.querySelectorAll("#tool-buttons button")) {
    button.addEventListener("click", () => setTool(button.dataset.tool));
  }
  for (const button of document.querySelectorAll("#presets button")) {
    button.addEventListener("click", () => applyPreset(button.dataset.preset));
  }
  for (const button of document.querySelectorAll("#layouts button")) {
    button.addEventListener("click", () => setLayout(button.dataset.layout));
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    dropFile(event.dataTransfer.files[0]).catch(fail);
  });
  $("file").addEventListener("change", (event) => dropFile(event.target.files[0]).catch(fail).finally(() => (event.target.value = "")));
  window.addEventListener("beforeunload", (event) => {
    if (state.dirty) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
  fillHelp();
  setLayout("multi");

  const auth = await api("auth/");
  state.authEnabled = Boolean(auth.enabled);
  if (state.authEnabled && !state.token) await signIn();
  else {
    try {
      await whoAmI();
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) throw error;
      await signIn(); // a token kept from an earlier visit has expired
    }
  }
  await loadInfo();
  await loadWorklist();
  setTool("navigate");
  updateButtons();
  const wanted = new URLSearchParams(window.location.search).get("image");
  if (wanted && state.objects[wanted]) await openImage(wanted); // a link to one image
  else if (wanted) say(`no image ${wanted} in the datastore`, { error: true });
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  fail(error);
  document.body.dataset.ready = "error";
});
