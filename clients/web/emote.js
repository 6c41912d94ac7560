// emote live client for browsers: microphone -> server, portrait video (+ the delayed voice) back.
// Plain ES module, no build step. Used by the call page (/) and the OBS overlay (/overlay).

export function pageParams() {
  const q = new URLSearchParams(location.search);
  return { token: q.get("token") || "", portrait: q.get("portrait") || "" };
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export async function fetchConfig(token) {
  const r = await fetch("/api/config", { headers: authHeaders(token) });
  if (!r.ok) throw new Error(`config: HTTP ${r.status}: ${await r.text()}`);
  return r.json();
}

function gatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// Connect: returns {pc, stream, ws, session, delayMs, close()}. `onStats(msg)` gets the server's stats.
// `overlay: true` asks for packed frames (2S x S: colour left, alpha as grey right; see overlay.html).
export async function connect({ token = "", portrait = "", overlay = false, video, onStats = () => {},
                                onEnd = () => {} }) {
  const cfg = await fetchConfig(token);
  const pc = new RTCPeerConnection({ iceServers: cfg.ice_servers || [] });
  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  mic.getAudioTracks().forEach((t) => pc.addTrack(t, mic));
  pc.addTransceiver("video", { direction: "recvonly" });
  const remote = new MediaStream();
  pc.addEventListener("track", (e) => {
    remote.addTrack(e.track);          // both tracks share one stream: the browser syncs them
    if (video && video.srcObject !== remote) video.srcObject = remote;
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc);         // the server does not trickle: send all candidates at once
  const body = { sdp: pc.localDescription.sdp, type: "offer" };
  if (portrait) body.portrait = portrait;
  if (overlay) body.overlay = true;
  const r = await fetch("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders(token) },
    body: JSON.stringify(body),
  });
  if (!r.ok) {
    pc.close();
    mic.getTracks().forEach((t) => t.stop());
    throw new Error(`offer: HTTP ${r.status}: ${await r.text()}`);
  }
  const answer = await r.json();
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  const wsUrl = new URL(`/ws?session=${answer.session}`, location.href);
  wsUrl.protocol = wsUrl.protocol.replace("http", "ws");
  if (token) wsUrl.searchParams.set("token", token);
  const ws = new WebSocket(wsUrl);
  ws.addEventListener("message", (e) => onStats(JSON.parse(e.data)));
  ws.addEventListener("close", () => onEnd("control channel closed"));
  const close = () => {
    ws.close();
    pc.close();
    mic.getTracks().forEach((t) => t.stop());
  };
  window.addEventListener("pagehide", close);
  return { pc, stream: remote, ws, session: answer.session, delayMs: answer.delay_ms, close,
           send: (msg) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(msg)) };
}

// Frames actually presented by <video>, per second, over the last `windowMs`.
export function frameCounter(video, windowMs = 2000) {
  const times = [];
  let total = 0;
  const tick = (now) => {
    times.push(now);
    total += 1;
    while (times.length && now - times[0] > windowMs) times.shift();
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
  return {
    fps: () => (times.length > 1 ? ((times.length - 1) * 1000) / (times[times.length - 1] - times[0]) : 0),
    total: () => total,
  };
}

// Receive-side latency pieces from WebRTC stats: half the round trip and the jitter buffer (ms).
export async function receiveLatencyMs(pc) {
  let rtt = 0, jitter = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime) rtt = s.currentRoundTripTime * 1000;
    if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount)
      jitter = (s.jitterBufferDelay / s.jitterBufferEmittedCount) * 1000;
  });
  return { halfRtt: rtt / 2, jitterBuffer: jitter };
}
