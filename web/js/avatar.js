// The avatar view: a VRM beside (or instead of) the skeleton view, moved by the server's rig.
//
// The view is off by default; three.js and three-vrm load only when it is first shown. While it
// is shown the page asks the server for the rig (`"rig": true` in its hello, or a `configure`
// on the live session). Each result's rig goes through avatar-rig.js (names, frames, mirror)
// into a PoseTrack, and every animation frame draws the interpolated pose. When results stop
// (the stream stopped, the connection dropped, the producer stalled) the avatar eases to the
// rig's neutral pose and the view says tracking is lost.

import { isTracking, mapRig, neutralRig, PoseTrack } from "./avatar-rig.js";
import { Hud } from "./hud.js";
import { forgetVrm, rememberedVrm, rememberVrm } from "./vrm-store.js";
import { RateMeter } from "./metrics.js";

export const VIEWS = Object.freeze(["skeleton", "both", "avatar"]);
const FRAMINGS = Object.freeze(["full", "upper", "face"]);
/** Background presets; `custom` is the colour picker's. */
export const BACKGROUNDS = Object.freeze({
  studio: "#1b2334",
  green: "#00ff00",
  blue: "#0000ff",
  magenta: "#ff00ff",
});
const MANNEQUIN_URL = "assets/mannequin.vrm";
const MAX_FILE_BYTES = 256 * 1024 * 1024;
const SETTINGS_KEY = "holistream.avatar";
// How long the scene keeps drawing after the last change (spring bones settle meanwhile).
const AWAKE_MS = 2500;
// No result for this long while streaming: tracking is lost; the ease to neutral takes FADE_MS.
const LOST_MS = 1000;
const FADE_MS = 500;
const LEGS = Object.freeze(["auto", "seated", "standing"]);

const $ = (id) => document.getElementById(id);

export class AvatarPanel {
  #scene = null; // AvatarScene, once started
  #sceneReady = null; // Promise of the scene
  #starting = null; // Promise of the scene and the mannequin
  #loadSeq = 0;
  #awakeUntil = 0;
  #lastRender = null;
  #hook = null;

