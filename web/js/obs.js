// The OBS view (web/obs.html): one named stream's avatar on a transparent or chroma background,
// nothing else on the page, for an OBS browser source.
//
//   /obs.html?stream=NAME[&vrm=URL][&bg=transparent|green|blue|magenta|RRGGBB]
//             [&framing=upper|face|full][&mirror=0][&token=T]
//
// It subscribes to the stream with the rig (`/ws/subscribe`), poses the VRM given by `vrm`, else
// the one last loaded on the demo page in this browser (remembered), else the mannequin; when the
// stream ends or results stop it eases the avatar to its neutral pose, and it reconnects by itself.

import { isTracking, mapRig, neutralRig, PoseTrack } from "./avatar-rig.js";
import { BACKGROUNDS } from "./avatar.js";
import { rememberedVrm } from "./vrm-store.js";

const PROTOCOL_VERSION = 1;
const MANNEQUIN_URL = "assets/mannequin.vrm";
const LOST_MS = 1000;
const FADE_MS = 500;
const RETRY_MS = [500, 1000, 2000, 5000, 10000];

const params = new URLSearchParams(location.search);
const problem = document.getElementById("obs-problem");
const state = {
  stream: params.get("stream") ?? "",
  mirror: params.get("mirror") !== "0",
  framing: ["upper", "face", "full"].includes(params.get("framing")) ? params.get("framing") : "upper",
  background: background(params.get("bg")),
  connection: "idle",
  results: 0,
  ready: false,
  model: null,
  tracking: "idle",
  lastRig: null,
  lastAt: 0,
  problem: null,
  messages: {}, // message type → how many came
};

function background(value) {
  if (!value || value === "transparent") return "transparent";
  if (value in BACKGROUNDS) return BACKGROUNDS[value];
  const hex = value.replace(/^#/, "");
  return /^[0-9a-f]{6}$/i.test(hex) ? `#${hex}` : "transparent";
}

function say(text) {
  state.problem = text;
  problem.hidden = !text;
  problem.textContent = text ?? "";
}

let scene = null;
const track = new PoseTrack();

async function start() {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(state.stream)) {
    say("Name the stream to show: add ?stream=NAME to this page's address (letters, digits, . _ -).");
    return;
  }
  const [{ AvatarScene }, loader] = await Promise.all([import("./avatar-scene.js"), import("./avatar-loader.js")]);
  try {
    scene = new AvatarScene(document.getElementById("obs-canvas"), { transparent: state.background === "transparent" });
  } catch (error) {
    say(`This browser cannot draw the avatar (WebGL 2 is off or unavailable): ${error.message}.`);
    return;
  }
  scene.setBackground(state.background);
  scene.setFraming(state.framing);
  const resize = () => scene.resize(window.innerWidth, window.innerHeight);
  window.addEventListener("resize", resize);
  resize();
  await loadModel(loader);
  scene.renderer.setAnimationLoop(draw);
  connect(0);
  setInterval(watch, 200);
}

async function loadModel(loader) {
  const url = params.get("vrm");
  const kept = url ? null : await rememberedVrm();
  const attempts = [
    url && (() => loader.fetchVrm(url)),
    kept && (() => loader.parseVrm(kept.bytes, kept.name)),
    () => loader.fetchVrm(MANNEQUIN_URL),
  ].filter(Boolean);
  for (const attempt of attempts) {
    try {
      const loaded = await attempt();
      scene.setModel(loaded);
      state.model = { title: loaded.title, vrmVersion: loaded.version, fileName: loaded.fileName };
      state.ready = true;
      return;
    } catch (error) {
      say(error?.message ?? String(error)); // then the next choice; the mannequin at the last
    }
  }
}

function map(rig) {
  return mapRig(rig, {
    mirror: state.mirror,
    vrmVersion: state.model?.vrmVersion ?? "1.0",
    has: (bone) => scene?.hasBone(bone) ?? true,
  });
}

function connect(attempt) {
  const url = new URL("/ws/subscribe", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("stream", state.stream);
  if (params.get("token")) url.searchParams.set("token", params.get("token"));
  const socket = new WebSocket(url);
  state.connection = "connecting";
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, format: "json", rig: true }));
  };
  socket.onmessage = ({ data }) => {
    if (typeof data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    state.messages[msg.type] = (state.messages[msg.type] ?? 0) + 1;
    if (msg.type === "ready") {
      state.connection = "connected";
      attempt = 0;
      if (state.problem && state.ready) say(null);
    } else if (msg.type === "result" && msg.rig) {
      onRig(msg.rig);
    } else if (msg.type === "stream_ended") {
      lose();
    } else if (msg.type === "error" && msg.fatal && ["unauthorized", "bad_hello"].includes(msg.code)) {
      say(`The server refused: ${msg.message}`);
    }
  };
  socket.onclose = () => {
    state.connection = "retrying";
    lose();
    setTimeout(() => connect(attempt + 1), RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
  };
}

function onRig(rig) {
  const now = performance.now();
  state.results++;
  state.lastRig = rig;
  state.lastAt = now;
  state.tracking = isTracking(rig) ? "tracking" : "nobody";
  if (scene?.model) track.push(map(rig), now);
}

/** Results stopped: ease to the neutral pose (arms down, a neutral face). */
function lose() {
  if (!state.lastRig || state.tracking === "lost") return;
  state.tracking = "lost";
  if (scene?.model) track.fade(map(neutralRig(state.lastRig)), FADE_MS);
}

function watch() {
  const patience = Math.max(LOST_MS, 3 * track.intervalMs); // a slow stream is not a lost one
  if (state.tracking !== "lost" && state.lastRig && performance.now() - state.lastAt > patience) lose();
}

let lastDraw = null;
function draw() {
  const now = performance.now();
  if (lastDraw !== null && now - lastDraw < scene.minFrameMs) return;
  const deltaS = lastDraw === null ? 0 : Math.min(0.1, (now - lastDraw) / 1000);
  lastDraw = now;
  scene.applyPose(track.sample(now));
  scene.render(deltaS);
}

/** Read-only state for tests: window.holistreamObs. */
window.holistreamObs = {
  get state() {
    const { lastRig, ...rest } = state;
    return { ...rest, hasRig: Boolean(lastRig) };
  },
  get bones() {
    return scene?.appliedBones() ?? {};
  },
  bonePosition(name) {
    return scene?.bonePosition(name) ?? null;
  },
};

start().catch((error) => say(`The avatar view could not start: ${error?.message ?? error}`));
