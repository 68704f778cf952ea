// The page: wires the video source, the frame pump, the stream, the overlay and the HUD to the
// controls, and exposes read-only state on window.holistream for tests.

import { AvatarPanel } from "./avatar.js";
import { DEFAULT_RESOLUTION, RESOLUTIONS, VideoSource, describeSourceError, listCameras } from "./camera.js";
import { FrameEncoder } from "./encoder.js";
import { Hud, stateLabel } from "./hud.js";
import { RateMeter, RollingPercentile } from "./metrics.js";
import { PALETTE, SkeletonOverlay } from "./overlay.js";
import { socketUrl } from "./protocol.js";
import { FrameStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const ui = {
  viewport: $("viewport"),
  video: $("video"),
  canvas: $("overlay"),
  placeholder: $("placeholder"),
  placeholderText: $("placeholder-text"),
  placeholderStart: $("placeholder-start"),
  hud: $("hud"),
  status: $("status"),
  statusText: $("status-text"),
  notice: $("notice"),
  noticeText: $("notice-text"),
  noticeClose: $("notice-close"),
  start: $("start"),
  stop: $("stop"),
  camera: $("camera"),
  resolution: $("resolution"),
  file: $("file"),
  mirror: $("mirror"),
  quality: $("quality"),
  qualityOut: $("quality-out"),
  inFlight: $("in-flight"),
  fps: $("fps"),
  fpsGranted: $("fps-granted"),
  model: $("model"),
};

// --- settings (remembered across visits) -------------------------------------------------

const SETTINGS_KEY = "holistream.settings";
const settings = {
  source: "camera",
  cameraId: "",
  resolution: DEFAULT_RESOLUTION,
  mirror: true,
  quality: 80,
  inFlight: 2,
  fps: 30,
  model: "full",
  layers: { pose: true, hands: true, face: true },
  ...readSettings(),
};

/** The frame rate to ask the server for: the cap, or 60 without one (the grant decides). */
function announcedFps() {
  return settings.fps || 60;
}

function readSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_KEY)) ?? {};
  } catch {
    return {};
  }
}

function saveSettings() {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  } catch {
    // private mode: settings just are not remembered
  }
}

// --- the parts ---------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const stream = new FrameStream({
  // `parts` lets admission control price the session before the upgrade.
  url: socketUrl(location, { parts: "face,hands,pose", token: params.get("token"), stream: params.get("stream") }),
  fps: announcedFps(),
  maxInFlight: settings.inFlight,
});
stream.model = settings.model;
// The avatar view asks for the rig while it is shown (the hello, or a configure on the session).
const avatar = new AvatarPanel({
  mirror: settings.mirror,
  onRigWanted: (rig) => stream.setRig(rig),
  onRecenter: () => stream.configure({ recenter: true }),
  params,
});
const source = new VideoSource(ui.video);
const encoder = new FrameEncoder();
const overlay = new SkeletonOverlay(ui.canvas, ui.video);
const hud = new Hud(ui.hud);
const sentRate = new RateMeter(2000);
const resultRate = new RateMeter(2000);
const latency = new RollingPercentile(3000);

let running = false;
let lastResult = null;
let inferenceMs = null;
const stateLog = [];
const notices = [];

// --- frame pump: capture the newest video picture whenever a credit is free --------------

const pump = {
  videoFrames: 0, // pictures the video has presented
  sentVideoFrame: -1, // the picture last captured
  lastCaptureAt: -Infinity,
  encoding: false,
  callbackId: null,
  timer: null,
};

function watchVideoFrames() {
  unwatchVideoFrames();
  const video = ui.video;
  if ("requestVideoFrameCallback" in video) {
    const onFrame = () => {
      pump.videoFrames++;
      pump.callbackId = video.requestVideoFrameCallback(onFrame);
      sendNextFrame();
    };
    pump.callbackId = video.requestVideoFrameCallback(onFrame);
  } else {
    let lastTime = -1;
    const onTick = () => {
      if (video.currentTime !== lastTime) {
        lastTime = video.currentTime;
        pump.videoFrames++;
        sendNextFrame();
      }
      pump.callbackId = requestAnimationFrame(onTick);
    };
    pump.callbackId = requestAnimationFrame(onTick);
  }
}

