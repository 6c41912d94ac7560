"""The aiohttp server: signaling, control channel, metrics and the web pages.

Routes
------
* ``POST /offer``   JSON ``{"sdp", "type": "offer", "portrait"?, "overlay"?}`` -> ``{"sdp",
  "type": "answer", "session", "delay_ms", "overlay"}``. Non-trickle: send the offer after ICE
  gathering completed. ``"overlay": true`` (the OBS page): the engine makes the person's matte
  and every video frame is packed, 2S wide and S high, colour on the left, the matte as grey on
  the right (see emote.streaming.encoding.to_i420_packed); other sessions make no matte.
  400 for malformed JSON/SDP (with a message), 404 for an unknown portrait, 503 when
  ``max_sessions`` are open.
* ``GET /ws?session=ID`` WebSocket control channel. In: ``{"type": "controls",
  "expression_intensity": x, "head_motion_speed": y}``, ``{"type": "portrait", "name": n}``.
  Out: ``{"type": "stats", ...}`` every ``stats_interval_s``, ``{"type": "error", "message"}``.
  Closing the WebSocket ends its session (a closed tab frees its session at once).
* ``GET /metrics``  Prometheus text (see :mod:`emote.streaming.metrics`).
* ``GET /api/config`` portraits, ICE servers and fps for the pages.
* ``GET /`` call page, ``GET /overlay`` OBS overlay, ``/web/*`` their scripts (``web_dir``).

Guards (one middleware, :func:`_guard`, in front of every route, pages and scripts included):

* the access token, when one is set: ``Authorization: Bearer TOKEN``, ``?token=TOKEN`` or the
  ``emote_token`` cookie, which a page opened with ``?token=`` receives (HttpOnly, SameSite=Strict)
  so that its scripts, its offer and its WebSocket carry it; 401 otherwise;
* CORS is off: a request whose ``Origin`` is another site gets 403 unless ``cors_origins`` lists
  it (then it gets the CORS headers, and preflights are answered);
* request bodies above ``max_request_bytes`` get 413, WebSocket messages above 4 KiB close it;
* static files come only from ``web_dir`` (aiohttp refuses ``..``), portraits only by their
  configured names (``[A-Za-z0-9_-]``); every response says ``nosniff`` and ``no-referrer`` (the
  token in a page's URL does not leak).
"""
from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCIceServer, RTCSessionDescription

from emote.engine.exceptions import ConfigError, EmoteError
from emote.engine.expression import EMOTIONS, GAZE_MODES
from emote.engine.generator import DEFAULT_GENERATOR
from emote.streaming.encoding import tune_encoders
from emote.streaming.ice import filter_sdp_candidates, restrict_ice_addresses
from emote.streaming.metrics import CONTENT_TYPE_LATEST, StreamingMetrics
from emote.streaming.session import Session, SessionOptions
from emote.streaming.worker import EnginePool, EngineWorker

__all__ = ["ServerSettings", "make_app", "run_server", "PipelineFactory", "STATE"]

log = logging.getLogger(__name__)

# portrait image path -> a fresh pipeline (blocking); for an overlay session it is called as
# factory(path, alpha=True) and its frames should carry ``alpha`` (see engine.pipeline.Frame)
PipelineFactory = Callable[..., Any]
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
COOKIE = "emote_token"
_CONTROL_RANGES = {"expression_intensity": (0.0, 2.0), "head_motion_speed": (0.0, 2.0),
                   "head_motion_amplitude": (0.0, 2.0), "blink_rate_per_min": (0.0, 60.0)}
