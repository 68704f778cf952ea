// The server's rig → three-vrm: bone names, coordinate frames, mirroring, expressions, the
// interpolation that turns ~15 results a second into smooth motion, and the neutral pose.
// (What a part does when its tracking comes and goes — hold, ease to rest, no snaps — is the
// server's: server/rig/tracking.py.) Pure functions and small
// classes, no three.js: the page and the tests import this module as it is.
//
// The server's rig (docs/protocol.md, holistream/rig/skeleton.py) is in Unity's humanoid frame:
// left-handed, +Y up, the avatar faces +Z, +X is the avatar's own right; each bone a local unit
// quaternion [x, y, z, w] relative to the VRM T-pose. three-vrm's normalized bones are the same
// T-pose with identity rest rotations, but in glTF's right-handed frame:
//
// - VRM 1.0 models face +Z, so the avatar's right is -X: the frame is Unity's with X negated
//   (the reflection UniVRM applies on import). A rotation under that reflection keeps its angle
//   and its axis becomes (ax, -ay, -az): [x, y, z, w] → [x, -y, -z, w].
// - VRM 0.x models face -Z. three-vrm builds their normalized bones in that native frame, and
//   VRMUtils.rotateVRM0 only turns the scene 180° about +Y afterwards; so the 1.0 rotation must
//   still be turned the same way (conjugated by 180° about Y): [x, y, z, w] → [-x, y, -z, w].
//   Together: [x, y, z, w] → [-x, -y, z, w]. (Forget it and "arms down" raises the arms.)
//
// Mirror (selfie view, like the skeleton view's Mirror switch): the avatar moves like the
// person's mirror image: sides swap (the person's left arm drives the avatar's right arm,
// Blink_L drives the right eye, LookLeft looks right) and each rotation is reflected across the
// avatar's sagittal plane, which in Unity's frame is again [x, -y, -z, w].

/** Unity HumanBodyBones names of the rig → three-vrm (VRM 1.0) humanoid bone names. */
export const BONE_MAP = Object.freeze(buildBoneMap());

function buildBoneMap() {
  const map = {
    Hips: "hips",
    Spine: "spine",
    Chest: "chest",
    Neck: "neck",
    Head: "head",
  };
  for (const [side, prefix] of [
    ["Left", "left"],
    ["Right", "right"],
  ]) {
    for (const bone of ["UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot"]) {
      map[side + bone] = prefix + bone;
    }
    // Unity's thumb has Proximal/Intermediate/Distal; VRM 1.0 calls the same three bones
    // Metacarpal/Proximal/Distal (three-vrm renames VRM 0.x thumbs the same way on load).
    map[`${side}ThumbProximal`] = `${prefix}ThumbMetacarpal`;
    map[`${side}ThumbIntermediate`] = `${prefix}ThumbProximal`;
    map[`${side}ThumbDistal`] = `${prefix}ThumbDistal`;
    for (const finger of ["Index", "Middle", "Ring", "Little"]) {
      for (const segment of ["Proximal", "Intermediate", "Distal"]) {
        map[side + finger + segment] = prefix + finger + segment;
      }
    }
  }
  return map;
}

/** The rig's expressions (VRM 0.x preset names) → VRM 1.0 expression names (before mirroring). */
export const EXPRESSION_MAP = Object.freeze({
  A: "aa",
  I: "ih",
  U: "ou",
  E: "ee",
  O: "oh",
  LookUp: "lookUp",
  LookDown: "lookDown",
  LookLeft: "lookLeft",
  LookRight: "lookRight",
});

const IDENTITY = Object.freeze([0, 0, 0, 1]);

/** Left ↔ Right in a Unity bone or expression name. */
export function swapSide(name) {
  if (name.startsWith("Left")) return `Right${name.slice(4)}`;
  if (name.startsWith("Right")) return `Left${name.slice(5)}`;
  if (name.endsWith("_L")) return `${name.slice(0, -2)}_R`;
  if (name.endsWith("_R")) return `${name.slice(0, -2)}_L`;
  if (name === "LookLeft") return "LookRight";
  if (name === "LookRight") return "LookLeft";
  return name;
}

/** Reflection across the YZ plane, in either handedness: [x, y, z, w] → [x, -y, -z, w]. */
export function reflectX([x, y, z, w]) {
  return [x, -y, -z, w];
}

/**
 * A rotation of the rig (Unity frame) as three-vrm wants it for a model of this VRM version.
 * @param {number[]} q  [x, y, z, w]
 * @param {"1.0" | "0.x"} vrmVersion
 */
