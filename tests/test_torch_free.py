"""The inference path (core, CLI, tile-classify) must run without importing torch or open_clip."""

import subprocess
import sys
import textwrap


def test_inference_path_never_imports_torch(tiny_bundle, tmp_path):
    from tests.utils.rasters import BLUE, RED, colour_blocks, write_geotiff

    scene = write_geotiff(tmp_path / "scene.tif", colour_blocks([[RED, BLUE]], 32))
    code = textwrap.dedent(f"""
        import sys
        import rsclip_geo, rsclip_geo.cli
        from rsclip_geo.cli import main
        from click.testing import CliRunner
        r = CliRunner().invoke(main, ["tile-classify", r"{scene}", "--labels", "red,blue", "--model",
                                      r"{tiny_bundle}", "--tile-size", "32", "-q", "-o", r"{tmp_path / 'o.gpkg'}"])
        assert r.exit_code == 0, r.output
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "timm", "transformers"))
        print("HEAVY:" + ",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout or out.stdout.strip().endswith("HEAVY:"), out.stdout


def test_python_m_rsclip_geo_is_the_command(tiny_bundle, tmp_path):
    """`python -m rsclip_geo` runs the CLI through a chosen interpreter (the rebuild script uses it)."""
    from tests.utils.rasters import BLUE, RED, colour_blocks, write_geotiff

    scene = write_geotiff(tmp_path / "scene.tif", colour_blocks([[RED, BLUE]], 32))
    out = subprocess.run([sys.executable, "-m", "rsclip_geo", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("rsclip-geo, version"), (out.stdout, out.stderr)
    out = subprocess.run([sys.executable, "-m", "rsclip_geo", "tile-classify", str(scene), "--labels", "red,blue",
                          "--model", str(tiny_bundle), "--tile-size", "32", "-q", "-o", str(tmp_path / "o.gpkg")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and (tmp_path / "o.gpkg").is_file(), out.stderr
    out = subprocess.run([sys.executable, "-m", "rsclip_geo", "search", str(scene), " ", "-o", "x.gpkg"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Usage: rsclip-geo search" in out.stderr, out.stderr