function unwatchVideoFrames() {
  if (pump.callbackId === null) return;
  if ("cancelVideoFrameCallback" in ui.video) ui.video.cancelVideoFrameCallback(pump.callbackId);
  else cancelAnimationFrame(pump.callbackId);
  pump.callbackId = null;
}

async function sendNextFrame() {
  const video = ui.video;
  if (!running || pump.encoding || !stream.hasCredit) return;
  if (video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA || !video.videoWidth) return;
  if (pump.videoFrames === pump.sentVideoFrame) return; // this picture already went out
  const now = performance.now();
  // Never faster than granted: the server drops frames beyond its grant (`over_grant`).
  const granted = stream.granted ?? stream.sessionFps;
  const fps = settings.fps > 0 ? Math.min(settings.fps, granted) : granted;
  const minIntervalMs = fps > 0 ? 1000 / fps : 0;
  const wait = pump.lastCaptureAt + minIntervalMs - now;
  if (wait > 2) {
    clearTimeout(pump.timer);
    pump.timer = setTimeout(sendNextFrame, wait);
    return;
  }
  const frameId = stream.reserve();
  if (frameId === null) return;
  pump.encoding = true;
  pump.sentVideoFrame = pump.videoFrames;
  pump.lastCaptureAt = now;
  try {
    encoder.capture(video);
    const jpeg = await encoder.encode(settings.quality / 100);
    if (stream.send(frameId, now, jpeg)) sentRate.mark();
  } catch (error) {
    stream.cancel(frameId);
    showNotice("warning", `A frame could not be encoded: ${error.message}`);
  } finally {
    pump.encoding = false;
  }
  sendNextFrame(); // a credit may be free and a newer picture waiting already
}

// --- stream events -----------------------------------------------------------------------

stream.addEventListener("credit", () => sendNextFrame());

/** The rate the server grants now, shown beside the frame rate control. */
function showGrant(fps) {
  ui.fpsGranted.textContent = fps === null ? "—" : `${fps} fps`;
  ui.fpsGranted.dataset.fps = fps === null ? "" : String(fps);
}
stream.addEventListener("grant", ({ detail }) => showGrant(detail.fps));

stream.addEventListener("result", ({ detail }) => {
  const { result, latencyMs, receivedAt } = detail;
  resultRate.mark(receivedAt);
  if (latencyMs !== null && Number.isFinite(latencyMs)) latency.add(latencyMs, receivedAt);
  const inference = result.timing?.inference_ms;
  if (typeof inference === "number") inferenceMs = inferenceMs === null ? inference : 0.8 * inferenceMs + 0.2 * inference;
  lastResult = result;
  overlay.draw(result); // drawn at once, so lastResult is always what the canvas shows
  avatar.onResult(result, receivedAt);
});

stream.addEventListener("state", ({ detail }) => {
  if (stateLog.at(-1) !== detail.state) stateLog.push(detail.state);
  if (stateLog.length > 50) stateLog.shift();
  if (detail.state === "connected" && ui.notice.dataset.source === "connection") hideNotice();
  if (detail.state !== "connected") overlay.clear();
  renderStatus();
});

stream.addEventListener("problem", ({ detail }) => {
  showNotice(detail.level, detail.text, detail.scope);
});

// --- start / stop ------------------------------------------------------------------------

async function start() {
  if (running) return;
  running = true;
  renderControls();
  ui.placeholderText.textContent = "Starting the camera…";
  ui.placeholderStart.hidden = true;
  stream.start(); // connect while the camera warms up
  try {
    await openSource();
  } catch (error) {
    stop();
    showNotice("error", describeSourceError(error, settings.source), "camera");
    ui.placeholderText.textContent = settings.source === "file" ? "No video file playing" : "No camera picture";
    return;
  }
  watchVideoFrames();
}