export function toVrmRotation(q, vrmVersion = "1.0") {
  const [x, y, z, w] = reflectX(q); // Unity → glTF, avatar facing +Z (VRM 1.0)
  return vrmVersion === "0.x" ? [-x, y, -z, w] : [x, y, z, w];
}

/** Hamilton product a·b of [x, y, z, w] quaternions. */
export function multiply([ax, ay, az, aw], [bx, by, bz, bw]) {
  return [
    aw * bx + ax * bw + ay * bz - az * by,
    aw * by - ax * bz + ay * bw + az * bx,
    aw * bz + ax * by - ay * bx + az * bw,
    aw * bw - ax * bx - ay * by - az * bz,
  ];
}

/** A unit quaternion from any value, or null when it is not four finite numbers. */
export function unitQuaternion(value) {
  if (!Array.isArray(value) || value.length !== 4 || !value.every(Number.isFinite)) return null;
  const norm = Math.hypot(...value);
  if (norm < 1e-6) return null;
  return value.map((v) => v / norm);
}

/**
 * Spherical interpolation from a to b (shortest arc), t in [0, 1].
 * @returns {number[]}
 */
export function slerp(a, b, t) {
  let [bx, by, bz, bw] = b;
  const [ax, ay, az, aw] = a;
  let cos = ax * bx + ay * by + az * bz + aw * bw;
  if (cos < 0) {
    // q and -q are one rotation: go the short way round.
    [bx, by, bz, bw] = [-bx, -by, -bz, -bw];
    cos = -cos;
  }
  let wa = 1 - t;
  let wb = t;
  if (cos < 0.9995) {
    const theta = Math.acos(cos);
    const sin = Math.sin(theta);
    wa = Math.sin((1 - t) * theta) / sin;
    wb = Math.sin(t * theta) / sin;
  }
  const out = [ax * wa + bx * wb, ay * wa + by * wb, az * wa + bz * wb, aw * wa + bw * wb];
  const norm = Math.hypot(...out);
  return out.map((v) => v / norm);
}

const clamp01 = (value) => (Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : 0);

/**
 * The server's rig as three-vrm normalized bone rotations and VRM 1.0 expression values.
 *
 * @param {{bones?: Record<string, number[]>, expressions?: Record<string, number>}} rig
 * @param {{mirror?: boolean, vrmVersion?: "1.0" | "0.x", has?: (bone: string) => boolean}} options
 *   `has` says which three-vrm bones the model has: the rotation of a missing chest goes into
 *   the spine, that of a missing neck into the head, so the parts above still end up right.
 * @returns {{bones: Record<string, number[]>, expressions: Record<string, number>}}
 */
export function mapRig(rig, { mirror = false, vrmVersion = "1.0", has = () => true } = {}) {
  // 1. Read the Unity-frame rotations (mirrored into the avatar's own sides if asked).
  const unity = {};
  for (const [name, value] of Object.entries(rig?.bones ?? {})) {
    const q = unitQuaternion(value);
    if (!q || !(name in BONE_MAP)) continue;
    if (mirror) unity[swapSide(name)] = reflectX(q);
    else unity[name] = q;
  }
  // 2. Fold bones the model lacks into a neighbour, in the rig's own hierarchy.
  if (!has("chest") && unity.Chest) {
    unity.Spine = multiply(unity.Spine ?? IDENTITY, unity.Chest);
    delete unity.Chest;
  }
  if (!has("neck") && unity.Neck) {
    unity.Head = multiply(unity.Neck, unity.Head ?? IDENTITY);
    delete unity.Neck;
  }
  // 3. Into the model's frame.
  const bones = {};
  for (const [name, q] of Object.entries(unity)) {
    const vrmName = BONE_MAP[name];
    if (has(vrmName)) bones[vrmName] = toVrmRotation(q, vrmVersion);
  }

  const source = rig?.expressions ?? {};
  const value = (name) => clamp01(source[mirror ? swapSide(name) : name]);
  // Both eyes closing is "blink" (models without per-eye blinks have only that one); what one
  // eye closes beyond the other goes to blinkLeft / blinkRight.
  const left = value("Blink_L");
  const right = value("Blink_R");
  const blink = Math.min(left, right);
  const expressions = { blink, blinkLeft: left - blink, blinkRight: right - blink };
  for (const [rigName, vrmName] of Object.entries(EXPRESSION_MAP)) expressions[vrmName] = value(rigName);
  return { bones, expressions };
}

/**
 * Renders between results: each new target pose is reached from the pose on screen in about
 * one result interval (measured), by slerp for bones, so 15 results a second look like
 * continuous motion at 60 fps (the bones run about one result behind). Expressions are not
 * interpolated: each result's values show from the next frame drawn (a mouth that eased into
 * its values would still be open after the mouth closed); only an explicit ease (`fade`, to
 * the neutral pose when tracking is lost) blends them too.
 */
