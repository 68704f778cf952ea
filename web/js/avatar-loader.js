// VRM files → three-vrm avatars, with reasons in words when a file is not one.
//
// Everything happens in the browser: a dropped file is read with File.arrayBuffer() and parsed
// here; it is never uploaded.

import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { VRMLoaderPlugin, VRMUtils } from "@pixiv/three-vrm";

/** A file that is not a usable VRM; `message` is for people. */
export class VrmLoadError extends Error {
  name = "VrmLoadError";
}

const GLB_MAGIC = 0x46546c67; // "glTF", little-endian

/**
 * @typedef {{vrm: import("@pixiv/three-vrm").VRM, version: "1.0" | "0.x", title: string,
 *            fileName: string, bytes: number}} LoadedVrm
 */

/**
 * Parses a VRM (VRM 1.0 or 0.x) from its bytes.
 * @param {ArrayBuffer} data
 * @param {string} fileName  for messages
 * @returns {Promise<LoadedVrm>}
 * @throws {VrmLoadError}
 */
export async function parseVrm(data, fileName = "the file") {
  if (!(data instanceof ArrayBuffer) || data.byteLength < 20) {
    throw new VrmLoadError(`${fileName} is not a VRM: it is empty or far too short.`);
  }
  if (new DataView(data).getUint32(0, true) !== GLB_MAGIC) {
    throw new VrmLoadError(`${fileName} is not a VRM: a VRM is a binary glTF (.vrm, .glb) and this file is something else.`);
  }
  // A binary glTF says its own length: a shorter file was cut off (an interrupted download).
  const declared = new DataView(data).getUint32(8, true);
  if (declared > data.byteLength) {
    throw new VrmLoadError(
      `${fileName} could not be read as a VRM: the file is cut short (${megabytes(data.byteLength)} of ` +
        `${megabytes(declared)}). Download or export it again.`,
    );
  }
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  let gltf;
  try {
    gltf = await loader.parseAsync(data, "");
  } catch (error) {
    console.warn(`${fileName}:`, error);
    throw new VrmLoadError(
      `${fileName} could not be read as a VRM: the file looks damaged, or uses something this viewer ` +
        "cannot read. Try exporting it again (VRM 1.0 or 0.x).",
    );
  }
  const vrm = gltf.userData.vrm;
  if (!vrm?.humanoid || !vrm.meta) {
    disposeScene(gltf.scene);
    throw new VrmLoadError(
      `${fileName} is a 3D model without VRM avatar data (humanoid and meta): export it as a VRM.`,
    );
  }
  const version = vrm.meta.metaVersion === "0" ? "0.x" : "1.0";
  // Lighter to draw, and the usual preparation for three-vrm models.
  VRMUtils.removeUnnecessaryVertices(gltf.scene);
  VRMUtils.combineSkeletons(gltf.scene);
  // VRM 0.x models face -Z: turn them to face +Z like VRM 1.0 (the normalized bones keep their
  // native frame; avatar-rig.js accounts for it).
  VRMUtils.rotateVRM0(vrm);
  // Posed skinned meshes leave their rest bounds: never cull the avatar away.
  vrm.scene.traverse((object) => {
    object.frustumCulled = false;
  });
  const title = (version === "0.x" ? vrm.meta.title : vrm.meta.name) || fileName;
  return { vrm, version, title, fileName, bytes: data.byteLength };
}

/**
 * Fetches and parses a VRM from a URL (the built-in mannequin).
 * @returns {Promise<LoadedVrm>}
 */
export async function fetchVrm(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new VrmLoadError(`Cannot download ${url}: ${error.message}`);
  }
  if (!response.ok) throw new VrmLoadError(`Cannot download ${url}: HTTP ${response.status}.`);
  return parseVrm(await response.arrayBuffer(), url.split("/").pop());
}

function megabytes(bytes) {
  return bytes < 1e6 ? `${Math.round(bytes / 1e3)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** Frees a model's GPU resources. */
export function disposeScene(object) {
  if (object) VRMUtils.deepDispose(object);
}
