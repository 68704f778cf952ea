// Draws a result's landmarks on a transparent canvas laid exactly over the <video>: same
// letterboxing (object-fit: contain), same mirroring. Parts that are null are not drawn.

import {
  FACE_IRIS_CENTERS,
  FACE_LEFT_EYE,
  FACE_LEFT_EYEBROW,
  FACE_LEFT_IRIS,
  FACE_LIPS,
  FACE_OVAL,
  FACE_RIGHT_EYE,
  FACE_RIGHT_EYEBROW,
  FACE_RIGHT_IRIS,
  HAND_CONNECTIONS,
  POSE_CONNECTIONS,
  POSE_FACE_POINTS,
} from "./connections.js";
import { PART_STRIDES } from "./protocol.js";

/** One colour per part. */
export const PALETTE = Object.freeze({
  pose: "#38bdf8",
  leftHand: "#f472b6",
  rightHand: "#facc15",
  faceOval: "#a78bfa",
  brows: "#fb923c",
  eyes: "#4ade80",
  irises: "#e2e8f0",
  lips: "#f87171",
});

const FACE_FEATURES = [
  { connections: FACE_OVAL, color: PALETTE.faceOval },
  { connections: [...FACE_LEFT_EYEBROW, ...FACE_RIGHT_EYEBROW], color: PALETTE.brows },
  { connections: [...FACE_LEFT_EYE, ...FACE_RIGHT_EYE], color: PALETTE.eyes },
  { connections: FACE_LIPS, color: PALETTE.lips },
  { connections: [...FACE_LEFT_IRIS, ...FACE_RIGHT_IRIS], color: PALETTE.irises },
];

const MIN_VISIBILITY = 0.5;
// Pose points a found hand draws in more detail: the person's left (17, 19, 21) and right (18, 20, 22)
// pinky, index and thumb.
const POSE_HAND_POINTS = { left_hand: [17, 19, 21], right_hand: [18, 20, 22] };
const SHADOW = "rgba(2, 6, 23, 0.55)";

export class SkeletonOverlay {
  /**
   * @param {HTMLCanvasElement} canvas  laid over the video with the same CSS box
   * @param {HTMLVideoElement} video
   */
  constructor(canvas, video) {
    this.canvas = canvas;
    this.video = video;
    this.context = canvas.getContext("2d");
    this.mirror = true;
    this.layers = { pose: true, hands: true, face: true };
    this.result = null;
    new ResizeObserver(() => this.#resize()).observe(canvas);
    this.#resize();
  }

  setMirror(mirror) {
    this.mirror = mirror;
    this.draw(this.result);
  }

  /** @param {{pose?: boolean, hands?: boolean, face?: boolean}} layers */
  setLayers(layers) {
    Object.assign(this.layers, layers);
    this.draw(this.result);
  }

  clear() {
    this.result = null;
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /**
   * Where the video picture lies on the canvas, in canvas pixels (letterboxed like
   * `object-fit: contain`).
   */
  contentRect(result = this.result) {
    const { width: cw, height: ch } = this.canvas;
    const vw = this.video.videoWidth || result?.width || cw;
    const vh = this.video.videoHeight || result?.height || ch;
    const scale = Math.min(cw / vw, ch / vh);
    const w = vw * scale;
    const h = vh * scale;
    return { x: (cw - w) / 2, y: (ch - h) / 2, width: w, height: h };
  }

  /** Replaces the drawing with this result's skeleton (null just clears). */
  draw(result) {
    this.result = result;
    const ctx = this.context;
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!result) return;

    const rect = this.contentRect(result);
    const px = (x) => rect.x + (this.mirror ? 1 - x : x) * rect.width;
    const py = (y) => rect.y + y * rect.height;
    const unit = Math.max(1, rect.height / 480) * (window.devicePixelRatio || 1) ** 0.5;
    const part = (name) => (Array.isArray(result[name]) ? new Points(result[name], PART_STRIDES[name], px, py) : null);

    const face = this.layers.face ? part("face") : null;
    const hands = this.layers.hands
      ? { left_hand: part("left_hand"), right_hand: part("right_hand") }
      : { left_hand: null, right_hand: null };
    const pose = this.layers.pose ? part("pose") : null;

    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    // Back to front: the thick body lines, then the fine face contours, then the hands.
    if (pose) {
      const hidden = new Set();
      if (face || !this.layers.face) for (let i = 0; i < POSE_FACE_POINTS; i++) hidden.add(i);
      for (const [name, points] of Object.entries(POSE_HAND_POINTS)) {
        if (hands[name]) points.forEach((i) => hidden.add(i));
      }
      const shown = (i) => !hidden.has(i) && pose.value(i, 3) >= MIN_VISIBILITY;
      const connections = POSE_CONNECTIONS.filter(([a, b]) => shown(a) && shown(b));
      const joints = [...new Set(connections.flat())];
      this.#lines(pose, connections, PALETTE.pose, 3.2 * unit);
      this.#dots(pose, joints, PALETTE.pose, 4 * unit);
    }
    if (face) {
      for (const { connections, color } of FACE_FEATURES) {
        this.#lines(face, connections, color, 1.6 * unit);
      }
      this.#dots(face, FACE_IRIS_CENTERS, PALETTE.irises, 1.8 * unit);
    }
    for (const [name, color] of [["left_hand", PALETTE.leftHand], ["right_hand", PALETTE.rightHand]]) {
      const hand = hands[name];
      if (!hand) continue;
      this.#lines(hand, HAND_CONNECTIONS, color, 2.4 * unit);
      this.#dots(hand, [...Array(hand.count).keys()], color, 3 * unit);
    }
  }

  #lines(points, connections, color, width) {
    const ctx = this.context;
    ctx.beginPath();
    for (const [a, b] of connections) {
      if (a >= points.count || b >= points.count) continue;
      ctx.moveTo(points.x(a), points.y(a));
      ctx.lineTo(points.x(b), points.y(b));
    }
    ctx.strokeStyle = SHADOW;
    ctx.lineWidth = width + 2;
    ctx.stroke();
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.stroke();
  }

  #dots(points, indices, color, radius) {
    const ctx = this.context;
    ctx.beginPath();
    for (const i of indices) {
      if (i >= points.count) continue;
      ctx.moveTo(points.x(i) + radius, points.y(i));
      ctx.arc(points.x(i), points.y(i), radius, 0, 2 * Math.PI);
    }
    ctx.fillStyle = color;
    ctx.fill();
    ctx.strokeStyle = SHADOW;
    ctx.lineWidth = 1;
    ctx.stroke();
  }

  #resize() {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const height = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
      this.draw(this.result);
    }
  }
}

/** A flat `points × stride` array, mapped to canvas pixels. */
class Points {
  constructor(values, stride, px, py) {
    this.values = values;
    this.stride = stride;
    this.count = Math.floor(values.length / stride);
    this.px = px;
    this.py = py;
  }

  x(i) {
    return this.px(this.values[i * this.stride]);
  }

  y(i) {
    return this.py(this.values[i * this.stride + 1]);
  }

  value(i, k) {
    return this.values[i * this.stride + k];
  }
}