export class PoseTrack {
  constructor({ minMs = 30, maxMs = 250, defaultMs = 80 } = {}) {
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.intervalMs = defaultMs;
    this.defaultMs = defaultMs;
    this.from = { bones: {}, expressions: {} };
    this.to = { bones: {}, expressions: {} };
    this.start = 0;
    this.duration = 0;
    this.blendExpressions = false;
    this.lastPushAt = null;
  }

  /** A new target pose (from mapRig) that arrived at `now`. */
  push(target, now = performance.now()) {
    if (this.lastPushAt !== null) {
      const gap = now - this.lastPushAt;
      // A pause (stream stopped, tab hidden) says nothing about the result rate.
      if (gap < 1500) this.intervalMs = 0.7 * this.intervalMs + 0.3 * gap;
    }
    this.lastPushAt = now;
    this.#moveTo(target, now, Math.min(this.maxMs, Math.max(this.minMs, this.intervalMs)), false);
  }

  /** Eases everything, expressions too, to a pose over `durationMs` (tracking lost). */
  fade(target, durationMs, now = performance.now()) {
    this.#moveTo(target, now, durationMs, true);
  }

  #moveTo(target, now, durationMs, blendExpressions) {
    this.from = this.sample(now);
    this.to = clonePose(target);
    this.start = now;
    this.duration = durationMs;
    this.blendExpressions = blendExpressions;
  }

  /** Jump to a pose at once (a new model, a pose set by hand). */
  snap(target, now = performance.now()) {
    this.from = clonePose(target);
    this.to = clonePose(target);
    this.start = now;
    this.duration = 0;
  }

  /** Back to the T-pose at once, forgetting the result rate. */
  reset(now = performance.now()) {
    this.snap({ bones: {}, expressions: {} }, now);
    this.lastPushAt = null;
    this.intervalMs = this.defaultMs;
  }

  /** True once the pose on screen is the last target. */
  settled(now = performance.now()) {
    return this.duration === 0 || now - this.start >= this.duration;
  }

  /** The pose to show at `now`. Bones absent from a pose are at rest (identity). */
  sample(now = performance.now()) {
    const t = this.duration > 0 ? Math.min(1, Math.max(0, (now - this.start) / this.duration)) : 1;
    const bones = {};
    for (const name of new Set([...Object.keys(this.from.bones), ...Object.keys(this.to.bones)])) {
      bones[name] = slerp(this.from.bones[name] ?? IDENTITY, this.to.bones[name] ?? IDENTITY, t);
    }
    if (!this.blendExpressions) return { bones, expressions: { ...this.to.expressions } };
    const expressions = {};
    for (const name of new Set([...Object.keys(this.from.expressions), ...Object.keys(this.to.expressions)])) {
      const a = this.from.expressions[name] ?? 0;
      const b = this.to.expressions[name] ?? 0;
      expressions[name] = a + (b - a) * t;
    }
    return { bones, expressions };
  }
}

/** How far below the T-pose the neutral pose's arms hang (server/rig/tracking.py). */
export const ARM_DOWN_DEG = 65;
const LEG_BONES = ["LeftUpperLeg", "LeftLowerLeg", "LeftFoot", "RightUpperLeg", "RightLowerLeg", "RightFoot"];

/**
 * The neutral pose the server's rig eases to when tracking is lost (server/rig/tracking.py,
 * neutral_rig), in the rig's own format: upright, arms down beside the body, a neutral face;
 * the legs as `rig` has them (seated or standing). Confidences all 0.
 */
export function neutralRig(rig) {
  const half = (ARM_DOWN_DEG * Math.PI) / 360;
  const bones = {
    LeftUpperArm: [0, 0, Math.sin(half), Math.cos(half)],
    RightUpperArm: [0, 0, -Math.sin(half), Math.cos(half)],
  };
  for (const name of LEG_BONES) if (rig?.bones?.[name]) bones[name] = [...rig.bones[name]];
  const confidence = Object.fromEntries(Object.keys(rig?.confidence ?? {}).map((part) => [part, 0]));
  return { bones, expressions: {}, head: [0, 0, 0], hips: [0, 0, 0], confidence };
}

/** Does a rig track a person (its body or face found)? Without confidences: assume so. */
export function isTracking(rig) {
  const c = rig?.confidence;
  if (!c || typeof c !== "object") return true;
  return (c.body ?? 0) > 0 || (c.face ?? 0) > 0;
}

function clonePose({ bones = {}, expressions = {} }) {
  return {
    bones: Object.fromEntries(Object.entries(bones).map(([name, q]) => [name, [...q]])),
    expressions: { ...expressions },
  };
}