_CONTROL_CHOICES = {"emotion": tuple(EMOTIONS), "gaze": GAZE_MODES}


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server needs; units in the names. ``portraits``: (name, image path) pairs,
    the first is the default; empty means the engine's embedded default portrait."""

    host: str = "127.0.0.1"
    port: int = 8080
    ice_servers: tuple[str, ...] = ()          # e.g. ("stun:stun.example.org:3478",) for NAT
    ice_addresses: tuple[str, ...] = ()        # restrict ICE candidates, e.g. ("127.0.0.1",)
    max_sessions: int = 4
    token: str | None = None
    cors_origins: tuple[str, ...] = ()         # other sites' pages allowed to call the API
    max_request_bytes: int = 65536             # an SDP offer is 3-10 KB
    portraits: tuple[tuple[str, str], ...] = ()
    web_dir: str | None = None
    size_px: int = 512
    fps: int = 25
    seed: int = 0
    generator: str = DEFAULT_GENERATOR
    steps: int | None = None           # the backbone's diffusion sampling steps per chunk; None: its default
    cache_dir: str | None = None
    hop_frames: int = 1
    context_frames: int = 3
    margin_ms: float = 50.0
    packet_ms: float = 20.0            # the peers' audio packet length (Opus ptime)
    gap_fill_ms: float = 200.0          # no audio for this long: fill with silence
    peer_timeout_s: float = 3.0
    connect_timeout_s: float = 20.0     # an offer whose peer never connects is dropped after this
    low_latency_jitter_buffer: bool = True    # see emote.streaming.jitter
    stats_interval_s: float = 0.5
    session: SessionOptions = field(default=SessionOptions(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.max_sessions < 1:
            raise ConfigError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("the access token must have at least 8 characters")
        if not 0 <= self.margin_ms <= 1000 or not 20 <= self.gap_fill_ms <= 2000:
            raise ConfigError("margin_ms must be 0..1000 and gap_fill_ms 20..2000")
        if self.peer_timeout_s <= 0.2 or self.stats_interval_s <= 0:
            raise ConfigError("peer_timeout_s must be > 0.2 and stats_interval_s > 0")
        names = [n for n, _ in self.portraits]
        if len(set(names)) != len(names):
            raise ConfigError(f"portrait names must be unique: {names}")
        bad = [n for n in names if not _NAME.fullmatch(n)]
        if bad:
            raise ConfigError(f"portrait names may use only letters, digits, '_' and '-': {bad}")
        if not 1024 <= self.max_request_bytes <= 1 << 24:
            raise ConfigError(f"max_request_bytes must be 1024..16777216, got {self.max_request_bytes}")
        odd = [o for o in self.cors_origins if not re.fullmatch(r"https?://[^/\s]+", o)]
        if odd:
            raise ConfigError(f"CORS origins look like https://host[:port], without a path: {odd}")
        if self.steps is not None:
            # checked here too, so that a wrong --steps stops `emote serve` before any engine starts
            from emote.engine.pipeline import PipelineSettings
            PipelineSettings(**_pipeline_kwargs(self))
        object.__setattr__(self, "session", SessionOptions(
            fps=self.fps, hop_frames=self.hop_frames, context_frames=self.context_frames,
            margin_ms=self.margin_ms, packet_ms=self.packet_ms, gap_fill_ms=self.gap_fill_ms,
            peer_timeout_s=self.peer_timeout_s, connect_timeout_s=self.connect_timeout_s,
            low_latency_jitter_buffer=self.low_latency_jitter_buffer))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def rtc_configuration(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in self.ice_servers])


def _pipeline_kwargs(settings: ServerSettings) -> dict:
    """PipelineSettings fields for the engine processes."""
    return {"size_px": settings.size_px, "fps": settings.fps, "seed": settings.seed,
            "generator": settings.generator, "steps": settings.steps, "cache_dir": settings.cache_dir}


def _accepts_alpha(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` can be called with an ``alpha`` keyword."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "alpha" or p.kind is p.VAR_KEYWORD for p in params)


def _portraits(settings: ServerSettings) -> dict[str, str]:
    if settings.portraits:
        return dict(settings.portraits)
    from emote.engine.resources import default_portrait_path
    return {"default": str(default_portrait_path())}


def _parse_controls(msg: dict) -> tuple[dict, str | None]:
    """A /ws controls message -> (controls, None) or ({}, what is wrong)."""
    known = set(_CONTROL_RANGES) | set(_CONTROL_CHOICES) | {"type"}
    if set(msg) - known:
        return {}, f"unknown controls {sorted(set(msg) - known)}; known: {sorted(known - {'type'})}"
    try:
        controls = {k: float(msg[k]) for k in _CONTROL_RANGES if k in msg}
    except (TypeError, ValueError):
        return {}, f"numeric controls must be numbers: {sorted(_CONTROL_RANGES)}"
    bad = [k for k, v in controls.items() if not _CONTROL_RANGES[k][0] <= v <= _CONTROL_RANGES[k][1]]
    bad += [k for k, opts in _CONTROL_CHOICES.items() if k in msg and msg[k] not in opts]
    if bad:
        return {}, f"out of range: {bad}; ranges {_CONTROL_RANGES}, choices {_CONTROL_CHOICES}"
    controls.update({k: msg[k] for k in _CONTROL_CHOICES if k in msg})
    return controls, None


class _Server:
    """State behind the routes: sessions by id, the pipeline factory and metrics."""

    def __init__(self, settings: ServerSettings, factory: PipelineFactory | None) -> None:
        self.settings, self.factory = settings, factory
        self.pool = None if factory is not None else EnginePool(
            _pipeline_kwargs(settings), spares=1, queue_windows=settings.session.engine_queue_windows)
        self.metrics = StreamingMetrics()
        self.sessions: dict[str, Session] = {}
        self.portraits = _portraits(settings)
        self.default_portrait = next(iter(self.portraits))
        self._pending = 0                      # offers being set up (count towards the limit)

    # -- helpers -----------------------------------------------------------------------------
    def authorized(self, request: web.Request) -> bool:
        tok = self.settings.token
        if tok is None:
            return True
        header = request.headers.get("Authorization", "")
        given = [header[7:] if header.startswith("Bearer ") else "",
                 request.query.get("token", ""), request.cookies.get(COOKIE, "")]
        return any(hmac.compare_digest(g.encode(), tok.encode()) for g in given if g)

    def _need_auth(self, request: web.Request) -> None:
        if not self.authorized(request):
            raise web.HTTPUnauthorized(text="missing or wrong access token (open the page as "
                                            "/?token=TOKEN, or send Authorization: Bearer TOKEN)")

    def cors_headers(self, request: web.Request) -> dict[str, str]:
        """{} for same-origin requests and those without an Origin; the CORS headers for an
        allowed origin; 403 for any other site."""
        origin = request.headers.get("Origin")
        if origin is None or urlsplit(origin).netloc == request.host:
            return {}
        if origin in self.settings.cors_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS"}
        self.metrics.sessions_rejected.labels("origin").inc()
        raise web.HTTPForbidden(text=f"cross-origin request from {origin} refused (CORS is off; "
                                     "emote serve --cors-origin ORIGIN allows a site)")

    async def load_pipeline(self, portrait: str, alpha: bool = False) -> Any:
        """Thread mode only: a pipeline made by the factory in this process; ``alpha``: called
        as ``factory(path, alpha=True)`` (a factory without that keyword makes opaque frames)."""
        path = self.portraits[portrait]
        make: Callable[[], Any] = lambda: self.factory(path)
        if alpha and _accepts_alpha(self.factory):
            make = lambda: self.factory(path, alpha=True)
        elif alpha:
            log.warning("the pipeline factory takes no alpha keyword: the overlay will be opaque")
        return await asyncio.get_running_loop().run_in_executor(None, make)

    async def make_engine(self, portrait: str, alpha: bool = False) -> Any:
        """An engine worker with ``portrait`` loaded: a process from the pool, or (with a
        pipeline factory) a thread around a pipeline made here. ``alpha``: an overlay session's
        engine (it makes the matte and sends packed frames)."""
        q = self.settings.session.engine_queue_windows
        if self.pool is None:
            return EngineWorker(await self.load_pipeline(portrait, alpha), queue_windows=q, alpha=alpha)
        path = self.portraits[portrait]
        return await asyncio.get_running_loop().run_in_executor(None, self.pool.acquire, path, alpha)

    # -- routes --------------------------------------------------------------------------------
    async def offer(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            raise web.HTTPBadRequest(text=f"the body is not JSON: {e}")
        if not isinstance(body, dict) or body.get("type") != "offer" or \
                not isinstance(body.get("sdp"), str) or not body["sdp"].startswith("v=0"):
            raise web.HTTPBadRequest(text='expected JSON {"sdp": "v=0...", "type": "offer"}')
        portrait = body.get("portrait") or self.default_portrait
        if not isinstance(portrait, str) or portrait not in self.portraits:
            raise web.HTTPNotFound(text=f"unknown portrait {portrait!r}; known: "
                                        f"{', '.join(self.portraits)}")
        overlay = body.get("overlay", False)
        if not isinstance(overlay, bool):
            raise web.HTTPBadRequest(text=f'"overlay" must be true or false (JSON booleans), '
                                          f'got {overlay!r}')
        if len(self.sessions) + self._pending >= self.settings.max_sessions:
            self.metrics.sessions_rejected.labels("full").inc()
            raise web.HTTPServiceUnavailable(text=f"{self.settings.max_sessions} sessions are open")
        self._pending += 1
        try:
            return await self._open_session(body["sdp"], portrait, overlay)
        finally:
            self._pending -= 1

    async def _open_session(self, sdp: str, portrait: str, overlay: bool) -> web.Response:
        sdp = filter_sdp_candidates(sdp, self.settings.ice_addresses)
        try:
            engine = await self.make_engine(portrait, alpha=overlay)
        except EmoteError as e:
            self.metrics.sessions_rejected.labels("portrait").inc()
            raise web.HTTPInternalServerError(text=f"portrait {portrait!r} failed: {e}")
        session = Session(engine, portrait, self.settings.session, self.metrics, self._forget,
                          overlay=overlay)
        self.sessions[session.sid] = session
        try:
            answer = await session.accept(RTCSessionDescription(sdp=sdp, type="offer"),
                                          self.settings.rtc_configuration())
        except Exception as e:  # noqa: BLE001 - aiortc raises many kinds on a bad SDP
            await session.close(f"bad offer: {e}")
            self.metrics.sessions_rejected.labels("sdp").inc()
            raise web.HTTPBadRequest(text=f"malformed SDP offer: {type(e).__name__}: {e}")
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": session.sid,
                                  "delay_ms": round(session.delay_s * 1000, 1), "overlay": overlay})

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.sid, None)

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        session = self.sessions.get(request.query.get("session", ""))
        if session is None:
            raise web.HTTPNotFound(text="no such session (POST /offer first)")
        ws = web.WebSocketResponse(heartbeat=2.0, max_msg_size=4096)
        await ws.prepare(request)
        pusher = asyncio.create_task(self._push_stats(ws, session), name=f"{session}-stats")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = await self._control(session, msg.data)
                    if reply is not None:
                        await ws.send_json(reply)
        finally:
            pusher.cancel()
            await session.close("websocket closed")
        return ws

    async def _push_stats(self, ws: web.WebSocketResponse, session: Session) -> None:
        while not ws.closed and not session.closed.is_set():
            await ws.send_json(session.stats())
            await asyncio.sleep(self.settings.stats_interval_s)
        if session.closed.is_set() and not ws.closed:
            await ws.close()

    async def _control(self, session: Session, text: str) -> dict | None:
        try:
            msg = json.loads(text)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            return {"type": "error", "message": 'expected JSON with a "type"'}
        if kind == "controls":
            controls, error = _parse_controls(msg)
            if error:
                return {"type": "error", "message": error}
            session.set_controls(**controls)
            return {"type": "controls", **controls}
        if kind == "portrait":
            name = msg.get("name")
            if name not in self.portraits:
                return {"type": "error", "message": f"unknown portrait {name!r}"}
            source = self.portraits[name] if self.pool is not None else \
                await self.load_pipeline(name, alpha=session.overlay)
            session.switch_portrait(source, name)
            return {"type": "portrait", "name": name}
        return {"type": "error", "message": f"unknown message type {kind!r}"}

    async def metrics_route(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response({"portraits": list(self.portraits), "fps": self.settings.fps,
                                  "ice_servers": [{"urls": u} for u in self.settings.ice_servers]})

    async def close_all(self, _app: web.Application | None = None) -> None:
        await asyncio.gather(*(s.close("server shutting down") for s in list(self.sessions.values())))
        if self.pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.close)


STATE = web.AppKey("emote", _Server)      # app[STATE]: sessions, metrics, portraits
_SAFE = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@web.middleware
async def _guard(request: web.Request, handler) -> web.StreamResponse:
    """Origin, then token, for every route (module docstring); security headers on the way out;
    the token cookie for a page opened with ?token=."""
    srv = request.app[STATE]
    cors = srv.cors_headers(request)
    if request.method == "OPTIONS" and cors:
        return web.Response(status=204, headers={**cors, "Access-Control-Max-Age": "600"})
    try:
        srv._need_auth(request)
        resp = await handler(request)
    except web.HTTPException as e:
        e.headers.update({**_SAFE, **cors})
        raise
    if not resp.prepared:
        resp.headers.update({**_SAFE, **cors})
        tok = srv.settings.token
        if tok and request.query.get("token") == tok and request.cookies.get(COOKIE) != tok:
            resp.set_cookie(COOKIE, tok, httponly=True, samesite="Strict", path="/")
    return resp


def make_app(settings: ServerSettings = ServerSettings(),
             pipeline_factory: PipelineFactory | None = None) -> web.Application:
    """The aiohttp application (routes above). By default each session's engine runs in its own
    process (emote.streaming.worker.EnginePool: the engine's ``load_pipeline`` with the
    settings' size, fps, seed, generator, steps and cache). With ``pipeline_factory(path)`` the
    pipelines are made in this process and run in threads (tests, custom engines)."""
    restrict_ice_addresses(settings.ice_addresses)
    tune_encoders()
    srv = _Server(settings, pipeline_factory)
    app = web.Application(client_max_size=settings.max_request_bytes, middlewares=[_guard])
    app[STATE] = srv
    app.router.add_post("/offer", srv.offer)
    app.router.add_get("/ws", srv.websocket)
    app.router.add_get("/metrics", srv.metrics_route)
    app.router.add_get("/api/config", srv.config)
    if settings.web_dir:
        web_dir = os.path.abspath(settings.web_dir)
        def page(name: str):
            async def handler(_request: web.Request) -> web.FileResponse:
                return web.FileResponse(os.path.join(web_dir, name))
            return handler
        app.router.add_get("/", page("index.html"))
        app.router.add_get("/overlay", page("overlay.html"))
        app.router.add_static("/web/", web_dir)
    app.on_shutdown.append(srv.close_all)
    return app


async def warm_up(app: web.Application) -> None:
    """Prepare every portrait once (fills the avatar cache; a bad image fails here, not later)
    and start the spare engine process."""
    srv: _Server = app[STATE]
    for name in srv.portraits:
        engine = await srv.make_engine(name)
        engine.stop()
        await asyncio.get_running_loop().run_in_executor(None, engine.join, 5.0)


def run_server(settings: ServerSettings, pipeline_factory: PipelineFactory | None = None,
               print_fn: Callable[[str], None] = print) -> None:
    """Blocking: warm up, print the URL, serve until interrupted."""
    app = make_app(settings, pipeline_factory)

    async def _start(a: web.Application) -> None:
        await warm_up(a)
        tok = f"?token={settings.token}" if settings.token else ""
        print_fn(f"emote serving on {settings.url}{tok}  (overlay: {settings.url}overlay{tok})")

    app.on_startup.append(_start)
    web.run_app(app, host=settings.host, port=settings.port, print=None,
                handle_signals=True, shutdown_timeout=5.0)
