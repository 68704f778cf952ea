// Grabs the current video picture and encodes it as JPEG, off the DOM when the browser can
// (OffscreenCanvas.convertToBlob), else through a detached <canvas>.

export class FrameEncoder {
  constructor() {
    this.canvas = typeof OffscreenCanvas === "function" ? new OffscreenCanvas(1, 1) : document.createElement("canvas");
    this.context = this.canvas.getContext("2d", { alpha: false });
  }

  /**
   * Draws the video's current picture (never mirrored: the server sees the real image).
   * Call this synchronously when the frame is captured; encode() may finish later.
   * @param {HTMLVideoElement} video
   * @returns {{width: number, height: number}}
   */
  capture(video) {
    const width = video.videoWidth;
    const height = video.videoHeight;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.context.drawImage(video, 0, 0, width, height);
    return { width, height };
  }

  /**
   * The captured picture as JPEG bytes.
   * @param {number} quality 0–1
   * @returns {Promise<ArrayBuffer>}
   */
  async encode(quality) {
    const options = { type: "image/jpeg", quality };
    const blob =
      "convertToBlob" in this.canvas
        ? await this.canvas.convertToBlob(options)
        : await new Promise((resolve, reject) =>
            this.canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("JPEG encoding failed"))), options.type, quality),
          );
    return blob.arrayBuffer();
  }
}
