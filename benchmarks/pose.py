"""Head-pose benchmark: extreme yaw / pitch / roll without tearing, folds or a moving background.

    python -m emote.benchmarks.pose [--size 512] [--out out/pose.json]

For skimage's astronaut and matplotlib's grace_hopper, renders the extreme poses (yaw +-15 deg,
pitch +-15 deg, roll +-10 deg and combinations), everything else at rest, and measures per pose:

* tearing, in the border band (inside ring O, outside ring H: where the head's motion fades out):
  ``grad_ratio_p999`` = 99.9th percentile of |Sobel gradient| of the frame's grey levels there,
  divided by the photo's; ``grad_over_max_px`` = band pixels whose gradient exceeds the photo's
  largest gradient in the band; ``stretch_max`` / ``squash_min`` = the largest / smallest singular
  value of the forward map's Jacobian on the band's triangles (a smear is a stretch well above 1);
  ``jac_jump_max`` = the largest jump of that Jacobian (spectral norm) across a band triangle's edge
  (a kink: straight lines bend there);
* folds: the forward map x -> x + F(x) is piecewise linear on the warp mesh, so its Jacobian is exact
  per triangle: ``jac_det_min`` = the smallest determinant (<= 0 is a fold), ``folded_triangles``
  = how many are <= 0;
* background: ``outside_max_abs`` = max |frame - photo| outside ring O (must be 0);
* the pose is real: the landmarker re-detects the frame; its facial transformation matrix relative
  to the photo's gives the measured yaw / pitch / roll (engine.motion's signs).

Writes the JSON (--out), prints a table and saves a grid of the frames next to it (pose.png).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

POSES: dict[str, tuple[float, float, float]] = {      # name -> (yaw, pitch, roll) degrees
    "rest": (0, 0, 0),
    "yaw+15": (15, 0, 0), "yaw-15": (-15, 0, 0),
    "pitch+15": (0, 15, 0), "pitch-15": (0, -15, 0),
    "roll+10": (0, 0, 10), "roll-10": (0, 0, -10),
    "y15p-15r10": (15, -15, 10), "y-15p15r-10": (-15, 15, -10),
    "y15p15r-10": (15, 15, -10), "y-15p-15r10": (-15, -15, 10),
}


def pose_motion(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """(C,) float32 motion at rest except the head angles (degrees)."""
    from emote.engine import motion as M

    m = M.rest()[0]
    m[M.idx("headYaw_deg", "headPitch_deg", "headRoll_deg")] = (yaw_deg, pitch_deg, roll_deg)
    return m


def border_band(avatar) -> np.ndarray:
    """(S, S) bool: inside ring O and outside ring H (the head's motion fades out here)."""
    inner = np.zeros(avatar.image.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.round(avatar.ring_head[:, :2]).astype(np.int32)], 1)
    return (avatar.head_mask() > 0) & (inner == 0)


