"""rsclip-geo for QGIS: search and label imagery with words.

``classFactory`` first checks that the runtime packages are installed (QGIS's own, or
the plugin's dependency folder) -- from their metadata, importing nothing; when
something is missing it returns a small plugin that offers the one-click installer.
The packages are only ever imported by the worker process (see runs.py for why).
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from . import deps

    problems = deps.check(folder=deps.deps_dir())
    core = deps.core_missing()
    if problems or core:
        from .installer_plugin import InstallerPlugin

        return InstallerPlugin(iface, problems, core)
    from .plugin import RsclipGeoPlugin

    return RsclipGeoPlugin(iface)