  /**
   * @param {{mirror: boolean, onRigWanted: (rig: false | object) => void, onRecenter?: () => boolean,
   *          params?: URLSearchParams}} options
   */
  constructor({ mirror, onRigWanted, onRecenter = () => false, params = new URLSearchParams() }) {
    this.ui = {
      stage: $("stage"),
      viewport: $("avatar-viewport"),
      canvas: $("avatar-canvas"),
      hud: $("avatar-hud"),
      status: $("avatar-status"),
      message: $("avatar-message"),
      messageText: $("avatar-message-text"),
      messageClose: $("avatar-message-close"),
      drop: $("avatar-drop"),
      background: $("avatar-background"),
      colour: $("avatar-colour"),
      file: $("avatar-file"),
      mannequin: $("avatar-mannequin"),
      modelName: $("avatar-model"),
      tracking: $("avatar-tracking"),
      recenter: $("avatar-recenter"),
      legs: $("avatar-legs"),
    };
    this.onRigWanted = onRigWanted;
    this.onRecenter = onRecenter;
    this.mirror = mirror;
    this.settings = { view: "skeleton", framing: "upper", background: "studio", colour: "#00ff00", legs: "auto", ...readSettings() };
    if (!LEGS.includes(this.settings.legs)) this.settings.legs = "auto";
    // Address parameters choose without being remembered: ?view=avatar&framing=full&bg=green
    if (VIEWS.includes(params.get("view"))) this.settings.view = params.get("view");
    if (FRAMINGS.includes(params.get("framing"))) this.settings.framing = params.get("framing");
    const bg = params.get("bg");
    if (bg && (bg in BACKGROUNDS || /^#[0-9a-f]{6}$/i.test(bg))) {
      Object.assign(this.settings, bg in BACKGROUNDS ? { background: bg } : { background: "custom", colour: bg });
    }

    this.hud = new Hud(this.ui.hud);
    this.track = new PoseTrack();
    /** {state: "idle" | "tracking" | "nobody" | "lost", text} */
    this.tracking = { state: "idle", text: "" };
    this.mouthLog = null; // [{t, rendered, server, lipGap}] while recording
    this.rigRate = new RateMeter(2000);
    this.rigSolveMs = null;
    this.rigResults = 0;
    /** @type {{frame: number, rig: object, receivedAt: number} | null} */
    this.lastRig = null;
    this.model = null; // {title, vrmVersion, source, fileName}
    this.message = null; // {level, text}
    this.webgl2 = null;
    this.framesDrawn = 0;

    this.#initControls();
    this.#applyView();
    setInterval(() => this.#watch(), 200);
  }

  /** True while the avatar is shown: the server should send the rig. */
  get wantsRig() {
    return this.settings.view !== "skeleton";
  }

  setView(view) {
    if (!VIEWS.includes(view) || view === this.settings.view) return;
    this.settings.view = view;
    this.#save();
    this.#applyView();
  }

  /** The skeleton view's Mirror switch: the avatar then moves like the person's mirror image. */
  setMirror(mirror) {
    if (mirror === this.mirror) return;
    this.mirror = mirror;
    this.#scene?.setHandColoursSwapped(mirror);
    if (this.lastRig) this.#pushRig(this.lastRig.rig, performance.now()); // glide over
    this.#wake(200);
  }

  /** A result from the stream (rig or not). */
  onResult(result, receivedAt = performance.now()) {
    const rig = result?.rig;
    if (!rig || typeof rig !== "object") return;
    this.rigResults++;
    this.rigRate.mark(receivedAt);
    if (typeof rig.solve_ms === "number") {
      this.rigSolveMs = this.rigSolveMs === null ? rig.solve_ms : 0.8 * this.rigSolveMs + 0.2 * rig.solve_ms;
    }
    this.lastRig = { frame: result.frame, rig, receivedAt, lipGap: lipGap(result.face) };
    this.#pushRig(rig, receivedAt);
    if (isTracking(rig)) this.#setTracking("tracking", "");
    else this.#setTracking("nobody", "No one in view: the avatar rests");
  }

  /** The stream stopped: the rates start over; the avatar eases to its neutral pose. */
  onStop() {
    this.rigRate.reset();
    this.rigSolveMs = null;
    this.#lose("The stream stopped: the avatar rests");
  }

  /** Take the current pose as neutral (head straight ahead, position centred). */
  recenter() {
    const sent = this.onRecenter();
    this.#flash(sent ? "Re-centred: this pose is now straight ahead" : "Start the camera to re-centre");
    return sent;
  }

  /** What unseen legs do: "auto", "seated" or "standing" (asked of the server's rig). */
  setLegs(legs) {
    if (!LEGS.includes(legs) || legs === this.settings.legs) return;
    this.settings.legs = legs;
    this.#save();
    if (this.ui.legs) this.ui.legs.value = legs;
    this.onRigWanted(this.#rigOptions());
  }

  #rigOptions() {
    return this.wantsRig ? { legs: this.settings.legs } : false;
  }

  /** Results stopped coming while they were: tracking is lost. */
  #watch() {
    const last = this.lastRig;
    if (!last || this.tracking.state === "lost" || this.tracking.state === "idle") return;
    // A slow stream (a busy server, a phone) is not a lost one: wait for a few of its intervals.
    const patience = Math.max(LOST_MS, 3 * this.track.intervalMs);
    if (performance.now() - last.receivedAt > patience) this.#lose("Tracking lost: no results came");
  }

  /** Eases the avatar to the rig's neutral pose (arms down, neutral face) and says why. */
  #lose(text) {
    if (this.tracking.state === "lost" || !this.lastRig) return;
    this.#setTracking("lost", text);
    if (!this.#scene?.model) return;
    this.track.fade(this.#map(neutralRig(this.lastRig.rig)), FADE_MS);
    this.#wake(FADE_MS + 500);
  }

  #setTracking(state, text) {
    this.tracking = { state, text };
    const el = this.ui.tracking;
    if (!el) return;
    el.hidden = !text;
    el.dataset.state = state;
    if (el.textContent !== text) el.textContent = text;
  }

  #flash(text) {
    const el = this.ui.tracking;
    if (!el) return;
    const before = { ...this.tracking };
    this.#setTracking(before.state, text);
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => {
      if (this.ui.tracking.textContent === text) this.#setTracking(this.tracking.state, before.text);
    }, 2500);
  }

  /** The avatar's part of the HUD. */
  hudFields(now = performance.now()) {
    return {
      rig: this.wantsRig,
      rigFps: this.rigRate.rate(now),
      rigSolveMs: this.rigSolveMs === null ? null : Math.round(this.rigSolveMs * 100) / 100,
    };
  }

  renderHud(view) {
    this.hud.render(view);
  }

  /** Loads the user's own VRM (from the file picker or a drop). It never leaves the browser. */
  async loadFile(file) {
    if (!file) return;
    if (this.settings.view === "skeleton") this.setView("both");
    if (file.size > MAX_FILE_BYTES) {
      this.#showMessage("error", `${file.name} is ${Math.round(file.size / 2 ** 20)} MB: too big for a VRM avatar here.`);
      return;
    }
    let bytes = null;
    const loaded = await this.#loadModel(
      async (loader) => loader.parseVrm((bytes = await file.arrayBuffer()), file.name),
      { source: "file", fileName: file.name },
    );
    // Remembered for the OBS view (web/obs.html) in this browser; never uploaded.
    if (loaded && bytes) rememberVrm(file.name, bytes).catch(() => {});
  }

  loadMannequin({ keepMessage = false, forget = true } = {}) {
    if (forget) forgetVrm().catch(() => {});
    return this.#loadModel((loader) => loader.fetchVrm(MANNEQUIN_URL), {
      source: "mannequin",
      fileName: "mannequin.vrm",
      keepMessage,
    });
  }

  // --- the scene ---------------------------------------------------------------------------

  /** Loads three.js and the mannequin the first time the avatar is shown. */
  #start() {
    this.#starting ??= this.#createScene().then(async () => {
      const kept = await rememberedVrm();
      if (kept) {
        const ok = await this.#loadModel((loader) => loader.parseVrm(kept.bytes, kept.name), {
          source: "file",
          fileName: kept.name,
        });
        if (ok) return;
      }
      await this.loadMannequin({ forget: false });
    });
    this.#starting.catch((error) => console.warn("avatar view:", error));
    return this.#starting;
  }

  /** The three.js scene, made once (three.js and three-vrm are imported then). */
  #createScene() {
    this.#sceneReady ??= (async () => {
      this.#setStatus("Loading the avatar…");
      let modules;
      try {
        modules = await Promise.all([import("./avatar-scene.js"), import("./avatar-loader.js")]);
      } catch (error) {
        this.#setStatus(
          "The avatar view needs three.js and three-vrm in web/node_modules (run scripts/setup, or npm ci in web/).",
        );
        throw error;
      }
      const [{ AvatarScene }, loader] = modules;
      this.loader = loader;
      try {
        this.#scene = new AvatarScene(this.ui.canvas);
      } catch (error) {
        this.webgl2 = false;
        this.#setStatus(`This browser cannot draw the avatar (WebGL 2 is off or unavailable): ${error.message}.`);
        throw error;
      }
      this.webgl2 = this.#scene.webgl2;
      this.#scene.setFraming(this.settings.framing);
      this.#scene.setHandColoursSwapped(this.mirror);
      this.#scene.setBackground(this.#backgroundColour());
      new ResizeObserver(() => this.#resize()).observe(this.ui.viewport);
      this.ui.canvas.addEventListener("webglcontextlost", (event) => {
        event.preventDefault();
        this.#setStatus("The graphics context was lost; reload the page to get the avatar back.");
      });
      this.#applyView();
    })();
    return this.#sceneReady;
  }

  async #loadModel(load, info) {
    const seq = ++this.#loadSeq;
    try {
      await this.#createScene().catch(() => {});
      if (!this.#scene) return; // the view could not start; it says why
      if (!this.#scene.model) this.#setStatus("Loading the avatar…");
      const loaded = await load(this.loader);
      if (seq !== this.#loadSeq) {
        this.loader.disposeScene(loaded.vrm.scene); // a later load won
        return;
      }
      this.#scene.setModel(loaded);
      this.model = { title: loaded.title, vrmVersion: loaded.version, source: info.source, fileName: info.fileName };
      this.#setStatus(null);
      if (!info.keepMessage) this.#hideMessage();
      this.ui.modelName.textContent = `${loaded.title} · VRM ${loaded.version}`;
      this.ui.mannequin.disabled = info.source === "mannequin";
      // The new model takes the current pose at once.
      if (this.lastRig) this.track.snap(this.#map(this.lastRig.rig));
      else this.track.reset();
      this.#wake();
      return true;
    } catch (error) {
      if (seq !== this.#loadSeq) return;
      const text =
        error?.name === "VrmLoadError" ? error.message : `${info.fileName} could not be loaded: ${error?.message ?? error}`;
      const kept = this.#scene?.model ? ` Still showing ${this.model?.title ?? "the previous avatar"}.` : "";
      this.#showMessage("error", text + kept);
      if (this.#scene?.model) return;
      this.#setStatus("No avatar loaded.");
      if (info.source !== "mannequin") this.loadMannequin({ keepMessage: true, forget: false }); // something to show
    } finally {
      if (this.ui.file) this.ui.file.value = "";
    }
  }

  #map(rig) {
    return mapRig(rig, {
      mirror: this.mirror,
      vrmVersion: this.model?.vrmVersion ?? "1.0",
      has: (bone) => this.#scene?.hasBone(bone) ?? true,
    });
  }

  #pushRig(rig, now) {
    if (!this.#scene?.model) return; // applied when the model is in
    this.track.push(this.#map(rig), now);
    this.#wake();
  }

  #wake(ms = AWAKE_MS) {
    this.#awakeUntil = Math.max(this.#awakeUntil, performance.now() + ms);
  }

  #tick = () => {
    const now = performance.now();
    const deltaS = this.#lastRender === null ? 0 : Math.min(0.1, (now - this.#lastRender) / 1000);
    if (!this.#scene?.model || now > this.#awakeUntil) return; // nothing moves: draw nothing
    if (now - this.#lastRender < this.#scene.minFrameMs) return;
    this.#lastRender = now;
    this.#scene.applyPose(this.track.sample(now));
    this.#scene.render(deltaS);
    this.framesDrawn++;
    if (this.mouthLog && this.lastRig) {
      this.mouthLog.push({
        t: now,
        rendered: this.#scene.mouthOpening(),
        server: this.lastRig.rig.expressions?.A ?? 0,
        lipGap: this.lastRig.lipGap,
      });
    }
  };

  #resize() {
    if (!this.#scene) return;
    const { width, height } = this.ui.viewport.getBoundingClientRect();
    this.#scene.resize(Math.round(width), Math.round(height));
    this.#wake(200);
  }

  #applyView() {
    const { view } = this.settings;
    this.ui.stage.dataset.view = view;
    this.ui.viewport.hidden = view === "skeleton";
    for (const radio of document.querySelectorAll('input[name="view"]')) radio.checked = radio.value === view;
    this.onRigWanted(this.#rigOptions());
    if (view === "skeleton") {
      this.#scene?.renderer.setAnimationLoop(null);
      return;
    }
    if (!this.#scene) {
      this.#start();
      return; // #createScene comes back here
    }
    this.#lastRender = null;
    this.#scene.renderer.setAnimationLoop(this.#tick);
    this.#resize();
    this.#wake();
  }

  #backgroundColour() {
    const { background, colour } = this.settings;
    return background === "custom" ? colour : (BACKGROUNDS[background] ?? BACKGROUNDS.studio);
  }

  #setStatus(text) {
    this.ui.status.hidden = !text;
    this.ui.status.textContent = text ?? "";
  }

  #showMessage(level, text) {
    this.message = { level, text };
    this.ui.message.dataset.level = level;
    this.ui.messageText.textContent = text;
    this.ui.message.hidden = false;
  }

  #hideMessage() {
    this.message = null;
    this.ui.message.hidden = true;
  }

  #save() {
    const { view, framing, background, colour, legs } = this.settings;
    try {
      localStorage.setItem(SETTINGS_KEY, JSON.stringify({ view, framing, background, colour, legs }));
    } catch {
      // private mode: not remembered
    }
  }

  // --- controls ----------------------------------------------------------------------------

  #initControls() {
    const { ui, settings } = this;
    for (const radio of document.querySelectorAll('input[name="view"]')) {
      radio.addEventListener("change", () => radio.checked && this.setView(radio.value));
    }
    for (const radio of document.querySelectorAll('input[name="framing"]')) {
      radio.checked = radio.value === settings.framing;
      radio.addEventListener("change", () => {
        if (!radio.checked) return;
        settings.framing = radio.value;
        this.#save();
        this.#scene?.setFraming(settings.framing);
        this.#wake(200);
      });
    }
    ui.background.value = settings.background;
    ui.colour.value = settings.colour;
    ui.colour.hidden = settings.background !== "custom";
    const applyBackground = () => {
      ui.colour.hidden = settings.background !== "custom";
      ui.viewport.style.setProperty("--avatar-bg", this.#backgroundColour());
      this.#scene?.setBackground(this.#backgroundColour());
      this.#wake(200);
    };
    ui.background.addEventListener("change", () => {
      settings.background = ui.background.value;
      this.#save();
      applyBackground();
    });
    ui.colour.addEventListener("input", () => {
      settings.colour = ui.colour.value;
      this.#save();
      applyBackground();
    });
    applyBackground();

    ui.recenter?.addEventListener("click", () => this.recenter());
    if (ui.legs) {
      ui.legs.value = settings.legs;
      ui.legs.addEventListener("change", () => this.setLegs(ui.legs.value));
    }
    ui.file.addEventListener("change", () => this.loadFile(ui.file.files?.[0]));
    ui.mannequin.addEventListener("click", () => this.loadMannequin());
    ui.messageClose.addEventListener("click", () => this.#hideMessage());

    // Drag and drop: onto the avatar, or a .vrm anywhere on the page.
    const carriesFiles = (event) => event.dataTransfer?.types?.includes("Files");
    ui.viewport.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      ui.drop.hidden = false;
    });
    ui.viewport.addEventListener("dragleave", (event) => {
      if (!ui.viewport.contains(event.relatedTarget)) ui.drop.hidden = true;
    });
    document.addEventListener("dragover", (event) => {
      if (carriesFiles(event)) event.preventDefault(); // no navigating away to a dropped file
    });
    document.addEventListener("drop", (event) => {
      const file = event.dataTransfer?.files?.[0];
      ui.drop.hidden = true;
      if (!file) return;
      const onAvatar = ui.viewport.contains(event.target);
      if (!onAvatar && !/\.(vrm|glb)$/i.test(file.name)) return;
      event.preventDefault();
      this.loadFile(file);
    });

    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
      if (event.target.closest?.("input:not([type=checkbox]):not([type=radio]), select, textarea")) return;
      if (event.key.toLowerCase() === "v") {
        this.setView(VIEWS[(VIEWS.indexOf(this.settings.view) + 1) % VIEWS.length]);
      }
    });
  }

  // --- test hook ---------------------------------------------------------------------------

  /** Read-only state and a few test actions, as window.holistream.avatar. */
  get hook() {
    const panel = this;
    this.#hook ??= Object.freeze({
      get view() {
        return panel.settings.view;
      },
      get framing() {
        return panel.settings.framing;
      },
      get background() {
        return panel.#backgroundColour();
      },
      get mirror() {
        return panel.mirror;
      },
      /** WebGL 2 in use (null until the view has started). */
      get webgl2() {
        return panel.webgl2;
      },
      /** {name, software}: what draws WebGL (software: no multisampling, at most 30 fps). */
      get renderer() {
        const scene = panel.#scene;
        return scene ? { name: scene.rendererName, software: scene.software } : null;
      },
      get ready() {
        return Boolean(panel.#scene?.model);
      },
      /** {title, vrmVersion: "1.0" | "0.x", source: "mannequin" | "file", fileName} */
      get model() {
        return panel.model;
      },
      get message() {
        return panel.message;
      },
      /** Normalized bone rotations on the model now, [x, y, z, w] (three-vrm frame). */
      get bones() {
        return panel.#scene?.appliedBones() ?? {};
      },
      get expressions() {
        return { ...(panel.#scene?.expressionValues ?? {}) };
      },
      /** The pose being moved to (mapped from the last rig). */
      get target() {
        return panel.track.to;
      },
      /** The last rig received, with its frame id. */
      get lastRig() {
        return panel.lastRig;
      },
      get rigResults() {
        return panel.rigResults;
      },
      /** Frames drawn so far (only while something moves). */
      get framesDrawn() {
        return panel.framesDrawn;
      },
      /** Hands the page holds in an earlier pose: none (the server's rig does that now). */
      get held() {
        return [];
      },
      /** {state: "idle" | "tracking" | "nobody" | "lost", text}: what the view says. */
      get tracking() {
        return { ...panel.tracking };
      },
      get legs() {
        return panel.settings.legs;
      },
      /** Starts logging, per frame drawn: the avatar's mouth, the server's A and the lip gap. */
      startMouthLog() {
        panel.mouthLog = [];
      },
      /** Stops logging and returns the log. */
      stopMouthLog() {
        const log = panel.mouthLog ?? [];
        panel.mouthLog = null;
        return log;
      },
      /**
       * Everything above at one instant: the pose due now is put on the model first (as the
       * next frame would), so `bones` lies between `from` (the pose when the last rig came) and
       * `target` (that rig, mapped).
       */
      snapshot() {
        const now = performance.now();
        if (panel.#scene?.model) panel.#scene.applyPose(panel.track.sample(now));
        return {
          frame: panel.lastRig?.frame ?? null,
          rig: panel.lastRig?.rig ?? null,
          mirror: panel.mirror,
          vrmVersion: panel.model?.vrmVersion ?? null,
          bones: panel.#scene?.appliedBones() ?? {},
          from: panel.track.from,
          target: panel.track.to,
          held: [],
          settled: panel.track.settled(now),
        };
      },
      /** Poses the avatar with a rig (server format), at once unless {immediate: false}. */
      applyRig(rig, { immediate = true } = {}) {
        const now = performance.now();
        const pose = panel.#map(rig);
        if (immediate) panel.track.snap(pose, now);
        else panel.track.push(pose, now);
        panel.#scene?.applyPose(panel.track.sample(now));
        panel.#wake();
        return panel.#scene?.appliedBones() ?? {};
      },
      /** {world: [x, y, z] metres, screen: [x, y] CSS px from the canvas's top-left}, or null. */
      bonePosition(name) {
        return panel.#scene?.bonePosition(name) ?? null;
      },
      /** Resolves once the first model is in (or the view failed to start). */
      whenStarted() {
        return panel.#start().then(() => Boolean(panel.#scene?.model));
      },
    });
    return this.#hook;
  }
}

/** The lip gap of a result's face mesh (inner lips 13–14 over the face's height 10–152), or null. */
function lipGap(face) {
  if (!Array.isArray(face) || face.length < 153 * 3) return null;
  const d = (a, b) => Math.hypot(face[3 * a] - face[3 * b], face[3 * a + 1] - face[3 * b + 1]);
  const height = d(10, 152);
  return height > 0 ? d(13, 14) / height : null;
}

function readSettings() {
  try {
    const stored = JSON.parse(localStorage.getItem(SETTINGS_KEY)) ?? {};
    return typeof stored === "object" ? stored : {};
  } catch {
    return {};
  }
}
