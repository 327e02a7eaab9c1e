# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo, in headless Blender (PyPI ``bpy``): ``.venv-bpy50/bin/python tools/demo_blender.py
[OUT]`` (``bash tools/demo.sh`` sets everything up and runs it).

It installs the extension from its zip, creates the built-in demo head, puts the shipped
sentence in the Video Sequencer, generates two takes (Happy strong, Sad mild) with the built-in
demo model through the add-on's own operators and worker, bakes the Happy take to the NLA,
saves ``demo.blend``, renders a preview video of each take with the sentence as its sound, four
stills (mouth closed, open vowel, a blink's peak, the gaze turned aside) and writes the takes'
curves (``takes.npz``: expression, jaw and the living layers) for the plot. The takes carry the
living face (blinks, gaze, head motion); where a take's first draw holds no full blink (a short
line may not), the demo picks the first *Variation* that does.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "out" / "demo").resolve()
USER = OUT / ".blender-user"
os.environ["BLENDER_USER_RESOURCES"] = str(USER)  # before bpy reads its user folders

import bpy  # noqa: E402, I001  (bpy first: it makes addon_utils importable)
import addon_utils  # noqa: E402, I001
import numpy as np  # noqa: E402, I001

sys.path.insert(0, str(ROOT / "tools"))
from extension_install import install_extension  # noqa: E402

REPO = "emote_demo"
MODULE = f"bl_ext.{REPO}.emote_lipsync"
SENTENCE = ROOT / "server" / "demo" / "sentence.wav"
TAKES = (("Happy", "2"), ("Sad", "0"))  # emotion, intensity (0 mild … 2 strong)
SIZE = 320


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def empty_scene() -> bpy.types.Scene:
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    return scene


def add_sentence(scene: bpy.types.Scene) -> object:
    strip = sys.modules[MODULE].compat.new_sound_strip(scene, "sentence", str(SENTENCE), 1, 1)
    strip.select = True
    scene.sequence_editor.active_strip = strip
    strip.sound.pack()  # demo.blend stays self-contained
    scene.frame_start, scene.frame_end = strip.frame_final_start, strip.frame_final_end - 1
    return strip


def paint(mesh_object: bpy.types.Object, head_module: object) -> None:
    """Skin, a dark mouth cavity, white eyeballs with dark pupils (a colour attribute)."""
    head = head_module.build_demo_head()
    mesh = mesh_object.data
    colours = np.tile([0.80, 0.62, 0.52, 1.0], (len(mesh.vertices), 1))
    colours[head.groups["mouth_cavity"]] = [0.25, 0.04, 0.05, 1.0]
    for side in ("left_eye", "right_eye"):
        eye = head.groups[side]
        colours[eye] = [0.92, 0.92, 0.90, 1.0]
        positions = head.flame.v_template[eye]
        front = positions[:, 2] > positions[:, 2].max() - 0.004
        colours[eye[front]] = [0.05, 0.04, 0.04, 1.0]
    lips = head.groups["lips"]
    colours[lips] = [0.72, 0.42, 0.40, 1.0]
    attribute = mesh.color_attributes.new("demo_colour", "FLOAT_COLOR", "POINT")
    attribute.data.foreach_set("color", colours.ravel())
    mesh.color_attributes.active_color = attribute
    for polygon in mesh.polygons:
        polygon.use_smooth = True


def camera_and_look(scene: bpy.types.Scene) -> None:
    data = bpy.data.cameras.new("preview")
    data.type = "ORTHO"
    data.ortho_scale = 0.24
    camera = bpy.data.objects.new("preview", data)
    scene.collection.objects.link(camera)
    # FLAME's +z (the face's forward) is Blender's -y once the rig stands z-up.
    camera.location = (0.0, -1.0, -0.015)
    camera.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "VERTEX"
    shading.show_cavity = True
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100


def generate(scene: bpy.types.Scene, emotion: str, intensity: str) -> str:
    settings = scene.emote
    settings.emotion = str(sys.modules[MODULE].properties.EMOTIONS.index(emotion))
    settings.intensity = intensity
    started = time.perf_counter()
    result = bpy.ops.emote.generate(wait=True)
    if result != {"FINISHED"}:
        raise SystemExit(f"Generate failed ({result}); see the messages above.")
    log(f"take {emotion}: {time.perf_counter() - started:.2f} s")
    return emotion


def living(take: object, frames: int) -> object:
    """The take's living layers (blinks, gaze, head motion) as the add-on keys them."""
    import json as json_module

    addon = sys.modules[MODULE]
    stored = json_module.loads(take.shape_action["emote_living"])
    controls = addon.motion.LivingControls(seed=take.variation)
    return addon.motion.living_layers(stored, controls, frames)


