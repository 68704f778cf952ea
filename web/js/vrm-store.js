// The user's own VRM, remembered in this browser (IndexedDB) so the OBS view (web/obs.html)
// opened in the same browser shows it too. The file never leaves the browser.

const DB_NAME = "holistream";
const STORE = "avatar";
const KEY = "vrm";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, action) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const request = action(db.transaction(STORE, mode).objectStore(STORE));
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  } finally {
    db.close();
  }
}

/** Remembers a VRM file's bytes (an ArrayBuffer) and name. */
export function rememberVrm(name, bytes) {
  return run("readwrite", (store) => store.put({ name, bytes, savedAt: Date.now() }, KEY));
}

/** The remembered VRM ({name, bytes}), or null. */
export async function rememberedVrm() {
  try {
    return (await run("readonly", (store) => store.get(KEY))) ?? null;
  } catch {
    return null; // private mode, storage off: nothing remembered
  }
}

/** Forgets it (the built-in mannequin was chosen). */
export function forgetVrm() {
  return run("readwrite", (store) => store.delete(KEY));
}
