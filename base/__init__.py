"""The base layer: what every other layer of dainrt may use, and which uses none of them.

* `errors`: `DainrtError` (a mistake the user can fix) and `OptionError` (a bad value of a named
  option; the command line words it as a flag, the Python API as a parameter).
* `paths`: dainrt's cache folder.
* `files`: atomic file writing (whole file or nothing under the final name) and file digests.
* `images`: reading and writing still pictures (8/16-bit RGB).
* `metrics`: PSNR.
* `sizes`: picture sizes as users write them (`720p`, `1920x1080`).
* `times`: in-between times as users give them (`--factor 4`, `--times 0.25,0.5`).
"""

__version__ = "0.1.0"