def gradient_magnitude(rgb: np.ndarray) -> np.ndarray:
    """(S, S) float32 |Sobel gradient| of the grey levels of an (S, S, 3) uint8 image."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))


def source_map(renderer, d: np.ndarray) -> np.ndarray:
    """(S, S, 2) float32: where each frame pixel samples the photo (the renderer's backward map)."""
    S = renderer.avatar.size_px
    gx, gy = np.meshgrid(np.arange(S, dtype=np.float32), np.arange(S, dtype=np.float32))
    src = np.dstack([gx, gy])
    x0, y0, x1, y1 = renderer.warp.box
    src[y0:y1, x0:x1] += renderer.warp.backward_field(d)
    return src


def tearing(photo: np.ndarray, frame: np.ndarray, band: np.ndarray, src: np.ndarray | None = None,
            floor: float = 10.0) -> dict:
    """Gradient statistics of the frame vs the photo inside the band (bool (S, S)).

    grad_ratio_p999: 99.9th percentile of |grad| of the frame over the photo's, in the band;
    grad_over_max_px: band pixels above the photo's largest band gradient. Both are blind to a seam
    inside textured hair or next to the strong edges a band already holds, hence also
    seam_ratio_max: max over the band of |grad frame| / (|grad photo| at the pixel's source, max over
    5x5 px, + floor grey levels / px): a tear makes an edge where the source had none (ratio >> 1);
    a smooth warp only scales gradients by its stretch. src: (S, S, 2) source map (None: identity)."""
    g0, g1 = gradient_magnitude(photo), gradient_magnitude(frame)
    p0, p1 = float(np.percentile(g0[band], 99.9)), float(np.percentile(g1[band], 99.9))
    g0d = cv2.dilate(g0, np.ones((5, 5), np.uint8))
    if src is not None:
        g0d = cv2.remap(g0d, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return {"grad_ratio_p999": p1 / max(p0, 1e-6), "grad_over_max_px": int((g1[band] > g0[band].max()).sum()),
            "seam_ratio_max": float((g1[band] / (g0d[band] + floor)).max())}


def triangle_jacobians(renderer, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact Jacobians of the piecewise-linear forward map x -> x + F(x) of the warp mesh.

    d: (N, 2) vertex displacement, pixels. Returns (J (T, 2, 2), tri (T, 3) vertex indices,
    area0 (T,) reference areas in px^2) for every triangle of the renderer's MeshWarp."""
    w = renderer.warp
    tri = w.active[w.tri.simplices]
    v0 = renderer.rig.vertices[:, :2].astype(np.float64)
    v1 = v0 + d
    def edges(v):
        return np.stack([v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]]], -1)   # columns = edges
    E0, E1 = edges(v0), edges(v1)
    area0 = 0.5 * np.abs(np.linalg.det(E0))
    ok = area0 > 0.25
    J = np.full((len(tri), 2, 2), np.nan)
    J[ok] = E1[ok] @ np.linalg.inv(E0[ok])
    return J, tri, area0


def folds(renderer, d: np.ndarray) -> dict:
    """Fold, smear and kink measures of the forward map (see the module docstring); triangles under
    0.25 px^2 (closed lips) are left out."""
    J, tri, area0 = triangle_jacobians(renderer, d)
    ok = area0 > 0.25
    det = np.linalg.det(J[ok])
    in_band = ok & (tri >= renderer.rig.n_face).all(1)            # triangles made of ring points only
    sv = np.linalg.svd(J[in_band], compute_uv=False)
    nb = renderer.warp.tri.neighbors                               # (T, 3), -1 on the hull
    i = np.repeat(np.arange(len(tri)), 3)
    j = nb.ravel()
    pair = (j >= 0) & ok[i] & ok[np.maximum(j, 0)] & (in_band[i] | in_band[np.maximum(j, 0)])
    jump = np.linalg.norm(J[i[pair]] - J[j[pair]], ord=2, axis=(1, 2))
    return {"jac_det_min": float(det.min()), "folded_triangles": int((det <= 0).sum()),
            "stretch_max": float(sv[:, 0].max()), "squash_min": float(sv[:, 1].min()),
            "jac_jump_max": float(jump.max()) if jump.size else 0.0}


def _euler_from_rotation(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of R = Rroll @ Rpitch @ Ryaw as in engine.rig (x right, y down, z away)."""
    pitch = np.degrees(np.arcsin(np.clip(R[2, 1], -1, 1)))
    yaw = np.degrees(np.arctan2(R[2, 0], R[2, 2]))
    roll = np.degrees(np.arctan2(-R[0, 1], R[1, 1]))
    return float(yaw), float(pitch), float(roll)


def _rotation(pose: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(pose, np.float64)[:3, :3])   # drop any scale
    return u @ vt


def measured_pose(photo_pose: np.ndarray, frame_pose: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of the frame's head relative to the photo's, from the landmarker's
    facial transformation matrices (camera space: x right, y up, z towards the viewer)."""
    rel = _rotation(frame_pose) @ _rotation(photo_pose).T
    C = np.diag([1.0, -1.0, -1.0])                       # -> the rig's axes: y down, z away from the viewer
    return _euler_from_rotation(C @ rel @ C)


def measure_pose(renderer, name: str, angles: tuple[float, float, float], landmarker, photo_face) -> tuple[dict, np.ndarray]:
    """All metrics of one pose -> (dict, frame (S, S, 3) uint8)."""
    av = renderer.avatar
    m = pose_motion(*angles)
    frame = renderer(m)
    d = renderer.rig.displacement(m)
    band = border_band(av)
    outside = av.head_mask() == 0
    diff = np.abs(frame.astype(np.int16) - av.image.astype(np.int16))
    row = {"pose": name, "yaw_deg": angles[0], "pitch_deg": angles[1], "roll_deg": angles[2],
           **tearing(av.image, frame, band, source_map(renderer, d)), **folds(renderer, d),
           "outside_max_abs": int(diff[outside].max()) if outside.any() else 0}
    if landmarker is not None:
        faces = landmarker.detect(frame)
        if faces:
            y, p, r = measured_pose(photo_face.pose, faces[0].pose)
            row.update(measured_yaw_deg=y, measured_pitch_deg=p, measured_roll_deg=r)
        else:
            row.update(measured_yaw_deg=None, measured_pitch_deg=None, measured_roll_deg=None)
    return row, frame


def portraits() -> dict[str, np.ndarray]:
    import matplotlib.cbook as cbook
    from skimage import data

    hopper = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"astronaut": data.astronaut(), "grace_hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)}


def run(size_px: int, cache_dir: str, poses: dict[str, tuple[float, float, float]] = POSES,
        landmarks: bool = True) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """Rows of metrics (one per portrait and pose) and the frames per portrait."""
    from emote.engine import landmarks as L
    from emote.engine.avatar import AvatarSettings, prepare
    from emote.engine.renderer import Renderer

    lm = L.shared_landmarker() if landmarks else None
    rows, frames = [], {}
    for pname, img in portraits().items():
        r = Renderer(prepare(img, AvatarSettings(size_px=size_px), cache_dir=cache_dir))
        photo_face = lm.detect_one(r.avatar.image) if lm is not None else None
        frames[pname] = []
        for name, ang in poses.items():
            row, frame = measure_pose(r, name, ang, lm, photo_face)
            rows.append({"portrait": pname, **row})
            frames[pname].append(frame)
    return rows, frames


def _fmt(v) -> str:
    return "   -" if v is None else f"{v:6.1f}"


def print_table(rows: list[dict]) -> None:
    print(f"{'portrait':>12} {'pose':>12} {'grad p99.9':>10} {'>max px':>7} {'seam':>5} {'det min':>7} {'folds':>5} "
          f"{'stretch':>7} {'squash':>6} {'jump':>5} {'outside':>7} {'yaw':>6} {'pitch':>6} {'roll':>6}")
    for r in rows:
        print(f"{r['portrait']:>12} {r['pose']:>12} {r['grad_ratio_p999']:>10.3f} {r['grad_over_max_px']:>7d} {r['seam_ratio_max']:>5.2f} "
              f"{r['jac_det_min']:>7.3f} {r['folded_triangles']:>5d} {r['stretch_max']:>7.2f} {r['squash_min']:>6.2f} {r['jac_jump_max']:>5.2f} {r['outside_max_abs']:>7d} "
              f"{_fmt(r.get('measured_yaw_deg'))} {_fmt(r.get('measured_pitch_deg'))} {_fmt(r.get('measured_roll_deg'))}")


def save_grid(frames: dict[str, list[np.ndarray]], names: list[str], path: Path, tile_px: int = 320) -> None:
    """One row per portrait, one column per pose, labelled; PNG."""
    rows = []
    for pname, fs in frames.items():
        tiles = []
        for name, f in zip(names, fs):
            t = cv2.resize(f, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
            t = cv2.cvtColor(t, cv2.COLOR_RGB2BGR)
            cv2.putText(t, name, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2, cv2.LINE_AA)
            tiles.append(t)
        rows.append(np.hstack(tiles))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="frame size in pixels")
    ap.add_argument("--out", default="out/pose.json", help="JSON file; the grid goes next to it as pose.png")
    ap.add_argument("--tile", type=int, default=320, help="tile size of the PNG grid, pixels")
    args = ap.parse_args(argv)
    rows, frames = run(args.size, tempfile.mkdtemp(prefix="emote-pose-"))
    print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size_px": args.size, "rows": rows}, indent=2))
    save_grid(frames, list(POSES), out.with_name("pose.png"), args.tile)
    print(f"wrote {out} and {out.with_name('pose.png')}")
    return rows


if __name__ == "__main__":
    main()
