"""The renderer: motion -> frame, by warping the reference photo (identity cannot drift).

Per frame: the rig gives the deformed mesh; kernels.warp backward-warps the head region's box of the
photo; where the inner lips part more than in the photo, a mouth interior (dark cavity, upper teeth
hanging from the upper lip, lower teeth riding on the lower lip, tongue) is composited, coloured from
the photo's own lips, skin and (if visible) teeth. Everything outside ring O is the photo, untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emote.kernels.composite import blend_into
from emote.kernels.warp import MeshWarp, WarpSettings, pad_channels

from . import landmarks as L
from .avatar import Avatar
from .exceptions import ConfigError
from .rig import Rig, RigSettings, _smooth


@dataclass(frozen=True)
class RendererSettings:
    grid_step_px: int = 4               # resolution of the displacement field (1, 2 or 4 px)
    inverse_iterations: int = 2
    mouth_interior: bool = True
    teeth: bool = True
    feather_px: float = 1.0             # soft edge of the mouth interior
    open_blend_iod: float = 0.035       # extra lip gap over which the interior fades in

    def __post_init__(self) -> None:
        if self.grid_step_px not in (1, 2, 4):
            raise ConfigError(f"grid_step_px must be 1, 2 or 4, got {self.grid_step_px}")
        if not 0 < self.feather_px <= 8:
            raise ConfigError(f"feather_px must be within (0, 8], got {self.feather_px}")
        if not 0 < self.open_blend_iod <= 0.5:
            raise ConfigError(f"open_blend_iod must be within (0, 0.5], got {self.open_blend_iod}")


def _patch_box(pts: np.ndarray, margin: int, size: int, min_side: int) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) around (K, 2) points plus a margin, inside [0, size); None if too small."""
    x0, y0 = np.floor(pts.min(0)).astype(int) - margin
    x1, y1 = np.ceil(pts.max(0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    return None if x1 - x0 < min_side or y1 - y0 < min_side else (x0, y0, x1, y1)


class MouthPainter:
    """Draws the mouth interior between the deformed inner lips. Colours come from the photo."""

    def __init__(self, avatar: Avatar, rig: Rig, settings: RendererSettings) -> None:
        self.s, self.rig, self.u = settings, rig, rig.u
        img = avatar.image.astype(np.float32)
        lips = avatar.region_mask("mouth") > 0
        self.lip_rgb = np.median(img[lips], 0) if lips.any() else np.array([170, 90, 90], np.float32)
        face = avatar.region_mask("face") > 0
        skin = np.median(img[face & ~lips], 0) if face.any() else np.array([200, 160, 140], np.float32)
        self.light = float(np.clip(skin.mean() / 165.0, 0.45, 1.25))
        self.teeth_rgb = self._teeth_colour(avatar, img)
        up, lo = rig.vertices[list(L.LIPS_INNER_UPPER), :2], rig.vertices[list(L.LIPS_INNER_LOWER), :2]
        self.ref_gap = ((lo - up) @ rig.ey).astype(np.float32)       # pixels, per chain point

    def _teeth_colour(self, avatar: Avatar, img: np.ndarray) -> np.ndarray:
        poly = avatar.points[list(L.LIPS_INNER_UPPER + L.LIPS_INNER_LOWER[::-1]), :2]
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 255)
        px = img[m > 0]
        if len(px) >= 12:
            lum = px.mean(1)
            bright = px[lum >= np.percentile(lum, 75)]
            if bright.mean() > 110:                                   # the photo shows its teeth
                return bright.mean(0)
        return np.array([236, 230, 214], np.float32) * self.light

    def paint(self, frame: np.ndarray, verts: np.ndarray) -> None:
        """Composite the interior into frame (S, S, 3) uint8, in place. verts: (N, 2) deformed, pixels."""
        up, lo = verts[list(L.LIPS_INNER_UPPER)], verts[list(L.LIPS_INNER_LOWER)]
        ex, ey = self.rig.ex, self.rig.ey
        gap_now = (lo - up) @ ey
        if np.max(gap_now - self.ref_gap) < 0.3:
            return
        box = _patch_box(np.vstack([up, lo]), 2, frame.shape[0], 2)
        if box is None:
            return
        x0, y0, x1, y1 = box
        c = (up[0] + up[-1]) / 2
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) - c[0], np.arange(y0, y1, dtype=np.float32) - c[1])
        lx, ly = gx * ex[0] + gy * ex[1], gx * ey[0] + gy * ey[1]
        ul, ll = (up - c) @ np.stack([ex, ey], 1), (lo - c) @ np.stack([ex, ey], 1)
        ou, ol = np.argsort(ul[:, 0]), np.argsort(ll[:, 0])
        f32 = np.float32                       # np.interp returns float64: the rest stays float32
        yu = np.interp(lx, ul[ou, 0], ul[ou, 1]).astype(f32)
        yl = np.interp(lx, ll[ol, 0], ll[ol, 1]).astype(f32)
        extra = np.interp(lx, ul[ou, 0], (gap_now - self.ref_gap)[ou]).astype(f32)
        hw = max(float(ul[:, 0].max() - ul[:, 0].min()) / 2, 1.0)
        f = self.s.feather_px
        a = _smooth((ly - yu) / f + 0.5) * _smooth((yl - ly) / f + 0.5)
        a *= _smooth(extra / (self.s.open_blend_iod * self.u))
        a *= (lx > ul[:, 0].min()) & (lx < ul[:, 0].max())
        if not a.any():
            return
        rgb = self._interior(lx / hw, ly - yu, yl - ly, np.maximum(yl - yu, 1e-3))
        blend_into(frame[y0:y1, x0:x1], rgb, a.astype(np.float32))

    def _interior(self, nx: np.ndarray, du: np.ndarray, dl: np.ndarray, gap: np.ndarray) -> np.ndarray:
        """Colour of the interior. nx: -1..1 across the mouth; du/dl: pixels below the upper / above the lower lip."""
        u = self.u
        across = np.clip(1 - np.abs(nx), 0, 1)
        depth = 0.55 + 0.45 * np.sqrt(across)                  # corners recede into shadow
        cavity = (self.lip_rgb * np.array([0.36, 0.24, 0.24], np.float32) + np.array([12, 6, 6], np.float32)) * self.light
        vert = np.clip(np.minimum(du, dl) / (0.5 * gap + 1e-3), 0, 1)
        out = cavity[None, None, :] * (1.0 - 0.45 * vert)[..., None]
        tongue_top = gap * 0.62
        tongue = _smooth((du - tongue_top) / (0.05 * u + 1)) * _smooth((0.75 - np.abs(nx)) / 0.3)
        tongue_rgb = self.lip_rgb * 0.55 * self.light
        out = out * (1 - tongue[..., None]) + tongue_rgb * (0.7 + 0.3 * (1 - vert))[..., None] * tongue[..., None]
        if self.s.teeth:
            teeth_u = np.minimum(0.12 * u * np.sqrt(across), 0.55 * gap)
            tu = _smooth((teeth_u - du) / 1.2 + 0.5)
            teeth_l = np.minimum(0.05 * u * np.sqrt(across), 0.25 * gap)
            tl = _smooth((teeth_l - dl) / 1.2 + 0.5) * _smooth((gap - 0.12 * u) / (0.08 * u))
            seams = 1 - 0.07 * np.exp(-((np.abs(nx * 4.2) % 1 - 0.5) * 7) ** 2)
            shade_u = (0.8 + 0.2 * np.clip(du / (teeth_u + 1e-3), 0, 1)) * seams
            t_rgb = self.teeth_rgb[None, None, :]
            out = out * (1 - tu[..., None]) + t_rgb * (shade_u * (0.72 + 0.28 * across))[..., None] * tu[..., None]
            out = out * (1 - tl[..., None]) + t_rgb * (0.75 * seams * (0.55 + 0.45 * across))[..., None] * tl[..., None]
        return (out * depth[..., None]).clip(0, 255)


