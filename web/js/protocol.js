// holistream protocol 1.1 for the browser: the binary frame header, hello, message parsing,
// and what errors and close codes mean in words. See docs/protocol.md.

export const PROTOCOL_VERSION = "1.1";
export const FRAME_HEADER_BYTES = 16;
const FRAME_MAGIC = [0x48, 0x53, 0x46, 0x31]; // "HSF1"

/** Number of values per point of each part in a JSON `result`. */
export const PART_STRIDES = Object.freeze({
  pose: 5,
  face: 3,
  left_hand: 3,
  right_hand: 3,
});

/**
 * One binary frame: "HSF1", u32 frame id, f64 capture timestamp (ms), then the image bytes.
 * @param {number} frameId
 * @param {number} ts
 * @param {ArrayBuffer | Uint8Array} image
 * @returns {ArrayBuffer}
 */
export function encodeFrame(frameId, ts, image) {
  const body = image instanceof Uint8Array ? image : new Uint8Array(image);
  const buffer = new ArrayBuffer(FRAME_HEADER_BYTES + body.byteLength);
  const bytes = new Uint8Array(buffer);
  bytes.set(FRAME_MAGIC, 0);
  const view = new DataView(buffer);
  view.setUint32(4, frameId >>> 0, true);
  view.setFloat64(8, ts, true);
  bytes.set(body, FRAME_HEADER_BYTES);
  return buffer;
}

/**
 * The first message of a session.
 * @param {{parts?: string[], fps?: number, model?: string, client?: string}} options
 */
export function helloMessage({ parts = ["face", "hands", "pose"], fps = 30, model = "full", client = "holistream-web/1.0" } = {}) {
  return JSON.stringify({
    type: "hello",
    protocol: PROTOCOL_VERSION,
    parts,
    world: false,
    format: "json",
    fps,
    model,
    client,
  });
}

export const STATS_REQUEST = JSON.stringify({ type: "stats" });

/**
 * Parses a text message from the server; null if it is not a JSON object with a string type.
 * @param {string} text
 * @returns {{type: string, [key: string]: unknown} | null}
 */
export function parseServerMessage(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return null;
  }
  if (msg === null || typeof msg !== "object" || Array.isArray(msg) || typeof msg.type !== "string") {
    return null;
  }
  return msg;
}

/**
 * The WebSocket URL for a page location: same host, ws: or wss: to match http: or https:.
 * @param {Location | URL} location
 * @param {Record<string, string | null | undefined>} query  e.g. {token, stream}
 */
export function socketUrl(location, query = {}) {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(query)) {
    if (value) url.searchParams.set(key, value);
  }
  return url.toString();
}

/** The plain HTTP URL of the same endpoint, to ask the server why an upgrade was refused. */
export function probeUrl(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  return url.toString();
}

const ERROR_WORDS = {
  server_full: "The server is at capacity right now.",
  origin_not_allowed: "The server does not accept connections from this page's address (origin).",
  unauthorized: "The server needs an access token: open this page with ?token=… in its address.",
  stream_taken: "Another producer is already publishing under this stream name.",
  bad_request: "The server refused the connection's parameters.",
  bad_hello: "The server refused this page's settings.",
  unsupported_protocol: "The server speaks a different protocol version; reload the page.",
  image_too_large: "The camera image is larger than the server accepts; pick a lower resolution.",
  undecodable: "The server could not decode a frame.",
  unsupported_image: "The server does not accept this image format.",
  idle_timeout: "The connection was idle for too long.",
  internal: "The server hit an internal error.",
  shutting_down: "The server is restarting.",
  no_ready: "The server accepted the connection but did not answer; it may still be starting up.",
};

/** A sentence for a protocol error code, with the server's own message as a fallback. */
export function describeError(code, message = "") {
  return ERROR_WORDS[code] ?? (message ? `Server error: ${message}` : `Server error (${code}).`);
}

const CLOSE_WORDS = {
  1001: "The server is shutting down.",
  1008: "The server closed the connection (policy violation).",
  1009: "A frame was larger than the server accepts; lower the resolution or the JPEG quality.",
  1011: "The server hit an internal error.",
  1013: "The server is at capacity right now.",
};

/** A sentence for a WebSocket close code, or null for an ordinary close. */
export function describeClose(code) {
  return CLOSE_WORDS[code] ?? null;
}
