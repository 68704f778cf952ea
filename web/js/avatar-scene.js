// The avatar's three.js scene: renderer, lights, camera framing, background, and a VRM posed
// through three-vrm's normalized bones and expression manager.

import * as THREE from "three";
import { VRMLookAtBoneApplier } from "@pixiv/three-vrm";
import { disposeScene } from "./avatar-loader.js";

/** Camera framings: which part of the avatar fills the view. */
const FRAMINGS = Object.freeze(["full", "upper", "face"]);

const FOV_DEG = 26;
const SOFTWARE_MAX_FPS = 20;
const SOFTWARE_MAX_PIXELS = 300_000;

export class AvatarScene {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{transparent?: boolean}} options  transparent: the canvas can show through (OBS)
   */
  constructor(canvas, { transparent = false } = {}) {
    this.canvas = canvas;
    const probe = probeRenderer();
    if (!probe.webgl2) throw new Error("this browser offers no WebGL 2 context");
    // A CPU renderer (SwiftShader, llvmpipe: no GPU, or headless) shares the CPU with the camera
    // pipeline, and every pixel and frame costs: no multisampling, at most 20 frames a second
    // and about 0.3 megapixels (scaled up by the page).
    this.software = probe.software;
    this.rendererName = probe.name;
    this.minFrameMs = this.software ? 1000 / SOFTWARE_MAX_FPS - 2 : 0;
    // three.js renders with WebGL 2 only; without it this throws and the page says so.
    this.renderer = new THREE.WebGLRenderer({
      canvas,
      antialias: !this.software,
      alpha: transparent,
      premultipliedAlpha: true,
      powerPreference: "low-power",
    });
    this.webgl2 = this.renderer.getContext() instanceof WebGL2RenderingContext;
    this.pixelRatio = Math.min(window.devicePixelRatio || 1, 2);
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;

    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(FOV_DEG, 1, 0.05, 50);
    this.scene.add(new THREE.HemisphereLight(0xf1f5ff, 0x3a3f52, 1.6));
    const key = new THREE.DirectionalLight(0xffffff, 2.2);
    key.position.set(1.2, 2.5, 3);
    const rim = new THREE.DirectionalLight(0x9cc8ff, 0.9);
    rim.position.set(-2, 1.5, -2.5);
    this.scene.add(key, rim);

    /** @type {import("./avatar-loader.js").LoadedVrm | null} */
    this.model = null;
    this.framing = "upper";
    this.size = { width: 0, height: 0 };
    this.metrics = null; // the model's proportions at rest, for framing
    this.expressionValues = {};
    this.handMaterials = null;
    this.handColoursSwapped = false;
    this.aim = null; // the framing's camera position and target, before following the head
    this.follow = new THREE.Vector2(); // how far the head has moved from its rest, smoothed
  }

  get vrm() {
    return this.model?.vrm ?? null;
  }

  /** Shows a model instead of the current one (which is disposed). */
  setModel(model) {
    if (this.model) {
      this.scene.remove(this.model.vrm.scene);
      disposeScene(this.model.vrm.scene);
    }
    this.model = model;
    this.expressionValues = {};
    this.scene.add(model.vrm.scene);
    this.handMaterials = findHandMaterials(model.vrm.scene);
    this.setHandColoursSwapped(this.handColoursSwapped);
    model.vrm.update(0);
    this.metrics = measure(model.vrm);
    this.#frame();
  }

  /** Does the model have this three-vrm humanoid bone? */
  hasBone(name) {
    return Boolean(this.vrm?.humanoid.getNormalizedBoneNode(name));
  }

  setFraming(framing) {
    this.framing = FRAMINGS.includes(framing) ? framing : "upper";
    this.#frame();
  }

  /**
   * The mannequin's hands wear the skeleton view's colours for the person's left and right hand.
   * In the mirror view the avatar's left hand follows the person's right one: swap the colours.
   */
  setHandColoursSwapped(swapped) {
    this.handColoursSwapped = swapped;
    const hands = this.handMaterials;
    if (!hands) return;
    hands.left.color.copy(swapped ? hands.rightColour : hands.leftColour);
    hands.right.color.copy(swapped ? hands.leftColour : hands.rightColour);
  }

  /** Solid background (what a chroma key in OBS keys out), or "transparent". */
  setBackground(colour) {
    if (colour === "transparent") this.renderer.setClearColor(0x000000, 0);
    else this.renderer.setClearColor(new THREE.Color(colour), 1);
  }

  /** How open the avatar's mouth is as drawn: its "aa" morph's weight (0..1). */
  mouthOpening() {
    let found = null;
    this.vrm?.scene.traverse((object) => {
      const index = object.morphTargetDictionary?.aa;
      if (found === null && index !== undefined) found = object.morphTargetInfluences[index];
    });
    return found ?? this.vrm?.expressionManager?.getValue("aa") ?? 0;
  }

  resize(width, height) {
    if (width < 1 || height < 1) return;
    if (width === this.size.width && height === this.size.height) return;
    this.size = { width, height };
    const ratio = this.software ? Math.min(1, Math.sqrt(SOFTWARE_MAX_PIXELS / (width * height))) : this.pixelRatio;
    this.renderer.setPixelRatio(ratio);
    this.renderer.setSize(width, height, false);
    this.#frame();
  }

  /**
   * Puts the avatar in a pose: normalized bone rotations (bones absent are at rest) and VRM 1.0
   * expression values.
   * @param {{bones: Record<string, number[]>, expressions: Record<string, number>}} pose
   */
  applyPose({ bones, expressions }) {
    const vrm = this.vrm;
    if (!vrm) return;
    for (const [name, node] of Object.entries(vrm.humanoid.normalizedHumanBones)) {
      const q = bones[name];
      if (q) node.node.quaternion.set(q[0], q[1], q[2], q[3]);
      else node.node.quaternion.identity();
    }
    const manager = vrm.expressionManager;
    const lookAt = vrm.lookAt;
    const lookByBones = lookAt?.applier instanceof VRMLookAtBoneApplier;
    const applied = {};
    for (const [name, value] of Object.entries(expressions)) {
      if (lookByBones && name.startsWith("look")) continue;
      if (manager?.getExpression(name)) {
        manager.setValue(name, value);
        applied[name] = value;
      }
    }
    if (lookByBones) {
      // Eyes turned by bones: the look expressions become the look-at's yaw and pitch (degrees;
      // positive yaw looks to the avatar's left, positive pitch down).
      const { applier } = lookAt;
      const e = (name) => expressions[name] ?? 0;
      lookAt.yaw = (e("lookLeft") - e("lookRight")) * applier.rangeMapHorizontalOuter.inputMaxValue;
      lookAt.pitch =
        e("lookDown") * applier.rangeMapVerticalDown.inputMaxValue - e("lookUp") * applier.rangeMapVerticalUp.inputMaxValue;
    }
    this.expressionValues = applied;
  }

  /** The normalized bone rotations currently on the model, [x, y, z, w] by bone name. */
  appliedBones() {
    const out = {};
    for (const [name, bone] of Object.entries(this.vrm?.humanoid.normalizedHumanBones ?? {})) {
      out[name] = bone.node.quaternion.toArray();
    }
    return out;
  }

  /** Advances the model (bones, look-at, expressions, spring bones) and draws a frame. */
  render(deltaS) {
    this.vrm?.update(deltaS);
    this.#followHead(deltaS);
    this.renderer.render(this.scene, this.camera);
  }

  /**
   * Face and Upper body framings follow the head (a leaning or stepping person stays in frame):
   * the camera moves with the head's offset from where it is at rest, smoothed over ~0.2 s.
   */
  #followHead(deltaS) {
    const aim = this.aim;
    const head = this.vrm?.humanoid.getRawBoneNode("head");
    if (!aim || !head || !this.metrics) return;
    const target = new THREE.Vector2();
    if (this.framing !== "full") {
      const at = head.getWorldPosition(new THREE.Vector3());
      target.set(at.x - this.metrics.headX, at.y - this.metrics.head);
    }
    this.follow.lerp(target, deltaS > 0 ? Math.min(1, deltaS * 5) : 1);
    this.camera.position.set(aim.position.x + this.follow.x, aim.position.y + this.follow.y, aim.position.z);
    this.camera.lookAt(aim.target.x + this.follow.x, aim.target.y + this.follow.y, aim.target.z);
  }

  /**
   * Where a humanoid bone is: world position (metres), and on the canvas in CSS pixels from its
   * top-left corner.
   */
  bonePosition(name) {
    const vrm = this.vrm;
    const node = vrm?.humanoid.getRawBoneNode(name);
    if (!node) return null;
    vrm.humanoid.update(); // normalized → raw, in case no frame was drawn since the last pose
    vrm.scene.updateMatrixWorld(true);
    this.camera.updateMatrixWorld();
    const world = node.getWorldPosition(new THREE.Vector3());
    const ndc = world.clone().project(this.camera);
    const { width, height } = this.canvas.getBoundingClientRect();
    return {
      world: world.toArray(),
      screen: [((ndc.x + 1) / 2) * width, ((1 - ndc.y) / 2) * height],
    };
  }

  dispose() {
    if (this.model) disposeScene(this.model.vrm.scene);
    this.model = null;
    this.renderer.dispose();
  }

  /** Points the camera at the part of the model the framing asks for. */
  #frame() {
    const m = this.metrics;
    const { width, height } = this.size;
    if (!m || !width || !height) return;
    const aspect = width / height;
    const headSize = Math.max(0.12, m.top - m.head);
    let bottom;
    let top;
    let across;
    if (this.framing === "full") {
      [bottom, top] = [m.bottom - 0.05 * (m.top - m.bottom), m.top + 0.05 * (m.top - m.bottom)];
      across = 0.75 * (m.top - m.bottom);
    } else if (this.framing === "face") {
      [bottom, top] = [m.head - 0.55 * headSize, m.top + 0.2 * headSize];
      across = 1.1 * (top - bottom);
    } else {
      // Head to hips; in a tall, narrow view (Side by side) the height decides, and arms held
      // out may leave the picture rather than the whole body shrinking to fit them.
      [bottom, top] = [m.hips - 0.05 * (m.top - m.hips), m.top + 0.08 * (m.top - m.hips)];
      across = 0.75 * (top - bottom);
    }
    const tanV = Math.tan(THREE.MathUtils.degToRad(FOV_DEG / 2));
    const distance = Math.max((top - bottom) / 2 / tanV, across / 2 / (tanV * aspect));
    const centreY = (top + bottom) / 2;
    this.camera.aspect = aspect;
    this.aim = {
      position: new THREE.Vector3(m.centreX, centreY, m.front + distance),
      target: new THREE.Vector3(m.centreX, centreY, m.front),
    };
    this.camera.position.copy(this.aim.position).add(new THREE.Vector3(this.follow.x, this.follow.y, 0));
    this.camera.lookAt(this.aim.target.clone().add(new THREE.Vector3(this.follow.x, this.follow.y, 0)));
    this.camera.near = Math.max(0.01, distance / 20);
    this.camera.far = distance * 10 + 10;
    this.camera.updateProjectionMatrix();
  }
}