class EyelidPainter:
    """Covers the eye with lid skin as the lids close (the warp alone leaves a line of eye showing).

    The lid colour is sampled from the photo just above each upper lid; a thin lash line is drawn
    where the lids meet.
    """

    def __init__(self, avatar: Avatar, rig: Rig) -> None:
        self.rig = rig
        self.eyes = ((L.EYE_R_UPPER, L.EYE_R_LOWER), (L.EYE_L_UPPER, L.EYE_L_LOWER))
        img = avatar.image.astype(np.float32)
        self.lid_rgb, self.ref_gap = [], []
        for up, lo in self.eyes:
            pu = rig.vertices[list(up), :2]
            band = np.vstack([pu[2:-2] - rig.ey * rig.u * k for k in (0.06, 0.09, 0.12)])
            ij = np.clip(np.round(band).astype(int), 0, avatar.size_px - 1)
            self.lid_rgb.append(np.median(img[ij[:, 1], ij[:, 0]], 0))
            self.ref_gap.append(float(((rig.vertices[list(lo[2:-2]), :2] - pu[2:-2]) @ rig.ey).mean()))

    def paint(self, frame: np.ndarray, verts: np.ndarray) -> None:
        """Composite lids into frame (S, S, 3) uint8 in place, verts (N, 2) deformed pixels."""
        for (up, lo), rgb, g0 in zip(self.eyes, self.lid_rgb, self.ref_gap):
            pu, pl = verts[list(up)], verts[list(lo)]
            gap = float(((pl[2:-2] - pu[2:-2]) @ self.rig.ey).mean())
            closed = float(_smooth(np.array((1 - gap / max(g0, 1e-3) - 0.35) / 0.5)))
            if closed <= 0.01:
                continue
            pts = np.vstack([pu, pl[::-1]])
            box = _patch_box(pts, 4, frame.shape[0], 3)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            m = np.zeros((y1 - y0, x1 - x0), np.float32)
            poly = np.round((pts - (x0, y0)) * 16).astype(np.int32)
            cv2.fillPoly(m, [poly], 1.0, lineType=cv2.LINE_AA, shift=4)
            m = cv2.dilate(m, np.ones((3, 3), np.uint8))
            m = cv2.GaussianBlur(m, (5, 5), 1.0)
            lash = np.zeros_like(m)
            cv2.polylines(lash, [np.round((pl - (x0, y0)) * 16).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA, 4)
            colour = np.broadcast_to(rgb, m.shape + (3,)).astype(np.float32)
            lash = cv2.GaussianBlur(lash, (3, 3), 0.7)
            colour = colour * (1 - 0.5 * lash[..., None])
            blend_into(frame[y0:y1, x0:x1], colour, m * closed)


class Renderer:
    """Motion -> frames for one avatar. ``renderer(motion)`` -> (S, S, 3) uint8 RGB.

    motion: (C,) float32 in engine.motion channels. Owns the rig and the mesh warp.
    """

    def __init__(self, avatar: Avatar, settings: RendererSettings = RendererSettings(),
                 rig_settings: RigSettings = RigSettings(), matte: np.ndarray | None = None) -> None:
        """``matte``: (S, S) float32 0..1 person matte (engine.matte), warped with the head for
        :meth:`rgba`; None: RGB only."""
        self.avatar, self.s = avatar, settings
        self.rig = Rig(avatar, rig_settings)
        S = avatar.size_px
        ring = avatar.ring_outer[:, :2]
        x0, y0 = np.maximum(np.floor(ring.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(ring.max(0)).astype(int) + 3, S)
        self.warp = MeshWarp(self.rig.vertices[:, :2], (x0, y0, x1, y1),
                             WarpSettings(settings.grid_step_px, settings.inverse_iterations), active=self.rig.active)
        self.mouth = MouthPainter(avatar, self.rig, settings)
        self.eyelids = EyelidPainter(avatar, self.rig)
        self.head_mask = self.warp.full_mask((S, S))   # (S, S) bool: the only pixels that ever change
        self._ref = np.ascontiguousarray(avatar.image)
        self._ref_padded = pad_channels(self._ref)     # what the warp remaps fastest (kernels.warp)
        self._ref4 = None
        if matte is not None:
            a = np.clip(np.asarray(matte, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            if a.shape != (S, S):
                raise ConfigError(f"matte must be ({S}, {S}), got {a.shape}")
            self._ref4 = np.ascontiguousarray(np.dstack([avatar.image, a]))

    def _paint(self, frame: np.ndarray, d: np.ndarray) -> None:
        verts = self.rig.vertices[:, :2] + d
        if self.s.mouth_interior:
            self.mouth.paint(frame, verts)
        self.eyelids.paint(frame, verts)

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        d = self.rig.displacement(motion)
        frame = self.warp.warp(self._ref, d, padded=self._ref_padded)
        self._paint(frame, d)
        return frame

    def rgba(self, motion: np.ndarray) -> np.ndarray:
        """motion (C,) -> (S, S, 4) uint8 RGBA: the frame and the matte, warped together."""
        if self._ref4 is None:
            raise ConfigError("this renderer was made without a matte: Renderer(avatar, matte=...)")
        d = self.rig.displacement(motion)
        f4 = self.warp.warp(self._ref4, d)
        frame = np.ascontiguousarray(f4[..., :3])
        self._paint(frame, d)
        f4[..., :3] = frame
        return f4