async function openSource() {
  if (settings.source === "file") {
    const file = ui.file.files?.[0];
    if (!file) {
      ui.file.focus();
      throw Object.assign(new Error("choose a video file first"), { name: "NoFile" });
    }
    await source.startFile(file);
  } else {
    const resolution = RESOLUTIONS.find((r) => r.id === settings.resolution) ?? RESOLUTIONS[1];
    await source.startCamera({ deviceId: settings.cameraId, width: resolution.width, height: resolution.height });
    await fillCameraList();
  }
  ui.placeholder.hidden = true;
  if (ui.notice.dataset.source === "camera") hideNotice();
}

/** Switches source while running (camera, resolution or file changed). */
async function reopenSource() {
  if (!running) return;
  overlay.clear();
  try {
    await openSource();
    watchVideoFrames();
  } catch (error) {
    showNotice("error", describeSourceError(error, settings.source), "camera");
  }
}

function stop() {
  running = false;
  unwatchVideoFrames();
  clearTimeout(pump.timer);
  stream.stop();
  source.stop();
  overlay.clear();
  lastResult = null;
  inferenceMs = null;
  sentRate.reset();
  resultRate.reset();
  latency.reset();
  avatar.onStop();
  ui.placeholder.hidden = false;
  ui.placeholderStart.hidden = false;
  ui.placeholderText.textContent = "Camera is off";
  renderControls();
  renderStatus();
}

// --- rendering ---------------------------------------------------------------------------

function hudView() {
  const now = performance.now();
  const p50 = latency.percentile(50, now);
  return {
    state: stream.state,
    stateText: stateLabel(stream.state, stream.retry.at, now),
    sentFps: running ? sentRate.rate(now) : 0,
    resultFps: running ? resultRate.rate(now) : 0,
    latencyP50: p50 === null ? null : Math.round(p50),
    inferenceMs: inferenceMs === null || stream.state !== "connected" ? null : Math.round(inferenceMs * 10) / 10,
    dropped: stream.dropped,
    inFlight: stream.inFlight.size,
    maxInFlight: stream.maxInFlight,
    ...avatar.hudFields(now),
  };
}

function renderStatus() {
  const view = hudView();
  hud.render(view);
  avatar.renderHud(view);
  ui.status.dataset.state = view.state;
  // The pill is a live region: the state only, without the ticking retry countdown.
  const pill = stateLabel(view.state);
  if (ui.statusText.textContent !== pill) ui.statusText.textContent = pill;
}

function renderControls() {
  // Keep keyboard focus on the button that now does something.
  const focused = document.activeElement;
  ui.start.disabled = running;
  ui.stop.disabled = !running;
  if (running && (focused === ui.start || focused === ui.placeholderStart)) ui.stop.focus();
  if (!running && focused === ui.stop) ui.start.focus();
  for (const el of document.querySelectorAll("[data-source]")) el.hidden = el.dataset.source !== settings.source;
}

function showNotice(level, text, origin = "frame") {
  notices.push({ level, text, at: Date.now() });
  if (notices.length > 20) notices.shift();
  ui.notice.dataset.level = level;
  ui.notice.dataset.source = origin;
  ui.noticeText.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(showNotice.timer);
  if (level === "warning") showNotice.timer = setTimeout(hideNotice, 6000);
}

function hideNotice() {
  ui.notice.hidden = true;
  delete ui.notice.dataset.source;
}

setInterval(renderStatus, 250);

// --- controls ----------------------------------------------------------------------------

async function fillCameraList() {
  const cameras = await listCameras().catch(() => []);
  const current = source.deviceId ?? settings.cameraId;
  ui.camera.replaceChildren(
    ...(cameras.length ? cameras : [{ deviceId: "", label: "Default camera" }]).map(({ deviceId, label }) => {
      const option = new Option(label, deviceId);
      option.selected = deviceId === current;
      return option;
    }),
  );
}

function applyMirror() {
  ui.mirror.checked = settings.mirror;
  ui.viewport.dataset.mirror = String(settings.mirror);
  overlay.setMirror(settings.mirror);
  avatar.setMirror(settings.mirror);
}