/** Is there WebGL 2, and is it drawn by the CPU? Asked on a throwaway context. */
function probeRenderer() {
  const canvas = document.createElement("canvas");
  const gl = canvas.getContext("webgl2");
  if (!gl) return { webgl2: false, software: false, name: "" };
  const debug = gl.getExtension("WEBGL_debug_renderer_info");
  const name = String(gl.getParameter(debug ? debug.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
  gl.getExtension("WEBGL_lose_context")?.loseContext();
  return { webgl2: true, software: /swiftshader|llvmpipe|softpipe|software/i.test(name), name };
}

/** The materials named left_hand and right_hand (the mannequin's), with their own colours. */
function findHandMaterials(root) {
  const found = {};
  root.traverse((object) => {
    for (const material of [object.material ?? []].flat()) {
      if (material.name === "left_hand" || material.name === "right_hand") found[material.name] ??= material;
    }
  });
  if (!found.left_hand || !found.right_hand) return null;
  return {
    left: found.left_hand,
    right: found.right_hand,
    leftColour: found.left_hand.color.clone(),
    rightColour: found.right_hand.color.clone(),
  };
}

/** Heights (metres) of the model at rest: feet, hips, head bone, top; its centre and front. */
function measure(vrm) {
  vrm.scene.updateMatrixWorld(true);
  const box = new THREE.Box3().setFromObject(vrm.scene);
  const y = (name, fallback) => vrm.humanoid.getRawBoneNode(name)?.getWorldPosition(new THREE.Vector3()).y ?? fallback;
  const bottom = Number.isFinite(box.min.y) ? box.min.y : 0;
  const top = Number.isFinite(box.max.y) ? box.max.y : 1.7;
  const head = y("head", bottom + 0.87 * (top - bottom));
  return {
    headX: vrm.humanoid.getRawBoneNode("head")?.getWorldPosition(new THREE.Vector3()).x ?? 0,
    bottom,
    top: Math.max(top, head + 0.1),
    head,
    hips: y("hips", bottom + 0.53 * (top - bottom)),
    centreX: vrm.humanoid.getRawBoneNode("hips")?.getWorldPosition(new THREE.Vector3()).x ?? 0,
    front: Number.isFinite(box.max.z) ? Math.min(box.max.z, 0.3) : 0.1,
  };
}