def render_video(scene: bpy.types.Scene, path: Path) -> None:
    render = scene.render
    if hasattr(render.image_settings, "media_type"):  # Blender 5.0
        render.image_settings.media_type = "VIDEO"
    render.image_settings.file_format = "FFMPEG"
    render.ffmpeg.format = "MPEG4"
    render.ffmpeg.codec = "H264"
    render.ffmpeg.constant_rate_factor = "MEDIUM"
    render.ffmpeg.audio_codec = "AAC"
    render.ffmpeg.audio_channels = "MONO"
    render.filepath = str(path)
    started = time.perf_counter()
    bpy.ops.render.render(animation=True)
    frames = scene.frame_end - scene.frame_start + 1
    log(f"rendered {path.name}: {frames} frames in {time.perf_counter() - started:.1f} s")


def render_still(scene: bpy.types.Scene, frame: int, path: Path) -> None:
    scene.frame_set(frame)
    if hasattr(scene.render.image_settings, "media_type"):  # Blender 5.0
        scene.render.image_settings.media_type = "IMAGE"
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def main() -> None:
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    install_extension(USER, REPO)
    addon_utils.enable(MODULE, default_set=True, handle_error=None)
    try:
        run()
    finally:
        sys.modules[MODULE].generation.stop_worker()
        addon_utils.disable(MODULE, default_set=True)
    log(f"done in {time.perf_counter() - started:.1f} s")


def run() -> None:
    prefs = bpy.context.preferences.addons[MODULE].preferences
    # The defaults, said explicitly: the worker is Blender's own Python (ONNX Runtime from the
    # extension's wheels), the built-in demo model, the built-in demo head.
    prefs.python = ""
    prefs.model_kind, prefs.flame_path = "DEMO", ""
    prefs.device, prefs.idle_minutes = "cpu", 0
    scene = empty_scene()
    strip = add_sentence(scene)
    if bpy.ops.emote.create_flame_head() != {"FINISHED"}:
        raise SystemExit("Create FLAME Head failed.")
    mesh = bpy.context.view_layer.objects.active
    paint(mesh, importlib.import_module(MODULE + ".server.demo.head"))
    camera_and_look(scene)
    scene.emote.rig = mesh
    scene.emote.strip = strip.name
    scene.emote.style = "0"  # the demo model's first style: moderate-neutral-brisk
    log("generating (the first take starts the worker and loads the demo model)")
    curves = {}
    addon = sys.modules[MODULE]
    for emotion, intensity in TAKES:
        generate(scene, emotion, intensity)
        take = mesh.emote_takes[mesh.emote_active_take]
        expression, jaw, _ = addon.keys.load_raw(take.shape_action)
        layers = living(take, len(expression))
        if layers.eyelids.max() < 0.95:  # a short line may hold no blink: show one that does
            for variation in range(1, 20):
                take.variation = variation
                layers = living(take, len(expression))
                if layers.eyelids.max() >= 0.95:
                    log(f"{take.name}: variation {variation} (the first draw with a blink)")
                    break
        curves[f"{emotion}_expression"], curves[f"{emotion}_jaw"] = expression, jaw
        curves[f"{emotion}_eyelids"], curves[f"{emotion}_neck"] = layers.eyelids, layers.neck
        curves[f"{emotion}_eyes"] = layers.eyes
        curves[f"{emotion}_name"] = np.array(take.name)
    np.savez(OUT / "takes.npz", **curves)
    names = [t.name for t in mesh.emote_takes]
    log(f"takes: {', '.join(names)}")

    # Preview of each take (the active take plays), then bake the first one.
    jaw = curves[f"{TAKES[0][0]}_jaw"][:, 0]
    for index, (emotion, _) in enumerate(TAKES):
        mesh.emote_active_take = index
        render_video(scene, OUT / f"preview_{emotion.lower()}.mp4")
    mesh.emote_active_take = 0
    speech = np.where(jaw > 0.25 * jaw.max())[0]
    open_frame = int(np.argmax(jaw))
    closed = speech[0] + int(np.argmin(jaw[speech[0]: speech[-1]]))
    first = strip.frame_final_start
    render_still(scene, first + closed, OUT / "still_closed.png")
    render_still(scene, first + open_frame, OUT / "still_open.png")
    # The living face: a blink's peak, and the gaze furthest from straight ahead.
    eyelids = curves[f"{TAKES[0][0]}_eyelids"]
    blink = int(np.argmax(eyelids))
    flame = importlib.import_module(MODULE + ".server.flame")
    gaze = flame.axis_angle_to_matrix(curves[f"{TAKES[0][0]}_eyes"][:, 0])
    aside = int(np.argmax(np.degrees(np.arccos(np.clip(gaze[:, 2, 2], -1, 1)))))
    render_still(scene, first + blink, OUT / "still_blink.png")
    render_still(scene, first + aside, OUT / "still_gaze.png")
    if bpy.ops.emote.bake() != {"FINISHED"}:
        raise SystemExit("Bake failed.")
    bpy.ops.wm.save_as_mainfile(filepath=str(OUT / "demo.blend"))
    (OUT / "demo.json").write_text(json.dumps({
        "takes": names, "baked": names[0], "frames": [scene.frame_start, scene.frame_end],
        "still_frames": {"closed": int(first + closed), "open": int(first + open_frame),
                         "blink": int(first + blink), "gaze": int(first + aside)}},
        indent=1))


if __name__ == "__main__":
    main()