function initControls() {
  ui.resolution.replaceChildren(...RESOLUTIONS.map((r) => new Option(r.label, r.id, false, r.id === settings.resolution)));
  for (const radio of document.querySelectorAll('input[name="source"]')) {
    radio.checked = radio.value === settings.source;
    radio.addEventListener("change", () => {
      settings.source = radio.value;
      saveSettings();
      renderControls();
      if (settings.source === "camera" || ui.file.files?.length) reopenSource();
    });
  }
  ui.camera.addEventListener("change", () => {
    settings.cameraId = ui.camera.value;
    saveSettings();
    reopenSource();
  });
  ui.resolution.addEventListener("change", () => {
    settings.resolution = ui.resolution.value;
    saveSettings();
    reopenSource();
  });
  ui.file.addEventListener("change", () => {
    if (!ui.file.files?.length) return;
    if (running) reopenSource();
    else start();
  });

  ui.mirror.addEventListener("change", () => {
    settings.mirror = ui.mirror.checked;
    saveSettings();
    applyMirror();
  });
  for (const box of document.querySelectorAll("[data-layer]")) {
    box.checked = settings.layers[box.dataset.layer] !== false;
    box.addEventListener("change", () => {
      settings.layers[box.dataset.layer] = box.checked;
      saveSettings();
      overlay.setLayers(settings.layers);
    });
  }
  overlay.setLayers(settings.layers);

  const showQuality = () => (ui.qualityOut.value = `${settings.quality} %`);
  ui.quality.value = String(settings.quality);
  showQuality();
  ui.quality.addEventListener("input", () => {
    settings.quality = Number(ui.quality.value);
    showQuality();
    saveSettings();
  });
  ui.inFlight.value = String(settings.inFlight);
  ui.inFlight.addEventListener("change", () => {
    settings.inFlight = Number(ui.inFlight.value);
    stream.maxInFlight = settings.inFlight;
    saveSettings();
    sendNextFrame();
  });
  ui.model.value = settings.model;
  ui.model.addEventListener("change", () => {
    settings.model = ui.model.value;
    stream.setModel(settings.model);
    saveSettings();
  });
  ui.fps.value = String(settings.fps);
  ui.fps.addEventListener("change", () => {
    settings.fps = Number(ui.fps.value);
    stream.setFps(announcedFps()); // a live session asks for a new grant
    saveSettings();
  });

  ui.start.addEventListener("click", start);
  ui.placeholderStart.addEventListener("click", start);
  ui.stop.addEventListener("click", stop);
  ui.noticeClose.addEventListener("click", hideNotice);

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target.closest?.("input:not([type=checkbox]):not([type=radio]), select, textarea")) return;
    const key = event.key.toLowerCase();
    if (key === "m") {
      settings.mirror = !settings.mirror;
      saveSettings();
      applyMirror();
    } else if (key === "s") {
      if (running) stop();
      else start();
    }
  });

  applyMirror();
  renderControls();
}

// --- test hook ---------------------------------------------------------------------------

window.holistream = Object.freeze({
  get state() {
    return stream.state;
  },
  get running() {
    return running;
  },
  get framesSent() {
    return stream.framesSent;
  },
  get results() {
    return stream.results;
  },
  get dropped() {
    return stream.dropped;
  },
  get latencyP50() {
    return hudView().latencyP50;
  },
  get lastResult() {
    return lastResult;
  },
  get hud() {
    return hudView();
  },
  get mirror() {
    return settings.mirror;
  },
  get session() {
    return stream.session;
  },
  /** The rate the server grants this session now (null before `ready`). */
  get granted() {
    return stream.granted;
  },
  /**
   * Where every frame went. Within a session: framesSent = results + frameErrors +
   * releasedUnanswered + creditsExpired + unanswered.
   */
  get ledger() {
    const { framesSent, results, frameErrors, droppedReported, releasedUnanswered, creditsExpired, unanswered } = stream;
    return { framesSent, results, frameErrors, droppedReported, releasedUnanswered, creditsExpired, unanswered };
  },
  get creditsExpired() {
    return stream.creditsExpired;
  },
  get url() {
    return stream.url;
  },
  /** The avatar view's state and test actions (js/avatar.js). */
  avatar: avatar.hook,
  stateLog,
  notices,
  palette: PALETTE,
  overlayId: ui.canvas.id,
});

initControls();
if (params.get("autostart") !== "0") start();
