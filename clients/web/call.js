// The call page: start/stop, controls, live stats. Test hooks on window.emoteTest.
import { connect, fetchConfig, frameCounter, pageParams, receiveLatencyMs } from "/web/emote.js";

const $ = (id) => document.getElementById(id);
const params = pageParams();
const video = $("video");
let call = null;
let counter = null;
let lastStats = null;

function showError(e) {
  $("error").textContent = String(e && e.message ? e.message : e);
}

async function fillPortraits() {
  try {
    const cfg = await fetchConfig(params.token);
    for (const name of cfg.portraits) $("portrait").add(new Option(name, name, false, name === params.portrait));
  } catch (e) {
    showError(e);
  }
}

function onStats(msg) {
  if (msg.type === "error") return showError(msg.message);
  if (msg.type !== "stats") return;
  lastStats = msg;
  $("delay").textContent = `${msg.delay_ms.toFixed(0)} ms`;
  const s = msg.stages_ms || {};
  $("stages").textContent = ["features", "motion", "render"].map((k) => `${k} ${(s[k] ?? 0).toFixed(1)}`).join(" · ") + " ms";
  $("held").textContent = `${msg.frames_held} of ${msg.frames_sent}`;
}

async function refresh() {
  if (!call) return;
  $("fps").textContent = `${counter.fps().toFixed(1)} fps`;
  const r = await receiveLatencyMs(call.pc);
  const server = lastStats?.stages_ms?.arrival_to_sent ?? call.delayMs;
  $("latency").textContent = `${(server + r.halfRtt * 2 + r.jitterBuffer).toFixed(0)} ms ` +
    `(server ${server.toFixed(0)}, network ${(r.halfRtt * 2).toFixed(0)}, jitter buffer ${r.jitterBuffer.toFixed(0)})`;
}

async function start() {
  $("start").disabled = true;
  showError("");
  try {
    call = await connect({ token: params.token, portrait: $("portrait").value || params.portrait, video, onStats,
                           onEnd: (why) => { if (call) showError(`ended: ${why}`); stop(); } });
    counter = frameCounter(video);
    $("stop").disabled = false;
  } catch (e) {
    showError(e);
    $("start").disabled = false;
  }
}

function stop() {
  if (call) call.close();
  call = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("hear").addEventListener("change", (e) => { video.muted = !e.target.checked; });
const sendControls = () => call && call.send({
  type: "controls", expression_intensity: +$("expression").value, head_motion_speed: +$("speed").value,
  head_motion_amplitude: +$("amplitude").value, emotion: $("emotion").value, gaze: $("gaze").value });
for (const id of ["expression", "speed", "amplitude"]) $(id).addEventListener("input", sendControls);
for (const id of ["emotion", "gaze"]) $(id).addEventListener("change", sendControls);
$("blinks").addEventListener("change", () => call && call.send({ type: "controls", blink_rate_per_min: +$("blinks").value }));
$("portrait").addEventListener("change", () => call && call.send({ type: "portrait", name: $("portrait").value }));
// Hooks for automated tests: the state, and a recording of what the page receives (webm, base64).
window.emoteTest = {
  state: () => ({ connected: !!call, fps: counter ? counter.fps() : 0, frames: counter ? counter.total() : 0,
                  session: call?.session, stats: lastStats, error: $("error").textContent }),
  record: (ms) => new Promise((resolve, reject) => {
    const rec = new MediaRecorder(call.stream, { mimeType: "video/webm;codecs=vp8,opus" });
    const chunks = [];
    rec.ondataavailable = (e) => chunks.push(e.data);
    rec.onerror = reject;
    rec.onstop = async () => {
      const buf = new Uint8Array(await new Blob(chunks).arrayBuffer());
      let s = "";
      for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
      resolve(btoa(s));
    };
    rec.start(1000);
    setTimeout(() => rec.stop(), ms);
  }),
  // Playout clock of each receiver: [[kind, rtpTimestamp, timestamp ms], ...] polled every 5 ms.
  syncProbe: (ms) => new Promise((resolve) => {
    const out = [];
    const recv = call.pc.getReceivers();
    const timer = setInterval(() => {
      for (const r of recv) for (const s of r.getSynchronizationSources()) out.push([r.track.kind, s.rtpTimestamp, s.timestamp]);
    }, 5);
    setTimeout(() => { clearInterval(timer); resolve(out); }, ms);
  }),
  stop,
};

setInterval(refresh, 500);
await fillPortraits();
const query = new URLSearchParams(location.search);
if (query.get("hear") === "1") {
  $("hear").checked = true;
  video.muted = false;
}
if (query.get("autostart") === "1") start();

