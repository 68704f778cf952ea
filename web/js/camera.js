// Where the pictures come from: a camera (getUserMedia) or a local video file, played into
// one <video> element.

export const RESOLUTIONS = [
  { id: "320x240", width: 320, height: 240, label: "320 × 240" },
  { id: "640x480", width: 640, height: 480, label: "640 × 480" },
  { id: "1280x720", width: 1280, height: 720, label: "1280 × 720 (HD)" },
  { id: "1920x1080", width: 1920, height: 1080, label: "1920 × 1080 (Full HD)" },
];
export const DEFAULT_RESOLUTION = "640x480";

/** A video source error in words, with what to do about it. */
export function describeSourceError(error, kind) {
  if (kind === "file") {
    if (error?.name === "NoFile") return "Choose a video file to play.";
    return "The browser cannot play this video file; try an MP4 (H.264) or WebM file.";
  }
  if (!window.isSecureContext) {
    return "The camera needs a secure page: open it over HTTPS, or on this computer as localhost.";
  }
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera access was denied. Allow it in the browser's site settings, or play a video file.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found. Plug one in, or play a video file instead.";
    case "NotReadableError":
    case "AbortError":
      return "The camera is busy: another application may be using it.";
    default:
      return `The camera could not start (${error?.message ?? error}).`;
  }
}

/** Cameras the browser knows; labels are empty until the user has granted access once. */
export async function listCameras() {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices
    .filter((device) => device.kind === "videoinput")
    .map((device, i) => ({ deviceId: device.deviceId, label: device.label || `Camera ${i + 1}` }));
}

export class VideoSource {
  /** @param {HTMLVideoElement} video */
  constructor(video) {
    this.video = video;
    /** @type {MediaStream | null} */
    this.stream = null;
    /** @type {string | null} */
    this.objectUrl = null;
    /** @type {"camera" | "file" | null} */
    this.kind = null;
  }

  get active() {
    return this.kind !== null;
  }

  /** The deviceId of the running camera, if any. */
  get deviceId() {
    return this.stream?.getVideoTracks()[0]?.getSettings().deviceId ?? null;
  }

  /**
   * @param {{deviceId?: string, width: number, height: number}} options
   */
  async startCamera({ deviceId, width, height }) {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw Object.assign(new Error("getUserMedia is not available"), { name: "SecurityError" });
    }
    const open = (id) =>
      navigator.mediaDevices.getUserMedia({
        audio: false,
        video: {
          deviceId: id ? { exact: id } : undefined,
          width: { ideal: width },
          height: { ideal: height },
          frameRate: { ideal: 30 },
        },
      });
    let stream;
    try {
      stream = await open(deviceId);
    } catch (error) {
      // A remembered camera that is gone: take the default one instead.
      if (!deviceId || !["OverconstrainedError", "NotFoundError"].includes(error?.name)) throw error;
      stream = await open(null);
    }
    this.stop();
    this.stream = stream;
    this.kind = "camera";
    this.video.srcObject = stream;
    await this.#play();
  }

  /** @param {File} file */
  async startFile(file) {
    this.stop();
    this.objectUrl = URL.createObjectURL(file);
    this.kind = "file";
    this.video.loop = true;
    this.video.src = this.objectUrl;
    await this.#play();
  }

  stop() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    this.video.pause();
    this.video.srcObject = null;
    this.video.removeAttribute("src");
    this.video.load();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
    this.kind = null;
  }

  async #play() {
    this.video.muted = true;
    if (this.video.readyState < HTMLMediaElement.HAVE_METADATA) {
      await new Promise((resolve, reject) => {
        this.video.addEventListener("loadedmetadata", resolve, { once: true });
        this.video.addEventListener("error", () => reject(this.video.error), { once: true });
      });
    }
    await this.video.play();
  }
}
