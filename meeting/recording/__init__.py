"""Recording meetings: per-track files while a meeting runs, one composed MP4 after.

The path of a recording, module by module:

- ``service``: starts and stops a meeting's recording (the session calls it), keeps the
  disk floor, and hands stopped recordings to the composer; ``model``: the rows.
- ``capture``: while recording, the SFU's tap feeds a writer thread that turns RTP back
  into frames (``depacketize``) and writes one WebM file per track.
- ``trackfile``: the recording folder's format (manifest lines, file names, level bins),
  written by ``capture`` and read by ``compose``; nothing else knows it.
- ``jobs``: the compose queue, in worker processes (``worker``: their set-up and the
  folder lock), with retries; ``failures``: how failures are told apart and logged.
- ``compose``: one pass over the time line into a verified MP4, from ``sources`` (decoded
  tracks), ``mixer`` (audio), ``canvas`` and ``layout`` (pictures) and ``timeline`` (who
  spoke when).
- ``retention``: deletes expired recordings and reminds channels before.
"""
