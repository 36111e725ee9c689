// Prediction page: draw or upload a digit, POST it to the service exactly as a ModelArts client does.
"use strict";

(function () {
  const INK_WIDTH = 20; // on the 280 px pad: ~2 px strokes once the service scales the digit to 20x20
  const FIELD = "images"; // the multipart field ModelArts' config.json declares
  const serviceUrl = new URL("../", window.location.href).href;
  const previewUrl = new URL("preview", window.location.href).href;
  const modelUrl = new URL("model.json", window.location.href).href;
  // The token lives only in this tab (sessionStorage), never in the page's URL or in a cookie.
  const TOKEN_KEY = "modelarts-mnist.auth-token";

  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const state = { file: null, strokes: 0, drawing: null, busy: false, downloadUrl: null, modelTimer: null };
  window.predictionTimes = []; // performance.now() when each answer was shown (read by tests)

  // ---- drawing -----------------------------------------------------------------------------
  function clearPad() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineWidth = INK_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    state.file = null;
    state.strokes = 0;
    note("Draw one digit, large and centred, or drop an image file on the pad.");
  }

  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    return { x: (event.clientX - box.left) * pad.width / box.width,
             y: (event.clientY - box.top) * pad.height / box.height };
  }

  function startStroke(event) {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    if (state.file) {
      // Ink on top of an upload: from now on the pad, not the file, is sent.
      state.file = null;
      note("Sending the pad (your drawing on top of the uploaded image).");
    }
    const p = padPoint(event);
    ctx.beginPath();
    ctx.arc(p.x, p.y, INK_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
    ctx.beginPath();
    ctx.moveTo(p.x, p.y);
    state.drawing = event.pointerId;
    state.strokes += 1;
  }

  function moveStroke(event) {
    if (state.drawing !== event.pointerId) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const p = padPoint(e);
      ctx.lineTo(p.x, p.y);
    }
    ctx.stroke();
    const last = padPoint(event);
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
  }

  function endStroke(event) {
    if (state.drawing !== event.pointerId) return;
    state.drawing = null;
    note(`Drawing with ${state.strokes} stroke${state.strokes === 1 ? "" : "s"}: press Predict.`);
  }

  // ---- uploads -----------------------------------------------------------------------------
  function useFile(file) {
    if (!file) return;
    clearPad();
    state.file = file;
    note(`Sending the file ${file.name} (${formatBytes(file.size)}) as it is.`);
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.onload = () => { drawContained(image); URL.revokeObjectURL(url); };
    image.onerror = () => {
      URL.revokeObjectURL(url);
      note(`The browser cannot display ${file.name}; sending it to the service anyway.`);
    };
    image.src = url;
    predict();
  }

  function drawContained(image) {
    const scale = Math.min(pad.width / image.naturalWidth, pad.height / image.naturalHeight);
    const w = image.naturalWidth * scale;
    const h = image.naturalHeight * scale;
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }

  // ---- talking to the service --------------------------------------------------------------
  async function currentImage() {
    if (state.file) return { blob: state.file, name: state.file.name || "upload" };
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    return { blob, name: "digit.png" };
  }

  async function send(url, image) {
    const form = new FormData();
    form.append(FIELD, image.blob, image.name);
    const started = performance.now();
    const response = await fetch(url, { method: "POST", body: form, headers: authHeaders() });
    const text = await response.text();
    let body = null;
    try { body = JSON.parse(text); } catch (ignored) { body = null; }
    return { ok: response.ok, status: response.status, body, text,
             detail: response.headers.get("X-Error-Detail"), ms: performance.now() - started };
  }

  async function predict() {
    if (state.busy) return;
    setBusy(true);
    try {
      const image = await currentImage();
      showRequest(image);
      const [answer, preview] = await Promise.all([
        send(serviceUrl, image),
        send(previewUrl, image).catch((error) => ({ ok: false, status: 0, detail: String(error) })),
      ]);
      showAnswer(answer);
      showPreview(preview);
    } catch (error) {
      showError("Could not reach the service", `${error.message || error}. Is it still running?`);
      $("raw").textContent = "(no answer)";
    } finally {
      setBusy(false);
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    $("predict").disabled = busy;
    if (busy) status("Predicting…");
  }

  // ---- showing results ---------------------------------------------------------------------
  function showAnswer(answer) {
    $("raw").textContent = answer.body ? formatJson(answer.body) : answer.text || "(empty body)";
    if (!answer.ok) {
      $("result").hidden = true;
      const [title, reason] = describeError(answer);
      showError(title, reason);
      status(`Prediction failed (HTTP ${answer.status}); the reason is shown below.`);
      return;
    }
    const result = Array.isArray(answer.body) ? answer.body[0] : answer.body;
    if (!result || result.predicted_label === undefined) {
      showError("Unexpected answer", "The service answered 200 without a predicted_label; see the raw JSON.");
      status("Error: unexpected answer");
      return;
    }
    $("error").hidden = true;
    $("digit").textContent = result.predicted_label;
    showBars(Array.isArray(result.scores) ? result.scores.slice(0, 5) : []);
    $("result").hidden = false;
    const top = Array.isArray(result.scores) && result.scores[0] ? ` (probability ${percent(result.scores[0][1])})` : "";
    status(`Predicted digit ${result.predicted_label}${top}, answered in ${Math.round(answer.ms)} ms.`);
    window.predictionTimes.push(performance.now());
    document.body.dataset.predictions = String(window.predictionTimes.length);
  }

  function describeError(answer) {
    const body = answer.body || {};
    const code = body.erno || body.error_code || "";
    const message = body.msg || body.error_msg || "";
    const hints = {
      401: "This service needs an X-Auth-Token: enter it under Options.",
      413: "The file is larger than the service accepts (12 MB).",
      503: "The model is still loading; try again in a moment.",
    };
    const title = `The service refused the request (HTTP ${answer.status}${code ? `, ${code}` : ""}${message ? `: ${message}` : ""})`;
    const reason = answer.detail || hints[answer.status] || "No further detail was given; see the raw JSON below.";
    return [title, reason];
  }

  function showError(title, reason) {
    const box = $("error");
    box.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = title;
    const text = document.createElement("span");
    text.textContent = reason;
    box.append(strong, text);
    box.hidden = false;
  }

  function showBars(scores) {
    const list = $("bars");
    list.replaceChildren();
    for (const [label, probability] of scores) {
      const value = Math.max(0, Math.min(1, Number(probability) || 0));
      const item = document.createElement("li");
      item.setAttribute("aria-label", `digit ${label}: ${percent(probability)}`);
      const track = span("track", "");
      track.setAttribute("aria-hidden", "true");
      const fill = span("fill", "");
      fill.style.width = `${(value * 100).toFixed(1)}%`; // a CSSOM property: allowed by style-src 'self'
      track.append(fill);
      item.append(span("name", label), track, span("value", percent(probability)));
      list.append(item);
    }
  }

  function showPreview(preview) {
    const seen = $("seen");
    const first = preview.ok && preview.body && preview.body.images && preview.body.images[0];
    if (first) {
      seen.src = first.png;
      seen.hidden = false;
      $("seen-caption").textContent = "What the model saw: 28×28 after the service's preprocessing (enlarged).";
    } else {
      seen.removeAttribute("src");
      seen.hidden = true;
      $("seen-caption").textContent = `The preprocessed 28×28 image is not available${preview.detail ? `: ${preview.detail}` : "."}`;
    }
  }

  function showRequest(image) {
    if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
    state.downloadUrl = URL.createObjectURL(image.blob);
    const link = $("download");
    link.href = state.downloadUrl;
    link.download = image.name;
    link.hidden = false;
    const token = currentToken() ? " -H 'X-Auth-Token: <your token>'" : "";
    $("curl").textContent = `curl -X POST${token} -F ${shellQuote(`${FIELD}=@${image.name}`)} ${serviceUrl}`;
  }

  // ---- model description -------------------------------------------------------------------
  async function loadModel() {
    window.clearTimeout(state.modelTimer); // one poll at a time, however often the token changes
    try {
      const response = await fetch(modelUrl, { headers: authHeaders() });
      if (response.status === 401) {
        askForToken();
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const info = await response.json();
      showModel(info);
      // The service loads its model in the background; ask again until it is ready.
      if (info.ready === false) state.modelTimer = window.setTimeout(loadModel, 1000);
    } catch (error) {
      $("model-summary").textContent = `Model information unavailable (${error.message || error}).`;
      $("model").replaceChildren();
    }
  }

  function showModel(info) {
    const version = info.version || "unversioned folder";
    const parts = [`Serving ${info.model_name || "model"} ${version}${info.ready === false ? " (still loading)" : ""}`];
    if (info.signature && info.signature.name) parts.push(`signature ${info.signature.name}`);
    if (info.engine) parts.push(`answered by ${describeEngine(info.engine)}`);
    if (info.metrics && typeof info.metrics.accuracy === "number") parts.push(`accuracy ${percent(info.metrics.accuracy)}`);
    $("model-summary").textContent = parts.join(" · ");
    const rows = [
      ["Model", info.model_name], ["Version", version], ["Folder", info.model_dir],
      ["Type", [info.model_type, info.model_algorithm].filter(Boolean).join(", ")],
      ["Runtime", info.runtime], ["Answered by", describeEngine(info.engine)],
      ["Signature", describeSignature(info.signature)],
      ["Metrics", describeMetrics(info.metrics)], ["config.json", info.config_problem],
    ];
    const list = $("model");
    list.replaceChildren();
    for (const [name, value] of rows) {
      if (!value) continue;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      list.append(dt, dd);
    }
  }

  function describeEngine(engine) {
    if (!engine) return "";
    const where = engine.runtime === "local" ? "this process (local TensorFlow)" : `engine ${engine.runtime}`;
    const versions = [["Python", engine.python], ["TensorFlow", engine.tensorflow]]
      .filter(([, v]) => v).map(([n, v]) => `${n} ${v}`).join(", ");
    return versions ? `${where}: ${versions}` : where;
  }

  function describeSignature(signature) {
    if (!signature) return "";
    const tensors = (group) => Object.entries(group || {})
      .map(([name, t]) => `${name} ${t.dtype || ""} [${(t.shape || []).map((d) => (d === null ? "None" : d)).join(", ")}]`)
      .join(", ");
    return `${signature.name || "?"}: ${tensors(signature.inputs)} → ${tensors(signature.outputs)}`;
  }

  function describeMetrics(metrics) {
    return Object.entries(metrics || {})
      .map(([name, value]) => `${name} ${typeof value === "number" ? value.toFixed(4) : value}`)
      .join(", ");
  }

  // ---- the service's token ------------------------------------------------------------------
  function currentToken() { return $("token").value.trim(); }
  function authHeaders() {
    const token = currentToken();
    return token ? { "X-Auth-Token": token } : {};
  }

  function askForToken() {
    const summary = currentToken() ? "The X-Auth-Token entered under Options is not the service's"
      : "This service needs an X-Auth-Token: enter it under Options";
    $("model-summary").textContent = `${summary} (the service was started with --auth-token).`;
    $("model").replaceChildren();
    $("options").closest("details").open = true;
  }

  function useToken() {
    const token = currentToken();
    try {
      if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (ignored) { /* storage disabled: the token still works until the tab closes */ }
    loadModel();
  }

  function restoreToken() {
    try { $("token").value = window.sessionStorage.getItem(TOKEN_KEY) || ""; } catch (ignored) { /* none */ }
  }

  // ---- small helpers -----------------------------------------------------------------------
  function note(text) { $("source-note").textContent = text; }
  function span(className, text) {
    const element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }
  function status(text) { $("status").textContent = text; }
  function percent(value) { return `${(Number(value) * 100).toFixed(1)}%`; }
  function formatBytes(n) { return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KB`; }
  function formatJson(value, indent = "") {
    // Indented like JSON.stringify(value, null, 2), but arrays of plain values such as ["7", "0.982"] stay on one line.
    if (value === null || typeof value !== "object") return JSON.stringify(value);
    const flat = Array.isArray(value) && value.every((item) => item === null || typeof item !== "object");
    if (flat) return JSON.stringify(value);
    const inner = `${indent}  `;
    const items = Array.isArray(value)
      ? value.map((item) => inner + formatJson(item, inner))
      : Object.entries(value).map(([key, item]) => `${inner}${JSON.stringify(key)}: ${formatJson(item, inner)}`);
    const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    return items.length ? `${open}\n${items.join(",\n")}\n${indent}${close}` : `${open}${close}`;
  }
  function shellQuote(text) { return `'${text.replace(/'/g, "'\\''")}'`; }

  // ---- wiring ------------------------------------------------------------------------------
  pad.addEventListener("pointerdown", startStroke);
  pad.addEventListener("pointermove", moveStroke);
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  // touch-action: none stops scrolling, but Chromium still runs its gesture detector on the stroke and
  // then swallows the next tap (on Predict); cancelling the touch events themselves prevents that.
  for (const type of ["touchstart", "touchmove", "touchend"]) {
    pad.addEventListener(type, (event) => event.preventDefault(), { passive: false });
  }
  $("clear").addEventListener("click", () => { clearPad(); $("file").value = ""; });
  $("predict").addEventListener("click", predict);
  $("options").addEventListener("submit", (event) => { event.preventDefault(); useToken(); predict(); });
  $("token").addEventListener("change", useToken);
  $("file").addEventListener("change", (event) => useFile(event.target.files[0]));
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
  restoreToken();
  clearPad();
  loadModel();
})();
